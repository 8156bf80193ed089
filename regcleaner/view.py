"""The registry view: distribution's storage layout read (and, in a maintenance window,
written) through any byte store. The only place besides ``layout.py`` that knows the
registry's paths.

It gives repositories, repository snapshots, verified manifests, revision mtimes, tag
push times, blobs, and the keys that make up a manifest in a repository (for direct
removal). Problems with one manifest or tag come back as values (``Unreadable``, a
broken tag, a doubt), so that the planner keeps what they might protect; problems with
a whole listing raise ``StorageError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass

from regcleaner import layout
from regcleaner.cachedreads import MAX_LINK_BYTES, CachedMarks, CachedReads
from regcleaner.digest import Digest, digest_from_hex, hex_of, is_sha256_hex, parse_digest
from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.manifests import (
    MAX_MANIFEST_BYTES,
    ManifestInfo,
)
from regcleaner.scancache import ScanCache
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.storage.base import ByteStore, EntryKind, FileInfo, RollingUpStore

_FOLLOWED = (
    "a symbolic link or special file, which the registry would follow and regcleaner does not"
)
log = logging.getLogger(__name__)


def parse_link(data: bytes) -> Digest:
    """Parse a link file's content; raise ValueError for anything but one digest.

    Nothing is trimmed: the registry reads a link as it is (blobstore.readlink), so a
    link with a newline or a space is as unreadable to it (500 when serving, a failed
    garbage-collect) as to regcleaner."""
    if len(data) > MAX_LINK_BYTES:
        raise ValueError(f"link file of {len(data)} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("link file is not ASCII") from None
    return parse_digest(text)


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One blob under ``blobs/``: its digest, size and mtime."""

    digest: Digest
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class StrayEntry:
    """Something found where the registry's garbage-collect would act on it in a way
    regcleaner cannot follow: the key, and why."""

    key: str
    why: str

    def __str__(self) -> str:
        return f"{self.key}: {self.why}"


NOT_A_BLOB = (
    "a file named data where no blob's data can be (the registry's garbage-collect fails "
    "on it, or takes it for a blob whose folder it then cannot remove)"
)
LINK_FOLLOWED_BY_GC = (
    "a symbolic link or special file: the registry's garbage-collect follows it, "
    "regcleaner follows no links"
)


@dataclass(frozen=True, slots=True)
class RemovalKeys:
    """What removing manifests from one repository deletes: files, then the folders
    they leave empty (deepest first; a store without folders ignores those)."""

    keys: tuple[str, ...]
    directories: tuple[str, ...]


ROLL_UP = f"/{layout.LAYERS_DIR}/"
"""Where the flat listing of ``repositories/`` rolls keys up: each repository's layer
links (most of its keys) come as one entry."""
_MANIFESTS_PART = f"/{layout.MANIFESTS_DIR}/"
FOLDERS_A_RANGE = 50
"""The flat listing is split into ranges of at least this many top-level folders (each
range costs a page more: it reads into the next to see where it ends)."""
MAX_PRELISTED_KEYS = 20_000
"""A repository whose ``_manifests/`` holds more keys than this in the flat listing is
listed again by its own snapshot: what the pipeline holds for repositories waiting to
be planned stays bounded."""


@dataclass(frozen=True, slots=True)
class ManifestKeys:
    """A repository's ``_manifests/`` keys from the flat listing of ``repositories/``
    (each ``key[strip:]`` relative to ``_manifests/``, as a walk of it gives them), and
    when the request that first showed them was sent (``time.monotonic()``): the
    snapshot made from them is as old as that."""

    files: list[FileInfo]
    listed_at: float
    strip: int = 0


_PLAIN_TOP = re.compile(r"[a-z0-9][a-z0-9._-]*/")
_NOT_S3_ORDER = "the store does not list keys in S3's order (UTF-8 binary)"


def _keys(files: list[FileInfo] | None, listed_at: float, inside: str) -> ManifestKeys | None:
    return None if files is None else ManifestKeys(files, listed_at, len(inside))


def _ascending(keys: list[str], rolled: list[str], previous: str | None) -> str | None:
    """The greatest of a page's ``keys`` and ``rolled`` prefixes, once each list is seen
    to ascend strictly, and both to begin above ``previous`` (the greatest before);
    StorageError otherwise."""
    greatest = previous
    for entries in (keys, rolled):
        if not entries:
            continue
        if not (
            (previous is None or previous < entries[0])
            and all(map(operator.lt, entries, itertools.islice(entries, 1, None)))
        ):
            pairs = zip([previous, *entries], entries, strict=False)
            last, entry = next((a, b) for a, b in pairs if a is not None and b <= a)
            raise StorageError(
                f"listing {layout.REPOSITORIES}: {entry!r} came after {last!r}: {_NOT_S3_ORDER}"
            )
        if greatest is None or entries[-1] > greatest:
            greatest = entries[-1]
    return greatest


def _repository_of(relative: str) -> str | None:
    """The repository whose ``_manifests/`` holds ``relative`` (a key relative to
    ``repositories/``), as the folder-by-folder walk would find it: the part before
    the first ``/_manifests/``, if no folder on the way is empty or starts with ``_``
    (the walk never enters those)."""
    at = relative.find(_MANIFESTS_PART)
    if at <= 0:
        return None
    name = relative[:at]
    if any(not part or part[0] == "_" for part in name.split("/")):
        return None
    return name


def _note_revision_link(
    name: str, regular: bool, mtime: float, revisions: dict[Digest, float],
    doubts: dict[str, str],
) -> None:  # fmt: skip
    """The link of revision folder ``revisions/sha256/<name>``: a revision when ``name``
    is a sha256 hex digest, a doubt when the link is not a regular file (the registry
    would follow it; no store does)."""
    if not is_sha256_hex(name):
        return
    if not regular:
        doubts[f"revision:{name}"] = _FOLLOWED
        return
    revisions[Digest("sha256:" + name)] = mtime


def _note_revision_file(name: str, rest: str, revision_files: dict[Digest, list[str]]) -> None:
    """A file ``rest`` in revision folder ``revisions/sha256/<name>`` other than its
    link (a schema1 signature's)."""
    if rest and rest != layout.LINK and is_sha256_hex(name):
        revision_files.setdefault(digest_from_hex(name), []).append(rest)


class RegistryView:
    """A registry's storage, in the registry's own terms.

    With a ``cache`` (``regcleaner.scancache``), what a fresh listing or HEAD shows
    unchanged since it was read is taken from the cache instead of read again: tag and
    revision links whose listing carries the same validator, and manifests whose blob's
    HEAD (a stat on a disk) does (``reads``: ``regcleaner.cachedreads``). Everything
    else is read as without a cache; the checks right before a deletion
    (``recheck_before_delete``, ``revision_mtime``, ``tag_links``) never use it."""

    def __init__(self, store: ByteStore, cache: ScanCache | None = None) -> None:
        self.store = store
        self.cache = cache
        self.reads = CachedReads(store, cache)

    def describe(self) -> str:
        """Where the storage is (no secrets)."""
        return self.store.describe()

    async def check(self) -> None:
        """Raise StorageSetupError unless the root holds distribution's layout."""
        await self.store.check()
        async with contextlib.aclosing(self.store.list_children(layout.V2_ROOT)) as pages:
            async for page in pages:
                if any(entry.kind == "dir" for entry in page):
                    return
        raise StorageSetupError(
            f"no registry storage under {self.store.describe()}: expected {layout.V2_ROOT}/ "
            "(point --registry-dir at the registry's rootdirectory)"
        )

    # -- repositories ---------------------------------------------------------------

    async def repositories(
        self, emit: Callable[[str], Awaitable[None]], *, markers: tuple[str, ...] = ()
    ) -> None:
        """Call ``emit`` with every folder below ``repositories/`` that holds
        ``_manifests`` (or one of ``markers``, e.g. ``_layers``), walking one folder per
        listing (several at once on a store that benefits). Folders whose name starts
        with ``_`` are never entered; symbolic links are not followed (a warning)."""

        async def folders(name: str, found: Mapping[str, EntryKind]) -> None:
            if name and "dir" in found.values():
                await emit(name)

        await self.repository_folders(folders, markers=markers)

    async def repository_folders(
        self,
        emit: Callable[[str, Mapping[str, EntryKind]], Awaitable[None]],
        *,
        markers: tuple[str, ...] = (),
        other: Callable[[str], None] | None = None,
    ) -> None:
        """Call ``emit`` with every folder below ``repositories/`` (``""`` for that
        folder itself) that holds an entry named ``_manifests`` or one of ``markers``,
        and what kind each of those entries is (a file named ``_layers`` makes a
        repository for the registry's garbage-collect, too). ``other`` is told the key
        of each symbolic link or special file met (by default, a warning)."""
        width = max(1, self.store.listing_concurrency)
        found = frozenset((layout.MANIFESTS_DIR, *markers))
        if other is None:
            other = _warn_not_followed
        if width == 1:
            pending = [""]
            while pending:
                relative = pending.pop()
                children, here = await self._list_folder(relative, found, other)
                if here:
                    await emit(relative, here)
                pending.extend(sorted(children, reverse=True))
            return
        await self._walk_concurrently(emit, width, found, other)

    async def _walk_concurrently(
        self,
        emit: Callable[[str, Mapping[str, EntryKind]], Awaitable[None]],
        width: int,
        found: frozenset[str],
        other: Callable[[str], None],
    ) -> None:
        pending = [""]
        busy = 0
        changed = asyncio.Condition()

        async def lister() -> None:
            nonlocal busy
            while True:
                async with changed:
                    while not pending and busy:
                        await changed.wait()
                    if not pending:
                        return  # nothing left, nobody listing who could add more
                    relative = pending.pop()
                    busy += 1
                children: list[str] = []
                try:
                    children, here = await self._list_folder(relative, found, other)
                    if here:
                        await emit(relative, here)
                finally:
                    async with changed:
                        pending.extend(sorted(children, reverse=True))
                        busy -= 1
                        changed.notify_all()

        async with asyncio.TaskGroup() as group:
            for _ in range(width):
                group.create_task(lister())

    async def _list_folder(
        self, relative: str, found: frozenset[str], other: Callable[[str], None]
    ) -> tuple[list[str], dict[str, EntryKind]]:
        """Sub-folders of ``repositories/<relative>`` to visit, and which of the
        ``found`` names (``_manifests``, ...) it holds, with their kinds."""
        prefix = f"{layout.REPOSITORIES}/{relative}" if relative else layout.REPOSITORIES
        children: list[str] = []
        here: dict[str, EntryKind] = {}
        async for page in self.store.list_children(prefix):
            for entry in page:
                if entry.kind == "other":
                    other(f"{prefix}/{entry.name}")
                elif entry.name in found:
                    if here.get(entry.name) != "dir":  # on S3 a key can be both
                        here[entry.name] = entry.kind
                elif entry.kind == "dir" and not entry.name.startswith("_"):
                    children.append(f"{relative}/{entry.name}" if relative else entry.name)
        return children, here

    async def repository_listings(
        self,
        emit: Callable[[str, ManifestKeys | None], Awaitable[None]],
        wanted: Callable[[str], bool] = lambda _: True,
    ) -> None:
        """``repositories``, each repository with its ``_manifests/`` keys where one
        flat listing of ``repositories/`` can give them: on an object store whose
        listing rolls up at ``ROLL_UP`` (S3), every ``_manifests/`` key in full pages
        with each repository's layer links as one entry, in place of a listing of every
        folder and a walk of every ``_manifests/`` (about one request a repository
        each). The top-level folders are listed first and split into ranges listed side
        by side (``listing_concurrency``). ``None`` where the snapshot must list the
        repository itself: on a disk, and for a repository whose ``_manifests/`` holds
        something rolled up or more than ``MAX_PRELISTED_KEYS`` keys, and for one not
        ``wanted`` (its keys are not kept)."""
        emitted: set[str] = set()

        async def unlisted(name: str) -> None:  # the folder walk: no keys, none twice
            if name not in emitted:
                await emit(name, None)

        store = self.store
        if store.has_directories or not isinstance(store, RollingUpStore):
            await self.repositories(unlisted)
            return
        tops: list[str] = []
        async for page in store.list_children(layout.REPOSITORIES):
            tops += [entry.name + "/" for entry in page if entry.kind == "dir"]
        # A folder's keys all sort between two others' (``name/`` is never a prefix of
        # another ``name/``), so ranges bounded by ``name/`` split no repository.
        tops.sort()
        # Bounds among plain names only: a StartAfter of odd characters is where S3's
        # imitations differ most (moto answers 500 to one holding U+FFFF).
        simple = [top for top in tops if _PLAIN_TOP.fullmatch(top)]
        count = max(1, min(store.listing_concurrency, len(simple) // FOLDERS_A_RANGE))
        bounds = [simple[len(simple) * i // count] for i in range(1, count)]
        lows: list[str | None] = [None, *bounds]
        highs: list[str | None] = [*bounds, None]

        async def noted(name: str, keys: ManifestKeys | None) -> None:
            await emit(name, keys)
            emitted.add(name)  # not if the emit was cancelled: the walk below gives it

        try:
            async with asyncio.TaskGroup() as group:
                for low, high in zip(lows, highs, strict=True):
                    expected = {
                        top for top in tops
                        if (low is None or top >= low) and (high is None or top < high)
                    }  # fmt: skip
                    group.create_task(self._list_range(store, low, high, noted, wanted, expected))
        except* StorageError as failed:
            # Not every S3 imitation takes a delimiter of several characters (MinIO
            # repeats a continuation token; others answer 400 or 501) or lists in S3's
            # order. Each repository handed on so far was listed whole, in order; the
            # rest is found folder by folder, which needs neither.
            log.warning(
                "the flat listing of %s failed (%s); listing it folder by folder instead "
                "(%d repositories already read)",
                layout.REPOSITORIES, failed.exceptions[0], len(emitted),
            )  # fmt: skip
            await self.repositories(unlisted)

    async def _list_range(
        self,
        store: RollingUpStore,
        low: str | None,
        high: str | None,
        emit: Callable[[str, ManifestKeys | None], Awaitable[None]],
        wanted: Callable[[str], bool],
        expected: set[str],
    ) -> None:
        """The repositories whose keys (relative to ``repositories/``) sort from
        ``low`` (None: the first) to before ``high`` (None: the last), from one
        listing rolled up at ``ROLL_UP``.

        Grouping keys by repository, and the ranges' bounds, rely on S3's order (UTF-8
        binary, which is Python's order of ``str``): a page out of that order, or a
        top-level folder of the range (``expected``) the listing never showed though it
        still holds keys, raises a StorageError (a store that lists otherwise, e.g.
        folder by folder, would have a repository skipped)."""
        name: str | None = None  # the repository whose _manifests/ the listing is in
        inside = ""  # its _manifests/, relative to repositories/
        files: list[FileInfo] | None = None
        listed_at = 0.0
        # "a/" itself is no repository's key; what sorts before it ("a-b/...") is the
        # range before (and skipped below, should a store give it)
        after = low or ""
        previous: str | None = low  # the greatest entry so far
        top = "/"  # the top-level folder the listing is in
        seen: set[str] = set()
        pages = store.walk_rolling_up(layout.REPOSITORIES, ROLL_UP, start_after=after)
        async with contextlib.aclosing(pages):
            while True:
                sent = time.monotonic()
                page = await anext(pages, None)
                if page is None:
                    break
                found, rolled = page
                entries: list[tuple[str, FileInfo | None]] = [(f.key, f) for f in found]
                previous = _ascending([key for key, _ in entries], rolled, previous)
                if rolled:
                    entries += [(prefix, None) for prefix in rolled]
                    entries.sort(key=lambda entry: entry[0])
                for key, file in entries:
                    if high is not None and key >= high:
                        break
                    if low is not None and key < low:
                        continue
                    if not key.startswith(top) and (slash := key.find("/")) >= 0:
                        top = key[: slash + 1]
                        seen.add(top)
                    if name is not None and key.startswith(inside):
                        if files is not None:
                            if file is None or len(files) >= MAX_PRELISTED_KEYS:
                                files = None
                            else:
                                files.append(file)
                        continue
                    if name is not None:
                        await emit(name, _keys(files, listed_at, inside))
                        name = None
                    repository = _repository_of(key)
                    if repository is None:
                        continue
                    name, inside, listed_at = repository, repository + _MANIFESTS_PART, sent
                    files = None
                    if file is not None and wanted(repository):
                        files = [file]
                else:
                    continue
                break  # past the range
        if name is not None:
            await emit(name, _keys(files, listed_at, inside))
        for missing in sorted(expected - seen):  # "name/"
            folder = f"{layout.REPOSITORIES}/{missing[:-1]}"
            async for children in self.store.list_children(folder):
                if children:  # not removed since it was listed
                    raise StorageError(
                        f"listing {layout.REPOSITORIES}: {missing} holds keys, but the "
                        f"listing of its range never showed them: {_NOT_S3_ORDER}"
                    )

    # -- one repository -------------------------------------------------------------

    async def revision_listing(self, repository: str) -> tuple[dict[Digest, float], dict[str, str]]:
        """Every revision link of ``repository`` with its mtime, and doubts (links the
        registry would follow but a store never does)."""
        revisions: dict[Digest, float] = {}
        doubts: dict[str, str] = {}
        async for page in self.store.list_leaves(layout.revisions_dir(repository), layout.LINK):
            for leaf in page:
                _note_revision_link(leaf.name, leaf.regular, leaf.mtime, revisions, doubts)
        return revisions, doubts

    @staticmethod
    def _note_revision_key(
        rest: str,
        file: FileInfo,
        revisions: dict[Digest, float],
        doubts: dict[str, str],
        revision_files: dict[Digest, list[str]] | None,
    ) -> None:
        """One key below ``_manifests/revisions/`` (``rest``: the part after it), read as
        ``revision_listing`` reads its listing's leaves and, with ``revision_files``, as
        the walk of revision folders reads the other files in them."""
        algorithm, _, below = rest.partition("/")
        if algorithm != "sha256":
            return  # below revisions/sha256 only, as revision_listing lists
        name, _, tail = below.partition("/")
        if tail == layout.LINK:
            _note_revision_link(name, file.regular, file.mtime, revisions, doubts)
        elif revision_files is not None:
            _note_revision_file(name, tail, revision_files)

    async def snapshot(
        self, repository: str, *, history: bool = False, prelisted: ManifestKeys | None = None
    ) -> RepositorySnapshot:
        """Revisions (with mtimes), tags' current links (with push times) and, with
        ``history``, every tag's ``index/`` history and files (and, on an object store,
        the files in revision folders besides their links). On a store with folders,
        the revisions folder's mtime is read first. ``prelisted``: the repository's
        ``_manifests/`` keys from ``repository_listings``, read as a walk of it."""
        stamp = await self.revisions_stamp(repository)
        tags_dir = layout.tags_dir(repository)
        tag_names: list[str] = []
        tag_history: dict[Digest, list[str]] | None = None
        revision_files: dict[Digest, list[str]] | None = None
        tag_files: dict[str, list[str]] | None = None
        # What a listing said about each tag's current/link (validator for the cache).
        listed: dict[str, FileInfo] = {}
        revisions: dict[Digest, float] = {}
        doubts: dict[str, str] = {}
        if prelisted is not None or (
            not self.store.has_directories and (history or self.cache is not None)
        ):
            # An object store, where a listing is flat and carries each key's validator:
            # one walk of _manifests/ gives the revision links, the tags' current links
            # (with their ETags, for the cache) and, with ``history``, every tag's
            # index/ history and the files in revision folders. Separate listings of
            # revisions/ and tags/ (and of revisions/ again for its files) would list
            # the same keys in two or three requests instead of one.
            if history:
                tag_history, revision_files, tag_files = {}, {}, {}
            pages = (
                self.store.walk(layout.manifests_dir(repository))
                if prelisted is None
                else _one_page(prelisted.files)
            )
            strip = 0 if prelisted is None else prelisted.strip
            async for files in pages:
                for file in files:
                    top, _, rest = file.key[strip:].partition("/")
                    if top == "revisions":
                        self._note_revision_key(rest, file, revisions, doubts, revision_files)
                    elif top == "tags":
                        tag, _, below = rest.partition("/")
                        if tag_files is not None:
                            tag_files.setdefault(tag, []).append(below)
                        if below == layout.CURRENT_LINK and tag not in listed:
                            listed[tag] = file
                            tag_names.append(tag)
                        elif tag_history is not None and below.startswith("index/sha256/"):
                            hex_part, _, tail = below[len("index/sha256/") :].partition("/")
                            if tail == layout.LINK and is_sha256_hex(hex_part):
                                tag_history.setdefault(digest_from_hex(hex_part), []).append(tag)
        else:
            revisions, doubts = await self.revision_listing(repository)
            async for page in self.store.list_children(tags_dir):
                for entry in page:
                    if entry.kind == "dir":
                        tag_names.append(entry.name)
                    elif entry.kind == "other":
                        doubts[f"tag:{entry.name}"] = _FOLLOWED
            if history:
                # A disk: one listing of each tag's history folder (a walk would list
                # every level of it), and a walk of the revision folders for what else
                # they hold (schema1 signatures).
                tag_history, revision_files, tag_files = {}, {}, {}
                async for walked in self.store.walk(layout.revisions_dir(repository)):
                    for info in walked:
                        hex_part, _, rest = info.key.partition("/")
                        _note_revision_file(hex_part, rest, revision_files)
                for tag in tag_names:
                    names = [layout.CURRENT_LINK]
                    history_dir = f"{tags_dir}/{tag}/index/sha256"
                    async for leaves in self.store.list_leaves(history_dir, layout.LINK):
                        for leaf in leaves:
                            if not leaf.regular:
                                doubts[f"tag:{tag}"] = f"index/sha256/{leaf.name}: {_FOLLOWED}"
                            elif is_sha256_hex(leaf.name):
                                names.append(f"index/sha256/{leaf.name}/{layout.LINK}")
                                digest = digest_from_hex(leaf.name)
                                tag_history.setdefault(digest, []).append(tag)
                    tag_files[tag] = names
        keys = [f"{tags_dir}/{tag}/{layout.CURRENT_LINK}" for tag in tag_names]
        links = await self.reads.links(keys, [listed.get(tag) for tag in tag_names])
        tags: dict[str, Digest] = {}
        tag_times: dict[str, float] = {}
        broken: dict[str, str] = {}
        for tag, found in zip(tag_names, links, strict=True):
            if found is None:
                continue  # a tag folder without current/link is no tag
            if isinstance(found, StorageError):
                broken[tag] = f"unreadable current link: {found}"
                continue
            try:
                tags[tag] = parse_link(found.data)
            except ValueError as exc:
                broken[tag] = f"unreadable current link: {exc}"
                continue
            tag_times[tag] = found.mtime
        return RepositorySnapshot(
            repository,
            revisions,
            tags,
            broken,
            tag_times,
            doubts,
            None if tag_history is None else {d: tuple(t) for d, t in tag_history.items()},
            None if revision_files is None else {d: tuple(f) for d, f in revision_files.items()},
            None if tag_files is None else {t: tuple(f) for t, f in tag_files.items()},
            stamp,
        )

    async def revision_mtime(self, repository: str, digest: Digest) -> float | None:
        """The revision link's mtime now (None if gone): a push of the manifest since
        the snapshot rewrites it."""
        found = await self.store.stat(layout.revision_link(repository, digest))
        return None if found is None else found.mtime

    async def recheck_before_delete(
        self, repository: str, digest: Digest, parents: Sequence[Digest]
    ) -> tuple[float | None, bool, float | None]:
        """Right before a DELETE, in one batch: the revision link's mtime (None if
        gone), whether any of ``parents`` has a revision link again, and the revisions
        folder's mtime (None on a store without folders)."""
        base = layout.revisions_dir(repository)
        keys = [f"{base}/{hex_of(digest)}/{layout.LINK}"]
        keys += [f"{base}/{hex_of(parent)}/{layout.LINK}" for parent in parents]
        folders = self.store.has_directories
        if folders:
            keys.append(base)
        found = await self.store.stat_many(keys)
        link = found[0]
        parent_back = any(found[1 : 1 + len(parents)])
        stamp = found[-1] if folders else None
        return (
            None if link is None else link.mtime,
            parent_back,
            None if stamp is None else stamp.mtime,
        )

    async def revisions_stamp(self, repository: str) -> float | None:
        """The revisions folder's mtime, which changes when a revision folder is added
        or removed; None on a store without folders (nothing to look at cheaply)."""
        if not self.store.has_directories:
            return None
        found = await self.store.stat(layout.revisions_dir(repository))
        return None if found is None else found.mtime

    async def tag_links(
        self, repository: str, tags: Sequence[str]
    ) -> list[Digest | StorageError | None]:
        """The digest each tag points at now: None if the tag is gone, StorageError if
        its link cannot be read or holds garbage."""
        keys = [layout.tag_current_link(repository, tag) for tag in tags]
        found = await self.store.read_many(keys, MAX_LINK_BYTES)
        result: list[Digest | StorageError | None] = []
        for tag, blob in zip(tags, found, strict=True):
            if blob is None or isinstance(blob, StorageError):
                result.append(blob)
                continue
            try:
                result.append(parse_link(blob.data))
            except ValueError as exc:
                problem = f"tag {tag} of {repository}: unreadable current link: {exc}"
                result.append(StorageError(problem))
        return result

    async def read_manifests(self, digests: Collection[Digest]) -> dict[Digest, ManifestInfo]:
        """Parse the manifest JSON of each digest after checking it hashes to the digest;
        problems come back as Unreadable. With a cache, what it verified before and is
        unchanged is taken from it (``CachedReads.manifests``)."""
        return await self.reads.manifests(digests)

    async def manifest_marks(
        self, digests: Sequence[Digest]
    ) -> list[CachedMarks | bytes | StorageError | None]:
        """For blob collection: what garbage-collect marks for each manifest (from the
        cache, when unchanged), or its bytes (``CachedReads.manifest_marks``)."""
        return await self.reads.manifest_marks(digests)

    # -- writing (maintenance window only) -------------------------------------------

    @staticmethod
    def removal_keys(snapshot: RepositorySnapshot, digests: Iterable[Digest]) -> RemovalKeys:
        """The files that make ``digests`` manifests of the snapshot's repository: each
        revision folder and each tag-history entry for it, as the registry's
        ``garbage-collect --delete-untagged`` removes them. The snapshot must have been
        taken with ``history``."""
        if snapshot.tag_history is None or snapshot.revision_files is None:
            raise ValueError("removal needs a snapshot taken with history=True")
        repository = snapshot.name
        keys: list[str] = []
        directories: list[str] = []
        for digest in digests:
            for tag in snapshot.tag_history.get(digest, ()):
                entry = layout.tag_history_entry(repository, tag, digest)
                keys.append(f"{entry}/{layout.LINK}")
                directories.append(entry)
            folder = layout.revision_dir(repository, digest)
            extra = snapshot.revision_files.get(digest, ())
            keys += [f"{folder}/{name}" for name in extra]
            keys.append(f"{folder}/{layout.LINK}")  # last: while it stays, the manifest stays
            directories += _folders_below(folder, extra)
            directories.append(folder)
        return RemovalKeys(tuple(keys), tuple(directories))

    @staticmethod
    def tag_removal_keys(snapshot: RepositorySnapshot, tag: str) -> RemovalKeys:
        """A tag's whole folder (``current/link`` and its ``index/`` history), as the
        registry's own untag removes it. The snapshot must have been taken with
        ``history``."""
        if snapshot.tag_files is None:
            raise ValueError("removing a tag needs a snapshot taken with history=True")
        folder = layout.tag_dir(snapshot.name, tag)
        files = snapshot.tag_files.get(tag, ())
        return RemovalKeys(
            tuple(f"{folder}/{name}" for name in files),
            (*_folders_below(folder, files), folder),
        )

    # -- for blob collection ----------------------------------------------------------

    async def revision_link_files(
        self, repository: str
    ) -> tuple[list[tuple[str, bytes | StorageError | None]], list[StrayEntry]]:
        """Every file named ``link`` below the repository's ``_manifests/revisions``
        (every algorithm folder, schema1 ``signatures/`` included, as the registry's
        garbage-collect walks them), with its content, keys relative to that folder;
        and the keys of the symbolic links and special files met there (the registry's
        disk driver follows them; no store does)."""
        base = layout.all_revisions_dir(repository)
        keys: list[str] = []
        listed: list[FileInfo | None] = []
        odd: list[StrayEntry] = []
        async for files in self.store.walk(base):
            for file in files:
                if not file.regular:
                    odd.append(StrayEntry(f"{base}/{file.key}", LINK_FOLLOWED_BY_GC))
                elif file.key.rsplit("/", 1)[-1] == layout.LINK:
                    keys.append(file.key)
                    listed.append(file)
        found = await self.reads.links([f"{base}/{key}" for key in keys], listed)
        links = [
            (key, blob if blob is None or isinstance(blob, StorageError) else blob.data)
            for key, blob in zip(keys, found, strict=True)
        ]
        return links, odd

    async def manifest_bytes(self, digests: Sequence[Digest]) -> list[bytes | StorageError | None]:
        """The raw bytes of each manifest blob (at most the manifest cap + 1)."""
        found = await self.store.read_many([layout.blob_data(d) for d in digests],
                                           MAX_MANIFEST_BYTES)  # fmt: skip
        return [b if b is None or isinstance(b, StorageError) else b.data for b in found]

    async def layer_links(self, repository: str) -> list[str]:
        """The hex digests of the blobs linked into a repository (``_layers``)."""
        names: list[str] = []
        async for page in self.store.list_leaves(layout.layers_dir(repository), layout.LINK):
            names += [leaf.name for leaf in page]
        return names

    async def uploads(self, repository: str) -> list[tuple[str, bytes | StorageError | None]]:
        """Each unfinished upload's id and its ``startedat`` content."""
        ids: list[str] = []
        async for page in self.store.list_children(layout.uploads_dir(repository)):
            ids += [entry.name for entry in page if entry.kind == "dir"]
        base = layout.uploads_dir(repository)
        found = await self.store.read_many([f"{base}/{i}/startedat" for i in ids], 1024)
        return [
            (upload, b if b is None or isinstance(b, StorageError) else b.data)
            for upload, b in zip(ids, found, strict=True)
        ]

    async def upload_removal_keys(self, repository: str, upload: str) -> RemovalKeys:
        """Every file of one unfinished upload, and its folders deepest first."""
        folder = f"{layout.uploads_dir(repository)}/{upload}"
        files: list[str] = []
        async for page in self.store.walk(folder):
            files += [f.key for f in page]
        return RemovalKeys(
            tuple(f"{folder}/{name}" for name in files),
            (*_folders_below(folder, files), folder),
        )

    @staticmethod
    def layer_link_removal_keys(repository: str, hexes: Iterable[str]) -> RemovalKeys:
        """A repository's ``_layers`` links for these blobs, and their folders."""
        base = layout.layers_dir(repository)
        return RemovalKeys(
            tuple(f"{base}/{h}/{layout.LINK}" for h in hexes),
            tuple(f"{base}/{h}" for h in hexes),
        )

    @staticmethod
    def blob_removal_keys(digests: Iterable[Digest]) -> RemovalKeys:
        """Each blob's data and its folder (``blobs/<algorithm>/<hex[:2]>/<hex>``)."""
        keys: list[str] = []
        directories: list[str] = []
        for digest in digests:
            algorithm, _, hex_part = digest.partition(":")
            folder = f"{layout.BLOBS}/{algorithm}/{hex_part[:2]}/{hex_part}"
            keys.append(f"{folder}/{layout.DATA}")
            directories.append(folder)
        return RemovalKeys(tuple(keys), tuple(directories))


async def _one_page(files: list[FileInfo]) -> AsyncIterator[list[FileInfo]]:
    yield files


def _warn_not_followed(key: str) -> None:
    log.warning("%s is a symbolic link or special file: not followed", key)


def _folders_below(folder: str, files: Iterable[str]) -> list[str]:
    """Every folder between ``folder`` and the given files (relative to it), deepest
    first, so that removing them in order empties each before its parent."""
    below: set[str] = set()
    for name in files:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            below.add("/".join(parts[:depth]))
    return [f"{folder}/{name}" for name in sorted(below, key=lambda n: -n.count("/"))]
