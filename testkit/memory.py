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
import hashlib
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import NamedTuple

from regcleaner.concurrency import StopScope
from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.storage.base import Blob, Entry, FileInfo, Leaf, RequestStats


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

    def __init__(self, *, clock: Callable[[], float] = time.time, name: str = "memory") -> None:
        self.objects: dict[str, StoredObject] = {}
        self._sorted: list[str] = []
        self.clock = clock
        self.name = name
        self.stats = RequestStats()
        self.failing: set[str] = set()
        """Keys whose GET and HEAD fail with a StorageError (an unreadable object; it
        is still listed, as S3 lists an object it refuses to serve)."""

    # -- building the registry (tests) ------------------------------------------------

    def put(self, key: str, data: bytes, *, mtime: float | None = None) -> None:
        """Write ``key`` (a new mtime and ETag, as a PUT gives)."""
        if key not in self.objects:
            bisect.insort(self._sorted, key)
        stamp = float(int(self.clock() if mtime is None else mtime))
        self.objects[key] = StoredObject(
            data, stamp, '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        )

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """``put`` for each (key, bytes)."""
        for key, data in items:
            self.put(key, data)

    def remove(self, key: str) -> None:
        """Delete ``key`` if it is there (not counted: this is the test's hand)."""
        if self.objects.pop(key, None) is not None:
            del self._sorted[bisect.bisect_left(self._sorted, key)]

    def reopen(self) -> MemoryStore:
        """Another store over the same objects, with its own request counts (as a
        second run opens the same bucket)."""
        other = MemoryStore(clock=self.clock, name=self.name)
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
        for index in range(start, len(self._sorted)):
            key = self._sorted[index]
            if not key.startswith(prefix):
                return
            yield key

    @staticmethod
    def _folder(prefix: str) -> str:
        return prefix.rstrip("/") + "/" if prefix.strip("/") else ""

    async def _paged(self, items: Iterable[str]) -> AsyncGenerator[list[str], None]:
        """Pages of ``page_size`` items, each counted as one LIST request (an empty
        listing still costs one)."""
        page: list[str] = []
        counted = False
        for item in items:
            page.append(item)
            if len(page) == self.page_size:
                self.stats.list += 1
                counted = True
                yield page
                page = []
        if page or not counted:
            self.stats.list += 1
            yield page

    async def list_children(self, prefix: str) -> AsyncGenerator[list[Entry], None]:
        base = self._folder(prefix)

        def children() -> Iterable[str]:
            last = ""
            for key in self._under(base):
                rest = key[len(base) :]
                head, slash, _ = rest.partition("/")
                if slash:
                    if head != last:  # one common prefix, as S3 rolls them up
                        last = head
                        yield head + "/"
                else:
                    yield rest

        async for names in self._paged(children()):
            entries: list[Entry] = []
            for name in names:
                if name.endswith("/"):
                    if name[:-1]:
                        entries.append(Entry(name[:-1], "dir"))
                elif name:
                    found = self.objects[base + name]
                    entries.append(Entry(name, "file", found.mtime, len(found.data)))
            if entries:
                yield entries

    async def list_leaves(self, prefix: str, leaf: str) -> AsyncGenerator[list[Leaf], None]:
        base = self._folder(prefix)
        tail = "/" + leaf
        async for keys in self._paged(self._under(base)):
            leaves: list[Leaf] = []
            for key in keys:
                relative = key[len(base) :]
                if relative.endswith(tail):
                    name = relative[: -len(tail)]
                    if name and "/" not in name:
                        found = self.objects[key]
                        leaves.append(Leaf(name, found.mtime, len(found.data), True, found.etag))
            if leaves:
                yield leaves

    async def walk(self, prefix: str) -> AsyncGenerator[list[FileInfo], None]:
        base = self._folder(prefix)
        async for keys in self._paged(self._under(base)):
            files = [
                FileInfo(key[len(base) :], obj.mtime, len(obj.data), True, obj.etag)
                for key in keys
                for obj in (self.objects[key],)
            ]
            if files:
                yield files

    async def read(self, key: str, cap: int) -> Blob | None:
        self.stats.get += 1
        if key in self.failing:
            raise StorageError(f"reading {key}: memory store told to fail")
        found = self.objects.get(key)
        if found is None:
            return None
        return Blob(found.data[: cap + 1], found.mtime, found.etag)

    async def read_many(self, keys: Sequence[str], cap: int) -> list[Blob | StorageError | None]:
        results: list[Blob | StorageError | None] = []
        for key in keys:
            try:
                results.append(await self.read(key, cap))
            except StorageError as exc:
                results.append(exc)
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
        unique = list(dict.fromkeys(keys))
        self.stats.delete += (len(unique) + self.page_size - 1) // self.page_size
        for key in unique:
            self.remove(key)
            self.stats.keys_deleted += 1  # a missing key is gone too, as S3 answers
        return [None for _ in keys]

    async def aclose(self) -> None:
        return None
