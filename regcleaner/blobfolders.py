"""Every blob under ``blobs/``, listed as the registry's garbage-collect walks them.

``gc`` and ``usage`` both take the blobs from here (gc, where the run recorded a
listing of the blobs already, takes the fan-out folders walked whole from that record:
``blobwalks``). On a store
without folders (S3), one flat listing of ``blobs/`` is tried first: a registry whose
blobs fit in one page (1,000 keys) is then listed in one request instead of one listing
a fan-out folder (257 for sha256, ``width`` at once: 17 round trips). A larger one is
listed folder by folder, as on a disk, at the cost of the flat listing's first two
pages (the second says there is more). Both ways list the same blobs; the flat one also
sees a ``data`` file below a folder with an empty name (``blobs/sha256//...``), which a
folder listing cannot name, and refuses on it as on any other stray.

What a blob is, and what is not, is decided the same way in both: a file named ``data``
at ``blobs/<algorithm>/<fan-out>/<digest>/data`` with a digest matching its folders is a
blob; any other file named ``data`` below ``blobs/``, and any symbolic link or special
file, is a ``StrayEntry`` (the registry's garbage-collect fails on, or follows, what
regcleaner will not); other files are ignored, as it ignores them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from regcleaner import layout
from regcleaner.blobwalks import RecordedWalks
from regcleaner.concurrency import Channel
from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.storage.base import ByteStore, FileInfo
from regcleaner.view import LINK_FOLLOWED_BY_GC, NOT_A_BLOB, BlobInfo, StrayEntry

Consume = Callable[[list[BlobInfo], list[StrayEntry]], None]
"""Takes the blobs and strays of one listing (called in the event loop, never at once)."""
Progress = Callable[[int, int], None]
"""Told (fan-out folders found, folders listed) as the listing goes, for progress lines."""


@dataclass(slots=True)
class BlobListing:
    """What listing the blobs took: fan-out folders found, and how many were listed
    whole (the others failed: ``problem`` was told)."""

    folders: int = 0
    folders_listed: int = 0
    flat: bool = False
    """True when one flat listing held every blob."""


async def list_blobs(
    store: ByteStore, consume: Consume, *, width: int, problem: Callable[[str], None],
    stopped: Callable[[], bool] = lambda: False, progress: Progress | None = None,
    recorded: RecordedWalks | None = None,
) -> BlobListing:  # fmt: skip
    """Give ``consume`` every blob and stray below ``blobs/``, ``width`` listings at once.
    A folder whose listing fails is told to ``problem`` (the caller then knows the list
    is incomplete); a failure to list ``blobs/`` itself raises ``StorageError``.
    ``recorded``: walks of fan-out folders made earlier in this run (``blobwalks``),
    taken instead of listing those folders again (a folder the record cannot give is
    listed); ``blobs/`` and each algorithm's folder are listed afresh."""
    if recorded is not None and recorded.broken:
        recorded = None
    if not store.has_directories:
        done = await _flat(store, consume)
        if done is not None:
            if progress is not None:
                progress(done.folders, done.folders_listed)
            return done
    prefixes, odd = await blob_prefixes(store)
    if odd:
        consume([], odd)
    listing = BlobListing(folders=len(prefixes))
    if progress is not None:
        progress(listing.folders, 0)
    queue: Channel[tuple[str, str]] = Channel(width * 4)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            if stopped():
                continue
            try:
                replayed = None if recorded is None else replayed_blobs(recorded, *item)
                if replayed is None:
                    blobs, strays = await blobs_under(store, *item)
                else:
                    blobs, strays = replayed
            except StorageError as exc:
                problem(f"listing blobs/{item[0]}/{item[1]}: {exc}")
                continue
            consume(blobs, strays)
            listing.folders_listed += 1
            if progress is not None:
                progress(listing.folders, listing.folders_listed)

    async with asyncio.TaskGroup() as group:
        group.create_task(queue.feed(prefixes))
        for _ in range(width):
            group.create_task(worker())
    return listing


async def _flat(store: ByteStore, consume: Consume) -> BlobListing | None:
    """The blobs from one page of a flat listing of ``blobs/``, or None if there are
    more (nothing is consumed then)."""
    pages = store.walk(layout.BLOBS)
    try:
        first: list[FileInfo] = []
        async for page in pages:
            if first:
                return None  # a second page: list folder by folder
            first = page
    finally:
        await pages.aclose()
    blobs: list[BlobInfo] = []
    odd: list[StrayEntry] = []
    folders: set[tuple[str, str]] = set()
    for file in first:
        algorithm, _, below = file.key.partition("/")
        prefix, _, rest = below.partition("/")
        if not rest:  # directly in blobs/ or in blobs/<algorithm>/
            _outside_folders(f"{layout.BLOBS}/{file.key}", file.regular, odd)
            continue
        folders.add((algorithm, prefix))
        _in_folder(algorithm, prefix, FileInfo(rest, file.mtime, file.size, file.regular),
                   blobs, odd)  # fmt: skip
    consume(blobs, odd)
    return BlobListing(folders=len(folders), folders_listed=len(folders), flat=True)


def _outside_folders(key: str, regular: bool, odd: list[StrayEntry]) -> None:
    """A file directly in ``blobs/`` or in ``blobs/<algorithm>/``."""
    if not regular:
        odd.append(StrayEntry(key, LINK_FOLLOWED_BY_GC))
    elif key.rsplit("/", 1)[-1] == layout.DATA:
        odd.append(StrayEntry(key, NOT_A_BLOB))


def _in_folder(
    algorithm: str, prefix: str, file: FileInfo, blobs: list[BlobInfo], odd: list[StrayEntry]
) -> None:
    """A file below ``blobs/<algorithm>/<prefix>/`` (its key relative to that folder)."""
    folder = f"{layout.BLOBS}/{algorithm}/{prefix}"
    key = file.key
    if not file.regular:
        odd.append(StrayEntry(f"{folder}/{key}", LINK_FOLLOWED_BY_GC))
    elif key == layout.DATA or key.endswith("/" + layout.DATA):
        digest = layout.blob_digest_at(f"{algorithm}/{prefix}/{key}")
        if digest is None:
            odd.append(StrayEntry(f"{folder}/{key}", NOT_A_BLOB))
        else:
            blobs.append(BlobInfo(Digest(digest), file.size, file.mtime))


async def blob_prefixes(store: ByteStore) -> tuple[list[tuple[str, str]], list[StrayEntry]]:
    """(algorithm, fan-out folder) pairs under ``blobs/``, and what is odd directly in
    ``blobs/`` or in an algorithm's folder."""
    pairs: list[tuple[str, str]] = []
    odd: list[StrayEntry] = []
    algorithms: list[str] = []
    async for page in store.list_children(layout.BLOBS):
        for entry in page:
            key = f"{layout.BLOBS}/{entry.name}"
            if entry.kind == "dir":
                algorithms.append(entry.name)
            else:
                _outside_folders(key, entry.kind != "other", odd)
    for algorithm in sorted(algorithms):
        folder = f"{layout.BLOBS}/{algorithm}"
        async for page in store.list_children(folder):
            for entry in page:
                key = f"{folder}/{entry.name}"
                if entry.kind == "dir":
                    pairs.append((algorithm, entry.name))
                else:
                    _outside_folders(key, entry.kind != "other", odd)
    return sorted(pairs), odd


async def blobs_under(
    store: ByteStore, algorithm: str, prefix: str
) -> tuple[list[BlobInfo], list[StrayEntry]]:
    """Blobs in one ``blobs/<algorithm>/<prefix>`` folder, walked to any depth as the
    registry's garbage-collect walks it, and the strays there."""
    blobs: list[BlobInfo] = []
    odd: list[StrayEntry] = []
    async for page in store.walk(f"{layout.BLOBS}/{algorithm}/{prefix}"):
        found, strays = in_folder(algorithm, prefix, page)
        blobs += found
        odd += strays
    return blobs, odd


def replayed_blobs(
    recorded: RecordedWalks, algorithm: str, prefix: str
) -> tuple[list[BlobInfo], list[StrayEntry]] | None:
    """``in_folder`` of the recorded walk of ``blobs/<algorithm>/<prefix>``, or None
    when there is none. A plain record is a blob when it is in its own fan-out folder
    (what ``layout.blob_digest_at`` checks: the record's key is 64 lowercase hex digits
    and ``/data``); anything else goes through ``_in_folder`` as a walked file would."""
    found = recorded.replay_records(f"{algorithm}/{prefix}")
    if found is None:
        return None
    plain, others = found
    blobs: list[BlobInfo] = []
    odd: list[StrayEntry] = []
    own_folder = algorithm == "sha256"
    for digest, size, mtime in plain:
        hex_part = digest.hex()
        if own_folder and hex_part[:2] == prefix:
            blobs.append(BlobInfo(Digest("sha256:" + hex_part), size, mtime))
        else:
            _in_folder(algorithm, prefix, FileInfo(hex_part + "/data", mtime, size), blobs, odd)
    for file in others:
        _in_folder(algorithm, prefix, file, blobs, odd)
    return blobs, odd


def in_folder(
    algorithm: str, prefix: str, files: Iterable[FileInfo]
) -> tuple[list[BlobInfo], list[StrayEntry]]:
    """The blobs and strays among ``files``, the walk of ``blobs/<algorithm>/<prefix>``
    (keys relative to it)."""
    blobs: list[BlobInfo] = []
    odd: list[StrayEntry] = []
    for file in files:
        _in_folder(algorithm, prefix, file, blobs, odd)
    return blobs, odd
