"""Local-disk storage: the registry's ``rootdirectory`` mounted or on this machine.

Disk work goes in batches (a few hundred folders of the walk, a whole repository's
snapshot, up to 512 manifest reads, one stat for the last look). While the files come
from the page cache, a batch costs microseconds per file and runs on the event loop
between two awaits: handing it to a thread would cost more than the work, and two busy
Python threads pay for every hand-over of the GIL. As soon as the disk turns slow (a
cold disk, NFS: on average more than 2 ms a file, or one batch longer than 0.25 s),
every batch from then on goes to one dedicated disk thread, so that the event loop never
waits on storage while DELETEs are in flight. aiofiles is used for the cheap existence
checks. Symlinks are never followed: the registry does not create them, so one is
foreign and is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiofiles.os

from regcleaner import layout
from regcleaner.digest import Digest, is_sha256_hex
from regcleaner.errors import StorageError
from regcleaner.manifests import MAX_MANIFEST_BYTES
from regcleaner.planner import ManifestInfo, RepositorySnapshot, Unreadable
from regcleaner.storage.base import MAX_LINK_BYTES, decode_manifest, parse_link

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
_BATCH = 512
_INLINE_BATCH = 64
_WALK_BATCH = 256
# Disk work stays on the event loop while the running average per file stays under
# _INLINE_ITEM_LIMIT_S and no single batch takes longer than _INLINE_CALL_LIMIT_S. An
# average, because one slow sample is usually the scheduler, not the disk.
_INLINE_ITEM_LIMIT_S = 0.002
_INLINE_CALL_LIMIT_S = 0.25
_INLINE_WEIGHT = 0.05
T = TypeVar("T")
log = logging.getLogger(__name__)


def _read_capped(path: str, cap: int) -> bytes:
    """Read at most ``cap + 1`` bytes of a regular file without following a symlink."""
    fd = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file: {path}")
        # One read of the size fstat gave (+1 to see the end) is the whole file in the
        # common case; read on only if the file turned out longer than it said.
        want = min(info.st_size, cap) + 1
        first = os.read(fd, want)
        if len(first) < want:
            return first
        chunks = [first]
        remaining = cap + 1 - len(first)
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _folders_visited(walked: tuple[list[str], list[str], int]) -> int:
    return walked[2]


def _files_in(snapshot: RepositorySnapshot) -> int:
    return 2 + len(snapshot.revisions) + len(snapshot.tags) + len(snapshot.broken_tags)


class FilesystemStorage:
    """Storage rooted at a directory that holds ``docker/registry/v2``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # One disk thread, used once the disk is slow: page-cache reads are CPU work, and
        # more threads would only fight the event loop for the GIL.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regcleaner-disk")
        self._inline = True
        self._item_average_s: float | None = None
        self._prefix = os.path.join(os.fspath(root), "")  # paths are built on hot paths

    def describe(self) -> str:
        return f"filesystem {self.root}"

    def _path(self, relative: str) -> str:
        return self._prefix + relative

    async def check(self) -> None:
        if not await aiofiles.os.path.isdir(self.root):
            raise StorageError(f"storage root {self.root} is not a directory")
        if not await aiofiles.os.path.isdir(self._path(layout.V2_ROOT)):
            raise StorageError(
                f"no registry storage under {self.root}: expected {layout.V2_ROOT}/ "
                "(point --registry-dir at the registry's rootdirectory)"
            )

    async def _run(
        self, function: Callable[..., T], *args: Any, items: int | Callable[[T], int] = 1
    ) -> T:
        """Run one batch of ``items`` files (a count, or how to count them in the
        result): inline while the disk is fast, else in the disk thread."""
        if not self._inline:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, function, *args)
        started = time.perf_counter()
        result = function(*args)
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
        if count > 1:
            await asyncio.sleep(0)  # a turn for the other tasks between two batches
        return result

    async def list_repositories(self) -> AsyncIterator[str]:
        top = self._path(layout.REPOSITORIES)
        if not await aiofiles.os.path.isdir(top):
            return
        pending: list[str] = [""]
        while pending:
            names, pending, _ = await self._run(
                self._walk_some, top, pending, items=_folders_visited
            )
            for name in names:
                yield name

    @staticmethod
    def _walk_some(top: str, pending: list[str]) -> tuple[list[str], list[str], int]:
        """Visit up to _WALK_BATCH folders depth-first; (repositories found, folders left,
        folders visited)."""
        found: list[str] = []
        visited = 0
        while pending and visited < _WALK_BATCH:
            relative = pending.pop()
            visited += 1
            try:
                entries = os.scandir(os.path.join(top, relative) if relative else top)
            except FileNotFoundError:
                continue  # deleted while we walked
            except OSError as exc:
                raise StorageError(f"cannot list {top}/{relative}: {exc.strerror}") from None
            children: list[str] = []
            is_repository = False
            with entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.name == layout.MANIFESTS_DIR:
                        is_repository = True
                    elif not entry.name.startswith("_"):
                        children.append(f"{relative}/{entry.name}" if relative else entry.name)
            if is_repository and relative:
                found.append(relative)
            pending.extend(sorted(children, reverse=True))
        return found, pending, visited

    async def snapshot(self, repository: str) -> RepositorySnapshot:
        return await self._run(self._snapshot_sync, repository, items=_files_in)

    def _snapshot_sync(self, repository: str) -> RepositorySnapshot:
        revisions: dict[Digest, float] = {}
        try:
            with os.scandir(self._path(layout.revisions_dir(repository))) as entries:
                for entry in entries:
                    if not is_sha256_hex(entry.name) or not entry.is_dir(follow_symlinks=False):
                        continue
                    try:
                        info = os.stat(entry.path + "/link", follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        revisions[Digest("sha256:" + entry.name)] = info.st_mtime
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot list revisions of {repository}: {exc.strerror}") from None

        tags: dict[str, Digest] = {}
        broken: dict[str, str] = {}
        try:
            with os.scandir(self._path(layout.tags_dir(repository))) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    link = entry.path + "/current/link"
                    try:
                        tags[entry.name] = parse_link(_read_capped(link, MAX_LINK_BYTES))
                    except FileNotFoundError:
                        continue  # a tag folder without current/link is no tag
                    except (OSError, ValueError) as exc:
                        broken[entry.name] = f"unreadable current link: {exc}"
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot list tags of {repository}: {exc.strerror}") from None
        return RepositorySnapshot(repository, revisions, tags, broken)

    async def read_manifests(self, digests: Collection[Digest]) -> dict[Digest, ManifestInfo]:
        ordered = list(digests)
        result: dict[Digest, ManifestInfo] = {}
        start = 0
        while start < len(ordered):
            # Smaller batches while on the event loop: a slow disk then stalls it briefly.
            batch = ordered[start : start + (_INLINE_BATCH if self._inline else _BATCH)]
            result.update(await self._run(self._read_manifests_sync, batch, items=len(batch)))
            start += len(batch)
        return result

    def _read_manifests_sync(self, digests: list[Digest]) -> dict[Digest, ManifestInfo]:
        result: dict[Digest, ManifestInfo] = {}
        for digest in digests:
            try:
                data = _read_capped(self._path(layout.blob_data(digest)), MAX_MANIFEST_BYTES)
            except FileNotFoundError:
                result[digest] = Unreadable("manifest blob is missing")
                continue
            except OSError as exc:
                result[digest] = Unreadable(f"cannot read manifest blob: {exc}")
                continue
            result[digest] = decode_manifest(digest, data)
        return result

    async def revision_mtime(self, repository: str, digest: Digest) -> float | None:
        # Right before every DELETE: on a fast disk one stat of a cached entry, inline.
        return await self._run(self._revision_mtime_sync, repository, digest)

    def _revision_mtime_sync(self, repository: str, digest: Digest) -> float | None:
        try:
            info = os.stat(self._path(layout.revision_link(repository, digest)),
                           follow_symlinks=False)  # fmt: skip
        except FileNotFoundError:
            return None
        return info.st_mtime

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
