"""A byte store on a local (or mounted) directory.

Disk work goes in batches (a folder listing, a page of a walk, up to 512 reads, one
stat, a batch of deletions). While the files come from the page cache, a batch costs
microseconds per file and runs on the event loop between two awaits: handing it to a
thread would cost more than the work, and two busy Python threads pay for every
hand-over of the GIL. As soon as the disk turns slow (a cold disk, NFS: on average more
than 2 ms a file, or one batch longer than 0.25 s), every batch from then on goes to one
dedicated disk thread, so that the event loop never waits on storage while requests are
in flight. Symbolic links are never followed; they are reported as ``other`` entries.
A file is opened without blocking and read only if it is a regular file: a named pipe or
a device where a link or a blob should be is unreadable, never waited on (an ``open``
of a pipe with no writer would block the event loop, and with it every stop, for ever).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiofiles.os

from regcleaner.concurrency import StopScope
from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.storage.base import Blob, Entry, EntryKind, FileInfo, Leaf, RequestStats

# O_NONBLOCK: opening a named pipe returns at once instead of waiting for a writer (a
# regular file reads as usual); O_NOCTTY: a terminal device never becomes ours.
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
)
_BATCH = 512
_INLINE_BATCH = 64
_WALK_PAGE = 1024
# Disk work stays on the event loop while the running average per file stays under
# _INLINE_ITEM_LIMIT_S and no single batch takes longer than _INLINE_CALL_LIMIT_S. An
# average, because one slow sample is usually the scheduler, not the disk.
_INLINE_ITEM_LIMIT_S = 0.002
_INLINE_CALL_LIMIT_S = 0.25
_INLINE_WEIGHT = 0.05
# "Not there": the file, or a folder on its path, is missing or is not a folder.
_ABSENT = (errno.ENOENT, errno.ENOTDIR)
T = TypeVar("T")
log = logging.getLogger(__name__)


def _read_capped(path: str, cap: int) -> Blob:
    """Read at most ``cap + 1`` bytes of a regular file without following a symlink; any
    other kind of file (a pipe, a device, a folder) is an error, found before reading."""
    fd = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        # One read of the size fstat gave (+1 to see the end) is the whole file in the
        # common case; read on only if the file turned out longer than it said.
        want = min(info.st_size, cap) + 1
        first = os.read(fd, want)
        if len(first) < want:
            return Blob(first, info.st_mtime)
        chunks = [first]
        remaining = cap + 1 - len(first)
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return Blob(b"".join(chunks), info.st_mtime)
    finally:
        os.close(fd)


def _kind(entry: os.DirEntry[str]) -> EntryKind:
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"


def _failure(action: str, key: str, exc: OSError) -> StorageError:
    return StorageError(f"cannot {action} {key}: {exc.strerror or exc}")


class FilesystemStore:
    """Keys are paths relative to ``root``."""

    has_directories = True
    listing_concurrency = 1  # listings are CPU work here: more tasks would only interleave
    page_size = 1000  # a folder is listed in one call; 1,000 keeps the engine's choices
    requests_in_flight = 1  # every request is CPU work on this machine
    stop: StopScope | None = None
    """The run's stop scope (the S3 store's per-key retries end at it); unused here: a
    disk's deletions are not retried."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats = RequestStats()
        # One disk thread, used once the disk is slow: page-cache reads are CPU work, and
        # more threads would only fight the event loop for the GIL.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regcleaner-disk")
        self._inline = True
        self._item_average_s: float | None = None
        self._prefix = os.path.join(os.fspath(root), "")  # paths are built on hot paths

    def describe(self) -> str:
        return f"filesystem {self.root}"

    def _path(self, key: str) -> str:
        return self._prefix + key

    async def check(self) -> None:
        if not await aiofiles.os.path.isdir(self.root):
            raise StorageSetupError(f"storage root {self.root} is not a directory")

    async def _run(
        self, function: Callable[..., T], *args: Any, items: int | Callable[[T], int] = 1
    ) -> T:
        """Run one batch of ``items`` files (a count, or how to count them in the
        result): inline while the disk is fast, else in the disk thread."""
        if not self._inline:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._executor, function, *args)
            except OSError as exc:
                raise _failure("use", str(self.root), exc) from None
        started = time.perf_counter()
        try:
            result = function(*args)
        except OSError as exc:  # anything a batch did not turn into a StorageError itself
            raise _failure("use", str(self.root), exc) from None
        elapsed = time.perf_counter() - started
        count = items if isinstance(items, int) else items(result)
        per_item = elapsed / max(count, 1)
        average = per_item if self._item_average_s is None else self._item_average_s
        self._item_average_s = average = average + (per_item - average) * _INLINE_WEIGHT
        if elapsed > _INLINE_CALL_LIMIT_S or average > _INLINE_ITEM_LIMIT_S:
            self._inline = False
            log.info(
                "the disk is slow (%.1f ms a file, %.0f ms for the last batch): disk work "
                "moves to its own thread",
                1000 * average,
                1000 * elapsed,
            )
        if count >= _INLINE_BATCH:
            await asyncio.sleep(0)  # a turn for the other tasks after a big batch
        return result

    # -- listings -------------------------------------------------------------------

    async def list_children(self, prefix: str) -> AsyncGenerator[list[Entry], None]:
        entries = await self._run(self._list_sync, prefix, items=_counted)
        if entries:
            yield entries

    def _list_sync(self, prefix: str) -> list[Entry]:
        self.stats.list += 1
        try:
            with os.scandir(self._path(prefix)) as found:
                return [Entry(e.name, _kind(e)) for e in found]
        except OSError as exc:
            if exc.errno in _ABSENT:
                return []
            raise _failure("list", prefix, exc) from None

    async def list_leaves(self, prefix: str, leaf: str) -> AsyncGenerator[list[Leaf], None]:
        leaves = await self._run(self._list_leaves_sync, prefix, leaf, items=_counted)
        if leaves:
            yield leaves

    def _list_leaves_sync(self, prefix: str, leaf: str) -> list[Leaf]:
        self.stats.list += 1
        leaves: list[Leaf] = []
        tail = "/" + leaf
        try:
            with os.scandir(self._path(prefix)) as found:
                for entry in found:
                    if not entry.is_dir(follow_symlinks=False):
                        if not entry.is_file(follow_symlinks=False):
                            leaves.append(Leaf(entry.name, 0.0, 0, regular=False))
                        continue
                    try:
                        info = os.stat(entry.path + tail, follow_symlinks=False)
                    except OSError as exc:
                        if exc.errno in _ABSENT:
                            continue
                        raise _failure("stat", f"{prefix}/{entry.name}{tail}", exc) from None
                    leaves.append(
                        Leaf(entry.name, info.st_mtime, info.st_size, stat.S_ISREG(info.st_mode))
                    )
        except OSError as exc:
            if exc.errno in _ABSENT:
                return []
            raise _failure("list", prefix, exc) from None
        return leaves

    async def walk(self, prefix: str) -> AsyncGenerator[list[FileInfo], None]:
        pending = [""]
        while pending:
            page = await self._run(self._walk_some, prefix, pending, items=_counted)
            if page:
                yield page

    def _walk_some(self, prefix: str, pending: list[str]) -> list[FileInfo]:
        """Visit folders depth-first until a page is full; ``pending`` is the stack of
        folders (relative to ``prefix``) still to visit, updated in place."""
        self.stats.list += 1
        base = self._path(prefix)
        page: list[FileInfo] = []
        while pending and len(page) < _WALK_PAGE:
            relative = pending.pop()
            here = f"{base}/{relative}" if relative else base
            try:
                found = os.scandir(here)
            except OSError as exc:
                if exc.errno in _ABSENT:
                    continue
                raise _failure("list", f"{prefix}/{relative}", exc) from None
            folders: list[str] = []
            with found:
                for entry in found:
                    key = f"{relative}/{entry.name}" if relative else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(key)
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError as exc:
                        if exc.errno in _ABSENT:
                            continue
                        raise _failure("stat", f"{prefix}/{key}", exc) from None
                    page.append(
                        FileInfo(key, info.st_mtime, info.st_size, stat.S_ISREG(info.st_mode))
                    )
            pending.extend(sorted(folders, reverse=True))
        return page

    # -- reads ----------------------------------------------------------------------

    async def read(self, key: str, cap: int) -> Blob | None:
        result = (await self._run(self._read_many_sync, [key], cap))[0]
        if isinstance(result, StorageError):
            raise result
        return result

    async def read_many(self, keys: Sequence[str], cap: int) -> list[Blob | StorageError | None]:
        results: list[Blob | StorageError | None] = []
        start = 0
        while start < len(keys):
            # Smaller batches while on the event loop: a slow disk then stalls it briefly.
            batch = keys[start : start + (_INLINE_BATCH if self._inline else _BATCH)]
            results += await self._run(self._read_many_sync, batch, cap, items=len(batch))
            start += len(batch)
        return results

    def _read_many_sync(self, keys: Sequence[str], cap: int) -> list[Blob | StorageError | None]:
        self.stats.get += len(keys)
        results: list[Blob | StorageError | None] = []
        for key in keys:
            try:
                results.append(_read_capped(self._prefix + key, cap))
            except OSError as exc:
                results.append(None if exc.errno in _ABSENT else _failure("read", key, exc))
        return results

    async def stat(self, key: str) -> FileInfo | None:
        return (await self._run(self._stat_many_sync, (key,)))[0]

    async def stat_many(self, keys: Sequence[str]) -> list[FileInfo | None]:
        # Right before every DELETE: on a fast disk a few stats of cached entries, inline.
        return await self._run(self._stat_many_sync, keys, items=len(keys))

    def _stat_many_sync(self, keys: Sequence[str]) -> list[FileInfo | None]:
        self.stats.head += len(keys)
        found: list[FileInfo | None] = []
        for key in keys:
            try:
                info = os.stat(self._prefix + key, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in _ABSENT:
                    found.append(None)
                    continue
                raise _failure("stat", key, exc) from None
            regular = stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
            found.append(FileInfo(key, info.st_mtime, info.st_size, regular))
        return found

    # -- writes ---------------------------------------------------------------------

    async def delete_many(
        self, keys: Sequence[str], *, directories: Sequence[str] = ()
    ) -> list[str | None]:
        return await self._run(
            self._delete_many_sync, keys, directories, items=len(keys) + len(directories)
        )

    def _delete_many_sync(
        self, keys: Sequence[str], directories: Sequence[str]
    ) -> list[str | None]:
        self.stats.delete += 1
        results: list[str | None] = []
        for key in keys:
            try:
                os.unlink(self._prefix + key)
            except OSError as exc:
                if exc.errno not in _ABSENT:
                    results.append(f"cannot delete {key}: {exc.strerror or exc}")
                    continue
            else:
                self.stats.keys_deleted += 1
            results.append(None)
        for directory in directories:
            try:
                os.rmdir(self._prefix + directory)
            except OSError as exc:
                if exc.errno not in (*_ABSENT, errno.ENOTEMPTY, errno.EEXIST):
                    log.warning("cannot remove folder %s: %s", directory, exc.strerror)
        return results

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _counted(result: Sequence[object]) -> int:
    return max(len(result), 1)
