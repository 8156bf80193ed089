"""A byte store in memory: the third backend of the contract suite, and a registry for
tests and models that need no registry behaviour (like httpx's ``MockTransport``).

It behaves like an object store (S3): keys are flat, a "folder" is only a key prefix,
listings come in pages of ``page_size`` keys in key order, every object has an ETag
(the MD5 of its bytes, as S3 gives for a single-part upload) and a modification time
in whole seconds. Requests are counted by kind as S3 counts them, so that a test or a
model can say how many LIST, GET, HEAD and DELETE requests a run made.

Writing (``put``, ``remove``) is for the test that builds the registry; the store's
own ``delete_many`` is what regcleaner calls. ``clock`` gives the mtime of new writes
(a test moves it to make a push visibly later).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, TypeVar

from regcleaner.concurrency import StopScope
from regcleaner.config import StorageSettings
from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.storage import backends
from regcleaner.storage.base import Blob, ByteStore, Entry, FileInfo, Leaf, RequestStats

T = TypeVar("T")


class StoredObject(NamedTuple):
    """One object: bytes, whole-second mtime and ETag."""

    data: bytes
    mtime: float
    etag: str


class MemoryStore:
    """Objects in a dict, keys kept sorted for listings."""

    has_directories = False
    listing_concurrency = 4
    page_size = 1000
    requests_in_flight = 8
    stop: StopScope | None = None  # no retries of its own to end at a stop

    def __init__(
        self, *, clock: Callable[[], float] = time.time, name: str = "memory", etags: bool = True
    ) -> None:
        self.etags = etags
        """False: objects carry no ETag, as some S3-compatible stores answer."""
        self.objects: dict[str, StoredObject] = {}
        self._sorted: list[str] = []
        self.clock = clock
        self.name = name
        self.stats = RequestStats()
        self._removed = 0  # keys removed but still in _sorted
        self.listed_keys = 0
        self.cpu_s = 0.0
        """CPU seconds spent answering listings (``_timed_pages``), ``read_many`` and
        ``delete_many``: what S3 would spend (a model subtracts it from a run's CPU)."""
        """Keys and folders all listings returned (their client-side cost in a model)."""
        self.failing: set[str] = set()
        """Keys whose GET and HEAD fail with a StorageError (an unreadable object; it
        is still listed, as S3 lists an object it refuses to serve)."""

    # -- building the registry (tests) ------------------------------------------------

    def put(self, key: str, data: bytes, *, mtime: float | None = None) -> None:
        """Write ``key`` (a new mtime and ETag, as a PUT gives)."""
        if key not in self.objects:
            index = bisect.bisect_left(self._sorted, key)
            if index == len(self._sorted) or self._sorted[index] != key:  # not a removed one
                self._sorted.insert(index, key)
        stamp = float(int(self.clock() if mtime is None else mtime))
        self.objects[key] = StoredObject(data, stamp, self._etag(data))

    def _etag(self, data: bytes) -> str:
        if not self.etags:
            return ""
        return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """``put`` for each (key, bytes)."""
        for key, data in items:
            self.put(key, data)

    def put_unsorted(self, key: str, data: bytes, *, mtime: float) -> None:
        """``put`` for loading millions of keys: the listings are wrong until
        ``sort_keys`` (``put`` keeps the keys sorted one insertion at a time, which
        takes quadratic time over millions of keys)."""
        self.objects[key] = StoredObject(data, float(int(mtime)), self._etag(data))

    def sort_keys(self) -> None:
        """After ``put_unsorted``: the keys in order for listings."""
        self._sorted[:] = sorted(self.objects)
        self._removed = 0

    def remove(self, key: str) -> None:
        """Delete ``key`` if it is there (not counted: this is the test's hand). Its
        place in the sorted keys goes at the next compaction (listings skip it): taking
        it out at once costs time in proportion to the store, for every key."""
        if self.objects.pop(key, None) is not None:
            self._removed += 1
            if self._removed > 1000 and 2 * self._removed > len(self._sorted):
                self._sorted[:] = [k for k in self._sorted if k in self.objects]
                self._removed = 0

    def reopen(self) -> MemoryStore:
        """Another store over the same objects, with its own request counts (as a
        second run opens the same bucket)."""
        other = MemoryStore(clock=self.clock, name=self.name, etags=self.etags)
        other.objects = self.objects
        other._sorted = self._sorted
        other.failing = self.failing
        return other

    def stored_keys(self) -> set[str]:
        """Every key stored."""
        return set(self.objects)

    # -- the byte-store protocol -----------------------------------------------------

    def describe(self) -> str:
        return f"memory store {self.name}"

    async def check(self) -> None:
        if self.name == "":
            raise StorageSetupError("memory store without a name")

    def _under(self, prefix: str) -> Iterable[str]:
        """Keys below ``prefix`` (a folder: ``""`` or ending in ``/``), in order."""
        start = bisect.bisect_left(self._sorted, prefix)
        objects = self.objects
        for index in range(start, len(self._sorted)):
            key = self._sorted[index]
            if not key.startswith(prefix):
                return
            if key in objects:  # not removed
                yield key

    @staticmethod
    def _folder(prefix: str) -> str:
        return prefix.rstrip("/") + "/" if prefix.strip("/") else ""

    def _paged(self, items: Iterable[T]) -> Iterator[list[T]]:
        """Pages of ``page_size`` items, each counted as one LIST request (an empty
        listing still costs one)."""
        page: list[T] = []
        counted = False
        for item in items:
            page.append(item)
            if len(page) == self.page_size:
                self.stats.list += 1
                self.listed_keys += len(page)
                counted = True
                yield page
                page = []
        if page or not counted:
            self.stats.list += 1
            self.listed_keys += len(page)
            yield page

    def _timed_pages(self, pages: Iterator[T]) -> Iterator[T]:
        """``pages``, the CPU spent making each added to ``cpu_s`` (what a server and
        the client's parsing would spend: a model subtracts it from the run's CPU)."""
        while True:
            started = time.process_time()
            page = next(pages, None)
            self.cpu_s += time.process_time() - started
            if page is None:
                return
            yield page

    def _rolling(self, base: str, delimiter: str, index: int) -> Iterator[tuple[str, bool]]:
        """Keys below folder ``base`` from ``index`` of the sorted keys, in order; a key
        holding ``delimiter`` after ``base`` as the part up to it, once (True: rolled
        up, as S3 rolls up common prefixes), past whose keys the listing jumps."""
        keys, objects = self._sorted, self.objects
        while index < len(keys):
            key = keys[index]
            if not key.startswith(base):
                return
            if key not in objects:  # removed
                index += 1
                continue
            at = key.find(delimiter, len(base))
            if at < 0:
                yield key, False
                index += 1
                continue
            rolled = key[: at + len(delimiter)]
            yield rolled, True
            # past every key that starts with ``rolled``
            index = bisect.bisect_left(keys, rolled[:-1] + chr(ord(rolled[-1]) + 1), index)

    def _children(self, base: str) -> Iterator[str]:
        """Names in folder ``base``: a file's name, or a folder's name and ``/`` once."""
        start = bisect.bisect_left(self._sorted, base)
        for key, _ in self._rolling(base, "/", start):
            yield key[len(base) :]

    async def list_children(self, prefix: str) -> AsyncGenerator[list[Entry], None]:
        base = self._folder(prefix)

        def entries() -> Iterator[list[Entry]]:
            for names in self._paged(self._children(base)):
                found: list[Entry] = []
                for name in names:
                    if name.endswith("/"):
                        if name[:-1]:
                            found.append(Entry(name[:-1], "dir"))
                    elif name:
                        stored = self.objects[base + name]
                        found.append(Entry(name, "file", stored.mtime, len(stored.data)))
                yield found

        for page in self._timed_pages(entries()):
            if page:
                yield page

    async def list_leaves(self, prefix: str, leaf: str) -> AsyncGenerator[list[Leaf], None]:
        base = self._folder(prefix)
        tail = "/" + leaf

        def leaves() -> Iterator[list[Leaf]]:
            for keys in self._paged(self._under(base)):
                found: list[Leaf] = []
                for key in keys:
                    relative = key[len(base) :]
                    if relative.endswith(tail):
                        name = relative[: -len(tail)]
                        if name and "/" not in name:
                            stored = self.objects[key]
                            found.append(
                                Leaf(name, stored.mtime, len(stored.data), True, stored.etag)
                            )
                yield found

        for page in self._timed_pages(leaves()):
            if page:
                yield page

    def _file(self, key: str, base: str) -> FileInfo:
        """The stored ``key`` as a listing shows it, relative to folder ``base``."""
        stored = self.objects[key]
        return FileInfo(key[len(base) :], stored.mtime, len(stored.data), True, stored.etag)

    async def walk(self, prefix: str) -> AsyncGenerator[list[FileInfo], None]:
        base = self._folder(prefix)

        def files() -> Iterator[list[FileInfo]]:
            for keys in self._paged(self._under(base)):
                yield [self._file(key, base) for key in keys]

        for page in self._timed_pages(files()):
            if page:
                yield page

    async def walk_rolling_up(
        self, prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        base = self._folder(prefix)

        def entries() -> Iterator[tuple[str, bool]]:
            keys = self._sorted
            start = (
                bisect.bisect_right(keys, base + start_after)
                if start_after
                else bisect.bisect_left(keys, base)
            )
            return self._rolling(base, delimiter, start)

        def pages() -> Iterator[tuple[list[FileInfo], list[str]]]:
            for found in self._paged(entries()):
                files = [self._file(key, base) for key, is_rolled in found if not is_rolled]
                rolled = [key[len(base) :] for key, is_rolled in found if is_rolled]
                yield files, rolled

        for page in self._timed_pages(pages()):
            if page[0] or page[1]:
                yield page

    async def read(self, key: str, cap: int) -> Blob | None:
        self.stats.get += 1
        if key in self.failing:
            raise StorageError(f"reading {key}: memory store told to fail")
        found = self.objects.get(key)
        if found is None:
            return None
        return Blob(found.data[: cap + 1], found.mtime, found.etag)

    async def read_many(self, keys: Sequence[str], cap: int) -> list[Blob | StorageError | None]:
        started = time.process_time()
        results: list[Blob | StorageError | None] = []
        for key in keys:
            try:
                results.append(await self.read(key, cap))
            except StorageError as exc:
                results.append(exc)
        self.cpu_s += time.process_time() - started
        return results

    async def stat(self, key: str) -> FileInfo | None:
        self.stats.head += 1
        if key in self.failing:
            raise StorageError(f"checking {key}: memory store told to fail")
        found = self.objects.get(key)
        if found is None:
            return None
        return FileInfo(key, found.mtime, len(found.data), True, found.etag)

    async def stat_many(self, keys: Sequence[str]) -> list[FileInfo | None]:
        return [await self.stat(key) for key in keys]

    async def delete_many(
        self, keys: Sequence[str], *, directories: Sequence[str] = ()
    ) -> list[str | None]:
        del directories  # no folders in an object store
        started = time.process_time()
        unique = list(dict.fromkeys(keys))
        self.stats.delete += (len(unique) + self.page_size - 1) // self.page_size
        for key in unique:
            self.remove(key)
            self.stats.keys_deleted += 1  # a missing key is gone too, as S3 answers
        self.cpu_s += time.process_time() - started
        return [None for _ in keys]

    async def aclose(self) -> None:
        return None


@contextlib.contextmanager
def registered(store: MemoryStore, name: str = "memory") -> Iterator[MemoryStore]:
    """``store`` as the storage backend ``name`` (``--storage memory``) while the block
    lasts; each run opens it anew (``reopen``: its own request counts), as a bucket."""

    def reopened(settings: StorageSettings) -> ByteStore:
        del settings
        return store.reopen()

    backends.register(backends.Backend(name, reopened))
    try:
        yield store
    finally:
        backends._BACKENDS.pop(name)
