"""list_blobs: one flat listing when the blobs fit in a page, folder by folder when not,
and the same blobs and strays either way."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator

import pytest

from regcleaner import layout
from regcleaner.blobfolders import BlobListing, list_blobs
from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.storage.base import FileInfo
from regcleaner.view import BlobInfo, StrayEntry
from testkit.memory import MemoryStore


def _registry(blobs: int) -> MemoryStore:
    store = MemoryStore(name="blobs")
    for number in range(blobs):
        data = f"blob {number}".encode()
        digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        store.put(layout.blob_data(digest), data)
    store.put(f"{layout.BLOBS}/data", b"x")
    store.put(f"{layout.BLOBS}/sha256/data", b"x")
    store.put(f"{layout.BLOBS}/sha256/ab/not-a-digest/data", b"x")
    store.put(f"{layout.BLOBS}/sha256/ab/startedat", b"x")  # ignored, as gc ignores it
    return store


def _listed(store: MemoryStore) -> tuple[BlobListing, dict[str, int], list[str], int]:
    found: dict[str, int] = {}
    odd: list[str] = []

    def consume(blobs: list[BlobInfo], strays: list[StrayEntry]) -> None:
        found.update({blob.digest: blob.size for blob in blobs})
        odd.extend(stray.key for stray in strays)

    before = store.stats.list
    listing = asyncio.run(list_blobs(store, consume, width=4, problem=pytest.fail))
    return listing, found, sorted(odd), store.stats.list - before


def test_one_page_of_blobs_is_one_listing() -> None:
    listing, found, odd, requests = _listed(_registry(40))
    assert listing.flat
    assert requests == 1
    assert len(found) == 40
    assert odd == sorted([f"{layout.BLOBS}/data", f"{layout.BLOBS}/sha256/data",
                          f"{layout.BLOBS}/sha256/ab/not-a-digest/data"])  # fmt: skip


def test_more_than_a_page_is_listed_folder_by_folder_with_the_same_result() -> None:
    small = _listed(_registry(40))
    store = _registry(40)
    store.page_size = 5  # 40 blobs and 4 other keys: more than one page
    listing, found, odd, requests = _listed(store)
    assert not listing.flat
    assert (found, odd) == (small[1], small[2])
    assert listing.folders == listing.folders_listed == small[0].folders
    assert requests > 1 + listing.folders  # the first page, blobs/, blobs/sha256, folders


def test_a_folder_that_cannot_be_listed_is_a_problem_not_an_omission() -> None:
    store = _registry(40)
    store.page_size = 5
    problems: list[str] = []
    failing = f"{layout.BLOBS}/sha256/ab"
    original = store.walk

    async def broken() -> AsyncGenerator[list[FileInfo], None]:
        raise StorageError("listing refused")
        yield []  # an async generator  # pragma: no cover

    def walk(prefix: str) -> AsyncGenerator[list[FileInfo], None]:
        return broken() if prefix == failing else original(prefix)

    store.walk = walk  # type: ignore[method-assign]
    listing = asyncio.run(list_blobs(store, lambda blobs, odd: None, width=4,
                                     problem=problems.append))  # fmt: skip
    assert problems == ["listing blobs/sha256/ab: listing refused"]
    assert listing.folders_listed == listing.folders - 1


def test_progress_is_told_as_folders_are_listed() -> None:
    store = _registry(40)
    store.page_size = 5
    seen: list[tuple[int, int]] = []
    listing = asyncio.run(list_blobs(store, lambda blobs, odd: None, width=2,
                                     problem=pytest.fail,
                                     progress=lambda *pair: seen.append(pair)))  # fmt: skip
    assert seen[0] == (listing.folders, 0)
    assert seen[-1] == (listing.folders, listing.folders)
    assert [listed for _, listed in seen] == list(range(listing.folders + 1))


def test_a_data_file_below_an_empty_folder_name_is_a_stray_in_one_page() -> None:
    """A folder listing cannot name ``blobs/sha256//``; the flat page sees its data
    file and gc refuses, as on any data file where no blob can be."""
    store = _registry(3)
    store.put(f"{layout.BLOBS}/sha256//{'a' * 64}/data", b"x")
    _, found, odd, _ = _listed(store)
    assert len(found) == 3
    assert f"{layout.BLOBS}/sha256//{'a' * 64}/data" in odd
