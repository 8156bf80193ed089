"""The registry view's cache-aware reading (``regcleaner.scancache``): manifests and
link files read through the byte store, or taken from the cache when their blob's HEAD
(a stat on a disk), this run's listing of the blobs, or the links' listing shows the
validator they were verified with. Anything else is read and verified as without a
cache, and what verifies is cached for the next run."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Collection, Sequence
from typing import NamedTuple

from regcleaner import layout
from regcleaner.blobwalks import RecordedWalks
from regcleaner.digest import Digest, is_sha256_hex
from regcleaner.errors import StorageError
from regcleaner.manifests import (
    MAX_MANIFEST_BYTES,
    ManifestInfo,
    ManifestKind,
    ManifestRefs,
    Unreadable,
    decode_manifest,
)
from regcleaner.scancache import ScanCache, validator
from regcleaner.storage.base import Blob, ByteStore, FileInfo, page_size

# A link file holds a 71-byte digest; anything much longer is garbage.
MAX_LINK_BYTES = 1024
FANOUT = 256
"""Folders of ``blobs/sha256`` (the first two hex digits of each digest)."""
FANOUT_ALGORITHM = "sha256"
"""The algorithm whose folder a listing of the blobs walks (and ``blobwalks`` records)."""
BLOBS_PER_MANIFEST_GUESS = 5
"""How many blobs a registry holds per manifest, until a listing has counted them."""
RACY_S = 2.0
"""On a disk, bytes modified less than this before they were read are not cached: a
file's modification time moves with the kernel's clock tick (a few ms), so a rewrite of
the same size in the tick of the read would keep the validator the cache trusts (git's
"racily clean" files)."""


class _PageBudget:
    """The listing pages one listing of the blobs may make (None: no bound)."""

    def __init__(self, pages: int | None) -> None:
        self.pages = pages
        self._left = pages

    def take(self) -> bool:
        """One more page: False once the budget is spent."""
        if self._left is None:
            return True
        self._left -= 1
        return self._left >= 0


class CachedReads:
    """Reads through ``store`` that take from ``cache`` (None: no cache, every read
    made) what a fresh listing or HEAD shows unchanged since it was verified."""

    blob_listing_pays_from: float = 4.0
    """With a cache on an object store: list the manifest blobs once (instead of one
    HEAD each) when the cache holds at least this many times as many manifests as the
    listing costs requests."""

    def __init__(self, store: ByteStore, cache: ScanCache | None) -> None:
        self.store = store
        self.cache = cache
        self._blobs_listed: bool | None = None
        self._listing_lock = asyncio.Lock()
        self.recorded: RecordedWalks | None = None
        """The walks of the blobs' listing, kept for gc's sweep (``record_blob_walks``)."""

    def record_blob_walks(self) -> None:
        """gc follows in this process: keep the walks of the blobs' listing (if one is
        made) for its sweep (``blobwalks``)."""
        if self.recorded is None:
            self.recorded = RecordedWalks()

    def close(self) -> None:
        """Drop what was kept for the run (the recorded walks' temporary file)."""
        if self.recorded is not None:
            self.recorded.close()

    async def manifests(self, digests: Collection[Digest]) -> dict[Digest, ManifestInfo]:
        """Parse the manifest JSON of each digest after checking it hashes to the digest;
        problems come back as Unreadable.

        With a cache, a manifest verified before is taken from it when its blob is
        still there with the same validator (one HEAD instead of a GET, a hash and a
        parse); a blob that is gone or changed is read and verified again."""
        ordered = list(digests)
        result: dict[Digest, ManifestInfo] = dict(await self._cached_manifests(ordered))
        ordered = [digest for digest in ordered if digest not in result]
        cache = self.cache
        began = time.time()
        found = await self._manifest_blobs(ordered)
        verified: list[tuple[Digest, str, ManifestRefs]] = []
        for digest, blob in zip(ordered, found, strict=True):
            if blob is None:
                result[digest] = Unreadable("manifest blob is missing")
            elif isinstance(blob, StorageError):
                result[digest] = Unreadable(f"cannot read manifest blob: {blob}")
            else:
                decoded = result[digest] = decode_manifest(digest, blob.data)
                seen = self._validator_to_cache(blob, began)
                if isinstance(decoded, ManifestRefs) and seen:  # what is unreadable is read
                    verified.append((digest, seen, decoded))  # every time
        if cache is not None:
            cache.put_manifests(verified)
        return result

    async def _cached_manifests(self, digests: Sequence[Digest]) -> dict[Digest, ManifestRefs]:
        """The manifests among ``digests`` the cache knows and whose blob is still the
        bytes it verified: seen in this run's listing of the blobs, or by a HEAD."""
        cache = self.cache
        result: dict[Digest, ManifestRefs] = {}
        if cache is None or not digests:
            return result
        if await self._list_manifest_blobs():
            # This run's listing showed which blobs are still the bytes verified before.
            result = {d: refs for d, (_, refs) in cache.manifests(digests, listed=True).items()}
        else:
            known = cache.manifests(digests)
            checked = list(known)
            try:
                now = await self.store.stat_many([layout.blob_data(d) for d in checked])
            except StorageError:
                # Something here cannot be looked at: read them all, and let each read
                # say what is wrong, as without a cache.
                now = [None] * len(checked)
            for digest, found_now in zip(checked, now, strict=True):
                seen, refs = known[digest]
                if found_now is not None and seen == validator(
                    found_now.etag, found_now.mtime, found_now.size
                ):
                    result[digest] = refs
        cache.hits += len(result)
        cache.misses += len(digests) - len(result)
        return result

    async def manifest_marks(
        self, digests: Sequence[Digest]
    ) -> list[CachedMarks | bytes | StorageError | None]:
        """For blob collection: for each manifest the cache knows and whose blob is
        unchanged, the digests the registry's garbage-collect marks for it (an index's
        manifests, an image's config and layers, a schema1 manifest's fsLayers; never
        its subject); for every other one, its bytes as ``manifest_bytes`` gives them.
        Bytes that verify and parse are stored in the cache for the next run."""
        known = await self._cached_manifests(digests)
        rest = [digest for digest in digests if digest not in known]
        began = time.time()
        found = dict(zip(rest, await self._manifest_blobs(rest), strict=True))
        result: list[CachedMarks | bytes | StorageError | None] = []
        verified: list[tuple[Digest, str, ManifestRefs]] = []
        for digest in digests:
            refs = known.get(digest)
            if refs is not None:
                result.append(marks_of(refs))
                continue
            blob = found[digest]
            if isinstance(blob, Blob):
                result.append(blob.data)
                seen = self._validator_to_cache(blob, began)
                if self.cache is not None and seen:
                    decoded = decode_manifest(digest, blob.data)
                    if isinstance(decoded, ManifestRefs):
                        verified.append((digest, seen, decoded))
            else:
                result.append(blob)
        if self.cache is not None:
            self.cache.put_manifests(verified)
        return result

    def _validator_to_cache(self, blob: Blob, read_began: float) -> str | None:
        """The validator to cache the bytes just read under, or None when it would not
        show a later rewrite: the ETag where the store gives one; on a disk, the
        modification time and size of a file last modified at least ``RACY_S`` before
        the read began; never an object store's time alone (to the second: a link
        rewritten in the second it was read keeps its time and its 71 bytes)."""
        if blob.etag:
            return validator(blob.etag, blob.mtime, len(blob.data))
        if self.store.has_directories and blob.mtime <= read_began - RACY_S:
            return validator(None, blob.mtime, len(blob.data))
        return None

    async def _manifest_blobs(self, digests: Sequence[Digest]) -> list[Blob | StorageError | None]:
        return await self.store.read_many([layout.blob_data(d) for d in digests],
                                          MAX_MANIFEST_BYTES)  # fmt: skip

    def reconsider_blob_listing(self) -> None:
        """Decide again, at the next manifest read, whether a listing of the blobs pays
        (``_list_manifest_blobs``): gc after clean in one window reads every manifest
        the scan has just cached, where at the start of a cold run the cache was empty
        and a HEAD each looked cheaper. A listing already made stands: the blobs it
        saw are unchanged (clean removes links, not blobs)."""
        if self._blobs_listed is False:
            self._blobs_listed = None

    async def _list_manifest_blobs(self) -> bool:
        """Once a run, with a cache on an object store: when it costs fewer requests
        than a HEAD for each cached manifest, list ``blobs/sha256`` and note (in the
        cache, for this run) the cached manifests whose blob is listed with the
        validator they were cached with. True if that listing was made."""
        if self._blobs_listed is None:
            async with self._listing_lock:
                if self._blobs_listed is None:
                    self._blobs_listed = await self._list_blobs_if_it_pays()
        return self._blobs_listed

    async def _list_blobs_if_it_pays(self) -> bool:
        cache = self.cache
        if cache is None or self.store.has_directories:
            return False  # a disk: a stat a manifest is cheaper than walking every blob
        cached = cache.manifest_count()
        noted = cache.noted("blob_keys")
        keys = int(noted) if noted and noted.isdigit() else BLOBS_PER_MANIFEST_GUESS * cached
        pages = max(1, -(-keys // page_size(self.store)))
        width = max(1, self.store.listing_concurrency)
        # Round trips on the critical path: one flat listing pages through every key
        # in turn; a listing per fan-out folder pays one listing of the folders, then
        # each folder's pages, ``width`` folders at a time.
        flat = pages
        per_folder = 1 + -(-FANOUT // width) * max(1, -(-pages // FANOUT))
        # Requests: the flat listing makes its pages; the per-folder one a page at
        # least in each of the 256 folders besides.
        requests = pages if flat <= per_folder else pages + FANOUT
        if cached < self.blob_listing_pays_from * requests:
            return False
        cache.forget_listed()
        # The count of keys is a guess until a listing has been made (5 a cached
        # manifest: low where the cache holds a few repositories of a large registry):
        # past the pages that pay for the HEADs it saves, the listing stops, notes how
        # far it got, and the HEADs are made.
        pays_from = self.blob_listing_pays_from
        budget = _PageBudget(max(1, int(cached / pays_from)) if pays_from > 0 else None)
        if flat <= per_folder:
            listed, complete = await self._note_listed_blobs(layout.BLOBS_SHA256, budget=budget)
        else:
            folders: list[str] = []
            stopped: list[str] = []
            async with contextlib.aclosing(self.store.list_children(layout.BLOBS_SHA256)) as found:
                async for page in found:
                    if not budget.take():
                        stopped.append(layout.BLOBS_SHA256)
                        break
                    folders += [entry.name for entry in page if entry.kind == "dir"]
            counts: list[int] = []

            async def lister() -> None:
                while folders and not stopped:
                    folder = folders.pop()
                    found, whole = await self._note_listed_blobs(
                        f"{layout.BLOBS_SHA256}/{folder}", folder, budget=budget
                    )
                    counts.append(found)
                    if not whole:
                        stopped.append(folder)

            async with asyncio.TaskGroup() as group:
                for _ in range(width):
                    group.create_task(lister())
            listed, complete = sum(counts), not stopped
        if not complete and budget.pages is not None:
            # Not a count (a folder's last page is seldom full): enough keys that the
            # next run weighs the listing past its budget, and makes the HEADs.
            keys = max(listed, budget.pages * page_size(self.store)) + 1
            cache.note("blob_keys", str(keys))
            return False
        cache.note("blob_keys", str(listed))
        return True

    async def _note_listed_blobs(
        self, folder: str, fanout: str = "", *, budget: _PageBudget | None = None
    ) -> tuple[int, bool]:
        """Walk one folder of ``blobs/sha256`` (the whole of it when ``fanout`` is
        empty) and note each cached manifest listed there with its cached validator;
        the number of keys listed, and whether the walk reached the end (it stops when
        ``budget``, shared by the walks of one listing, is spent: unrecorded for gc)."""
        cache = self.cache
        assert cache is not None
        listed = 0
        expected: dict[str, str] = {}
        current = ""
        recorded = self.recorded
        if recorded is not None:
            if fanout:
                recorded.begin(f"{FANOUT_ALGORITHM}/{fanout}")
            else:
                recorded.begin_flat(FANOUT_ALGORITHM)
        async with contextlib.aclosing(self.store.walk(folder)) as walk:
            async for page in walk:
                if budget is not None and not budget.take():
                    return listed, False
                listed += len(page)
                if recorded is not None:
                    if fanout:
                        recorded.add(f"{FANOUT_ALGORITHM}/{fanout}", page)
                    else:
                        recorded.add_flat(FANOUT_ALGORITHM, page)
                matches: list[tuple[str, str]] = []
                for file in page:
                    key = f"{fanout}/{file.key}" if fanout else file.key
                    hh, _, rest = key.partition("/")
                    hex_part, _, tail = rest.partition("/")
                    if tail != layout.DATA or len(hh) != 2 or not hex_part.startswith(hh):
                        continue  # not where the registry reads a blob: no evidence of one
                    if hh != current:  # keys come in order: one fan-out folder after another
                        current = hh
                        expected = cache.validators_below(hh)
                    seen = expected.get(hex_part)
                    if seen is not None and seen == validator(file.etag, file.mtime, file.size):
                        matches.append(("sha256:" + hex_part, seen))
                cache.mark_listed(matches)
        if recorded is not None:  # walked to its end
            if fanout:
                recorded.complete(f"{FANOUT_ALGORITHM}/{fanout}")
            else:
                recorded.complete_flat(FANOUT_ALGORITHM)
        return listed, True

    async def links(
        self, keys: Sequence[str], listed: Sequence[FileInfo | None]
    ) -> list[Blob | StorageError | None]:
        """Read link files (``keys``), taking from the cache each one whose listing
        (``listed``, None where there was none) shows the validator it was cached
        with, and without a read each one whose listing shows the bytes it must hold
        (``content_shown``); the mtime is the listing's, as a read would give it."""
        cache = self.cache
        result: list[Blob | StorageError | None] = [None] * len(keys)
        shown: list[int] = []
        for index, (key, info) in enumerate(zip(keys, listed, strict=True)):
            content = content_shown(key, info)
            if content is not None and info is not None:
                result[index] = Blob(content, info.mtime, info.etag)
                shown.append(index)
        if cache is None:
            rest = [index for index in range(len(keys)) if result[index] is None]
            found = await self.store.read_many([keys[index] for index in rest], MAX_LINK_BYTES)
            for index, blob in zip(rest, found, strict=True):
                result[index] = blob
            return result
        known = cache.links([key for index, (key, info) in enumerate(zip(keys, listed, strict=True))
                             if info and result[index] is None])  # fmt: skip
        to_read: list[int] = []
        for index, (key, info) in enumerate(zip(keys, listed, strict=True)):
            if result[index] is not None:
                continue  # its listing showed its bytes
            entry = known.get(key)
            if (
                info is not None
                and entry is not None
                and validator(info.etag, info.mtime, info.size) == entry[0]
            ):
                result[index] = Blob(entry[1], info.mtime, info.etag)
                continue
            to_read.append(index)
        cache.hits += len(keys) - len(to_read) - len(shown)
        cache.misses += len(to_read)
        began = time.time()
        found = await self.store.read_many([keys[index] for index in to_read], MAX_LINK_BYTES)
        fresh: dict[str, tuple[str, bytes]] = {}
        for index, blob in zip(to_read, found, strict=True):
            result[index] = blob
            if isinstance(blob, Blob) and len(blob.data) <= MAX_LINK_BYTES:
                seen = self._validator_to_cache(blob, began)
                if seen:
                    fresh[keys[index]] = (seen, blob.data)
        cache.put_links(fresh)
        return result


def content_shown(key: str, info: FileInfo | None) -> bytes | None:
    """The bytes of the link file at ``key`` where its listing shows them: a link in a
    folder named by a sha256 digest (``revisions/sha256/<hex>/link``, a tag's
    ``index/sha256/<hex>/link``, a schema1 signature's) that holds that digest, as the
    registry writes it, shown by the listing's size and an ETag that is the MD5 of
    exactly those bytes (S3's ETag of an object written in one PUT without KMS; MinIO's
    and Ceph's too). Otherwise None, and the file is read: a link holding anything
    else, or an ETag that is not an MD5 (KMS, a multipart upload), is read as before.
    Believing a link that holds something else would take an MD5 collision with
    ``sha256:<hex>``. What is given up (docs/scale.md): a GET that S3 would refuse for
    such a link (an archive storage class, a policy) is not seen, and the listing is
    trusted to be current for these bytes, as for the blobs gc sweeps."""
    if info is None or not info.etag or info.size != len("sha256:") + 64:
        return None
    parts = key.rsplit("/", 3)
    if len(parts) != 4 or parts[1] != "sha256" or parts[3] != layout.LINK:
        return None
    if not is_sha256_hex(parts[2]):
        return None
    content = f"sha256:{parts[2]}".encode()
    if info.etag != '"' + hashlib.md5(content, usedforsecurity=False).hexdigest() + '"':
        return None
    return content


class CachedMarks(NamedTuple):
    """What gc needs of a manifest verified before (``marks_of``)."""

    references: frozenset[Digest]
    """The blobs the registry's garbage-collect marks for it besides its own: what
    ``gomanifest`` lists as its references (an index's manifests, an image's config
    and layers, a schema1 manifest's fsLayers), never its subject."""
    schema1: bool
    """A schema1 manifest, which gc names in a warning where distribution 3 may run."""


def marks_of(refs: ManifestRefs) -> CachedMarks:
    """gc's marks for a readable manifest, from its cached references."""
    return CachedMarks(
        frozenset((*refs.children, *(blob.digest for blob in refs.blobs))),
        refs.kind is ManifestKind.SCHEMA1,
    )
