"""The byte-store protocol: keys and bytes, nothing about registries.

A key is a ``/``-separated path relative to the store's root (the registry's
``rootdirectory``). Two backends implement it, a local directory and an S3 bucket;
``tests/contract/test_byte_store.py`` says when a new one is right (``testkit.memory``
is a third, in memory). The registry's
meaning (repositories, revisions, tags, blobs) lives in ``regcleaner.view`` only.

Listings stream in pages (lists), so a caller pays one await per page, not per key.
The values on hot paths (one per key) are named tuples: a frozen dataclass costs
several times more to build. Every failure other than "not there" is a
``StorageError`` naming the key.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from regcleaner.concurrency import StopScope
from regcleaner.errors import StorageError

EntryKind = Literal["file", "dir", "other"]


class Entry(NamedTuple):
    """One child of a listed prefix."""

    name: str
    kind: EntryKind
    """``other`` is a symbolic link or special file (only on a disk). Stores never
    follow links; the registry's disk driver does, so the view treats one as doubt."""
    mtime: float | None = None
    """Seconds since the epoch; None for a directory on a store without directories."""
    size: int | None = None


class FileInfo(NamedTuple):
    """A file (object) found by a walk or a stat: its key relative to the walked prefix
    (or the full key, for ``stat``), modification time and size."""

    key: str
    mtime: float
    size: int
    regular: bool = True
    """False for a symbolic link or special file (only on a disk): not followed."""
    etag: str | None = None
    """The object's entity tag where the store has one (S3's ETag, from a listing or a
    HEAD): a validator that changes when the bytes do. None on a disk."""


class Leaf(NamedTuple):
    """``<name>/<leaf>`` found under a prefix by ``list_leaves``."""

    name: str
    mtime: float
    size: int
    regular: bool = True
    """False when ``<name>`` or ``<name>/<leaf>`` is a symbolic link or special file
    (only on a disk): not followed."""
    etag: str | None = None
    """As ``FileInfo.etag``."""


class Blob(NamedTuple):
    """The bytes of a key (at most the cap + 1, so that "too large" can be seen) and
    its modification time."""

    data: bytes
    mtime: float
    etag: str | None = None
    """As ``FileInfo.etag``: the validator of exactly these bytes (same response)."""


@dataclass(slots=True)
class RequestStats:
    """Requests made to the store, by kind (S3 counts; a disk counts system calls it
    batches as one request per call)."""

    list: int = 0
    get: int = 0
    head: int = 0
    delete: int = 0
    """Delete requests (S3 DeleteObjects carries up to 1,000 keys)."""
    keys_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        """For the report."""
        return {
            "list": self.list,
            "get": self.get,
            "head": self.head,
            "delete": self.delete,
            "keys_deleted": self.keys_deleted,
        }


DEFAULT_PAGE_SIZE = 1000
"""Keys a listing page holds when a store does not say (S3's ListObjectsV2 maximum)."""
DEFAULT_REQUESTS_IN_FLIGHT = 8
"""Useful concurrent requests when a store does not say."""


def page_size(store: object) -> int:
    """How many keys one listing page of ``store`` holds (its ``page_size``): a listing
    of more keys than this costs more than one request."""
    value = getattr(store, "page_size", DEFAULT_PAGE_SIZE)
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_PAGE_SIZE


def requests_in_flight(store: object) -> int:
    """How many requests to ``store`` are worth having in flight at once (its
    ``requests_in_flight``; 1 where every request is CPU work, as on a disk)."""
    value = getattr(store, "requests_in_flight", None)
    if isinstance(value, int) and value > 0:
        return value
    return 1 if getattr(store, "has_directories", False) else DEFAULT_REQUESTS_IN_FLIGHT


class ByteStore(Protocol):
    """Keys and bytes under one root."""

    stats: RequestStats
    has_directories: bool
    """True when empty directories exist and have modification times (a disk);
    False for object stores, where a "directory" is only a key prefix."""
    listing_concurrency: int
    """How many listings are worth running at once (1 where listing is CPU work)."""
    stop: StopScope | None
    """The run's stop scope (set by the runner): a store's own retries and their
    backoff end at a stop. None: no stop to follow."""
    # Two more facts belong here once every store declares them (read them through
    # ``page_size()`` and ``requests_in_flight()`` meanwhile, which give defaults):
    # ``page_size: int`` (keys a listing page holds) and ``requests_in_flight: int``
    # (useful concurrent requests).

    def describe(self) -> str:
        """Where this store is, for logs and reports (no secrets)."""
        ...

    async def check(self) -> None:
        """Raise StorageSetupError unless the store can be reached and its root exists."""
        ...

    def list_children(self, prefix: str) -> AsyncGenerator[list[Entry], None]:
        """The direct children of ``prefix`` (files and sub-prefixes), in pages.
        A missing prefix lists nothing."""
        ...

    def list_leaves(self, prefix: str, leaf: str) -> AsyncGenerator[list[Leaf], None]:
        """Each child ``<name>`` of ``prefix`` that holds the file ``<name>/<leaf>``,
        with that file's mtime and size, in pages. Other keys below the children
        are ignored (and, on a disk, not visited)."""
        ...

    def walk(self, prefix: str) -> AsyncGenerator[list[FileInfo], None]:
        """Every file below ``prefix``, at any depth, keys relative to ``prefix``."""
        ...

    async def read(self, key: str, cap: int) -> Blob | None:
        """At most ``cap + 1`` bytes of ``key``; None if it does not exist."""
        ...

    async def read_many(self, keys: Sequence[str], cap: int) -> list[Blob | StorageError | None]:
        """``read`` for many keys at once (batched on a disk, concurrent on S3); a
        failure of one key comes back in its place instead of being raised."""
        ...

    async def stat(self, key: str) -> FileInfo | None:
        """The file or directory at ``key`` (mtime, size); None if it does not exist.
        On a store without directories only files exist."""
        ...

    async def stat_many(self, keys: Sequence[str]) -> list[FileInfo | None]:
        """``stat`` for a few keys at once (one batch on a disk, concurrent on S3)."""
        ...

    async def delete_many(
        self, keys: Sequence[str], *, directories: Sequence[str] = ()
    ) -> list[str | None]:
        """Delete these files (objects): one entry per key, None when the key is gone
        (deleted now or missing already), else the reason it is still there. Then, on a
        store with directories, remove each of ``directories`` that is empty, in the
        order given (deepest first)."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


@runtime_checkable
class RollingUpStore(Protocol):
    """A store without directories whose listing can roll keys up at a delimiter of
    any string (S3's ListObjectsV2): what one flat listing of many folders needs when
    some of them hold far more keys than the caller wants."""

    def walk_rolling_up(
        self, prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        """Every file below ``prefix`` as ``walk`` gives it, except the files whose key
        (relative to ``prefix``) holds ``delimiter``: each distinct part of such keys up
        to and including the delimiter's first occurrence comes once, in the second
        list, in their place. Pages of ``page_size`` entries of both kinds, in key
        order across pages (within a page each list is in order). With
        ``start_after`` (relative to ``prefix``), only what sorts after it."""
        ...
