"""Local-disk storage: the registry's ``rootdirectory`` mounted or on this machine.

All disk work runs in one dedicated thread, in batches (a few hundred folders of the
walk, a whole repository's snapshot, 512 manifest reads), which is an order of
magnitude fewer thread hops than aiofiles' one per call; aiofiles is used for the
cheap existence checks. Symlinks are never
followed: the registry does not create them, so one is foreign and is ignored.
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
from regcleaner.digest import Digest, digest_from_hex, is_sha256_hex
from regcleaner.errors import StorageError
from regcleaner.manifests import MAX_MANIFEST_BYTES
from regcleaner.planner import ManifestInfo, RepositorySnapshot, Unreadable
from regcleaner.storage.base import MAX_LINK_BYTES, decode_manifest, parse_link

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
_BATCH = 512
_WALK_BATCH = 256
# The last look's stat runs inline while its running average stays under this; a single
# slow sample is usually the GIL (the disk thread was busy), not the disk.
_INLINE_STAT_LIMIT_S = 0.002
_INLINE_STAT_WEIGHT = 0.05
T = TypeVar("T")
log = logging.getLogger(__name__)


def _read_capped(path: str, cap: int) -> bytes:
    """Read at most ``cap + 1`` bytes of a regular file without following a symlink."""
    fd = os.open(path, _READ_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {path}")
        chunks: list[bytes] = []
        remaining = cap + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class FilesystemStorage:
    """Storage rooted at a directory that holds ``docker/registry/v2``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # One disk thread: page-cache reads are CPU work, and more threads would only
        # fight the event loop for the GIL while it issues DELETEs.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regcleaner-disk")
        self._inline_stat = True
        self._stat_average_s = 0.0

    def describe(self) -> str:
        return f"filesystem {self.root}"

    def _path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    async def check(self) -> None:
        if not await aiofiles.os.path.isdir(self.root):
            raise StorageError(f"storage root {self.root} is not a directory")
        if not await aiofiles.os.path.isdir(self._path(layout.V2_ROOT)):
            raise StorageError(
                f"no registry storage under {self.root}: expected {layout.V2_ROOT}/ "
                "(point --registry-dir at the registry's rootdirectory)"
            )

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def list_repositories(self) -> AsyncIterator[str]:
        top = self._path(layout.REPOSITORIES)
        if not await aiofiles.os.path.isdir(top):
            return
        pending: list[str] = [""]
        while pending:
            names, pending = await self._run(self._walk_some, top, pending)
            for name in names:
                yield name

    @staticmethod
    def _walk_some(top: str, pending: list[str]) -> tuple[list[str], list[str]]:
        """Visit up to _WALK_BATCH folders depth-first; (repositories found, folders left)."""
        found: list[str] = []
        for _ in range(_WALK_BATCH):
            if not pending:
                break
            relative = pending.pop()
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
        return found, pending

    async def snapshot(self, repository: str) -> RepositorySnapshot:
        return await self._run(self._snapshot_sync, repository)

    def _snapshot_sync(self, repository: str) -> RepositorySnapshot:
        revisions: dict[Digest, float] = {}
        try:
            with os.scandir(self._path(layout.revisions_dir(repository))) as entries:
                for entry in entries:
                    if not is_sha256_hex(entry.name) or not entry.is_dir(follow_symlinks=False):
                        continue
                    try:
                        info = os.stat(os.path.join(entry.path, "link"), follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        revisions[digest_from_hex(entry.name)] = info.st_mtime
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
                    link = os.path.join(entry.path, "current", "link")
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
        for start in range(0, len(ordered), _BATCH):
            batch = ordered[start : start + _BATCH]
            result.update(await self._run(self._read_manifests_sync, batch))
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
        # Called right before every DELETE. On a local disk one stat of a cached entry
        # costs a few microseconds, far less than a hop to the disk thread, so it runs
        # inline; should stats turn slow (NFS, a cold disk), the thread takes over for
        # the rest of the run so that the event loop does not wait on storage. The
        # decision follows a running average: one stat that had to wait for the GIL
        # while the disk thread scanned is no reason to pay a thread hop per DELETE.
        if self._inline_stat:
            started = time.perf_counter()
            result = self._revision_mtime_sync(repository, digest)
            elapsed = time.perf_counter() - started
            self._stat_average_s += (elapsed - self._stat_average_s) * _INLINE_STAT_WEIGHT
            if elapsed > 50 * _INLINE_STAT_LIMIT_S or self._stat_average_s > _INLINE_STAT_LIMIT_S:
                self._inline_stat = False
                log.info(
                    "stats of revision links are slow (%.1f ms); the last look before each "
                    "DELETE moves to the disk thread",
                    1000 * max(elapsed, self._stat_average_s),
                )
            return result
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
