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
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from regcleaner import layout
from regcleaner.digest import Digest, digest_from_hex, hex_of, is_sha256_hex, parse_digest
from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.manifests import MAX_MANIFEST_BYTES, ManifestInfo, Unreadable, decode_manifest
from regcleaner.model import RepositorySnapshot
from regcleaner.storage.base import ByteStore

# A link file holds a 71-byte digest; anything much longer is garbage.
MAX_LINK_BYTES = 1024
_FOLLOWED = (
    "a symbolic link or special file, which the registry would follow and regcleaner does not"
)
log = logging.getLogger(__name__)


def parse_link(data: bytes) -> Digest:
    """Parse a link file's content; raise ValueError for anything but one digest."""
    if len(data) > MAX_LINK_BYTES:
        raise ValueError(f"link file of {len(data)} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("link file is not ASCII") from None
    return parse_digest(text.strip())


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One blob under ``blobs/``: its digest, size and mtime."""

    digest: Digest
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class RemovalKeys:
    """What removing manifests from one repository deletes: files, then the folders
    they leave empty (deepest first; a store without folders ignores those)."""

    keys: tuple[str, ...]
    directories: tuple[str, ...]


class RegistryView:
    """A registry's storage, in the registry's own terms."""

    def __init__(self, store: ByteStore) -> None:
        self.store = store

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
        with ``_`` are never entered."""
        width = max(1, self.store.listing_concurrency)
        found = frozenset((layout.MANIFESTS_DIR, *markers))
        if width == 1:
            pending = [""]
            while pending:
                relative = pending.pop()
                children, is_repository = await self._list_folder(relative, found)
                if is_repository and relative:
                    await emit(relative)
                pending.extend(sorted(children, reverse=True))
            return
        await self._walk_concurrently(emit, width, found)

    async def _walk_concurrently(
        self, emit: Callable[[str], Awaitable[None]], width: int, found: frozenset[str]
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
                    children, is_repository = await self._list_folder(relative, found)
                    if is_repository and relative:
                        await emit(relative)
                finally:
                    async with changed:
                        pending.extend(sorted(children, reverse=True))
                        busy -= 1
                        changed.notify_all()

        async with asyncio.TaskGroup() as group:
            for _ in range(width):
                group.create_task(lister())

    async def _list_folder(self, relative: str, found: frozenset[str]) -> tuple[list[str], bool]:
        """Sub-folders of ``repositories/<relative>`` to visit, and whether it holds one
        of the ``found`` folders (``_manifests``, ...)."""
        prefix = f"{layout.REPOSITORIES}/{relative}" if relative else layout.REPOSITORIES
        children: list[str] = []
        is_repository = False
        async for page in self.store.list_children(prefix):
            for entry in page:
                if entry.kind == "other":
                    log.warning("%s/%s is a symbolic link or special file: not followed",
                                prefix, entry.name)  # fmt: skip
                elif entry.kind != "dir":
                    continue
                elif entry.name in found:
                    is_repository = True
                elif not entry.name.startswith("_"):
                    children.append(f"{relative}/{entry.name}" if relative else entry.name)
        return children, is_repository

    # -- one repository -------------------------------------------------------------

    async def revision_listing(self, repository: str) -> tuple[dict[Digest, float], dict[str, str]]:
        """Every revision link of ``repository`` with its mtime, and doubts (links the
        registry would follow but a store never does)."""
        revisions: dict[Digest, float] = {}
        doubts: dict[str, str] = {}
        async for page in self.store.list_leaves(layout.revisions_dir(repository), layout.LINK):
            for leaf in page:
                if not is_sha256_hex(leaf.name):
                    continue
                if not leaf.regular:
                    doubts[f"revision:{leaf.name}"] = _FOLLOWED
                    continue
                revisions[Digest("sha256:" + leaf.name)] = leaf.mtime
        return revisions, doubts

    async def snapshot(self, repository: str, *, history: bool = False) -> RepositorySnapshot:
        """Revisions (with mtimes), tags' current links (with push times) and, with
        ``history``, every tag's ``index/`` history and files (and, on an object store,
        the files in revision folders besides their links). On a store with folders,
        the revisions folder's mtime is read first."""
        stamp = await self.revisions_stamp(repository)
        revisions, doubts = await self.revision_listing(repository)
        tags_dir = layout.tags_dir(repository)
        tag_names: list[str] = []
        tag_history: dict[Digest, list[str]] | None = None
        revision_files: dict[Digest, list[str]] | None = None
        tag_files: dict[str, list[str]] | None = None
        if history and not self.store.has_directories:
            # An object store: one flat listing of all tags beats one per tag.
            tag_history, revision_files, tag_files = {}, {}, {}
            seen: set[str] = set()
            async for files in self.store.walk(tags_dir):
                for file in files:
                    tag, _, rest = file.key.partition("/")
                    tag_files.setdefault(tag, []).append(rest)
                    if rest == layout.CURRENT_LINK and tag not in seen:
                        seen.add(tag)
                        tag_names.append(tag)
                    elif rest.startswith("index/sha256/") and rest.endswith("/" + layout.LINK):
                        hex_part = rest[len("index/sha256/") : -len(layout.LINK) - 1]
                        if is_sha256_hex(hex_part):
                            tag_history.setdefault(digest_from_hex(hex_part), []).append(tag)
            async for files in self.store.walk(layout.revisions_dir(repository)):
                for file in files:
                    hex_part, _, rest = file.key.partition("/")
                    if is_sha256_hex(hex_part) and rest and rest != layout.LINK:
                        revision_files.setdefault(digest_from_hex(hex_part), []).append(rest)
        else:
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
                        if is_sha256_hex(hex_part) and rest and rest != layout.LINK:
                            revision_files.setdefault(digest_from_hex(hex_part), []).append(rest)
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
        links = await self.store.read_many(keys, MAX_LINK_BYTES)
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

    async def look(
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
        problems come back as Unreadable."""
        ordered = list(digests)
        found = await self.store.read_many([layout.blob_data(d) for d in ordered],
                                           MAX_MANIFEST_BYTES)  # fmt: skip
        result: dict[Digest, ManifestInfo] = {}
        for digest, blob in zip(ordered, found, strict=True):
            if blob is None:
                result[digest] = Unreadable("manifest blob is missing")
            elif isinstance(blob, StorageError):
                result[digest] = Unreadable(f"cannot read manifest blob: {blob}")
            else:
                result[digest] = decode_manifest(digest, blob.data)
        return result

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
    ) -> list[tuple[str, bytes | StorageError | None]]:
        """Every file named ``link`` below the repository's revisions (schema1
        ``signatures/`` included, as the registry's garbage-collect walks them), with
        its content; keys relative to ``_manifests/revisions/sha256``."""
        base = layout.revisions_dir(repository)
        keys: list[str] = []
        async for files in self.store.walk(base):
            keys += [f.key for f in files if f.key.rsplit("/", 1)[-1] == layout.LINK]
        found = await self.store.read_many([f"{base}/{key}" for key in keys], MAX_LINK_BYTES)
        return [
            (key, blob if blob is None or isinstance(blob, StorageError) else blob.data)
            for key, blob in zip(keys, found, strict=True)
        ]

    async def manifest_bytes(self, digests: Sequence[Digest]) -> list[bytes | StorageError | None]:
        """The raw bytes of each manifest blob (at most the manifest cap + 1)."""
        found = await self.store.read_many([layout.blob_data(d) for d in digests],
                                           MAX_MANIFEST_BYTES)  # fmt: skip
        return [b if b is None or isinstance(b, StorageError) else b.data for b in found]

    async def blob_prefixes(self) -> list[tuple[str, str]]:
        """(algorithm, two-hex-digit folder) pairs under ``blobs/``."""
        pairs: list[tuple[str, str]] = []
        algorithms: list[str] = []
        async for page in self.store.list_children(layout.BLOBS):
            algorithms += [entry.name for entry in page if entry.kind == "dir"]
        for algorithm in sorted(algorithms):
            async for page in self.store.list_children(f"{layout.BLOBS}/{algorithm}"):
                pairs += [(algorithm, e.name) for e in page if e.kind == "dir"]
        return sorted(pairs)

    async def blobs_under(self, algorithm: str, prefix: str) -> tuple[list[BlobInfo], list[str]]:
        """Blobs in one ``blobs/<algorithm>/<prefix>`` folder, and the entries there the
        registry could not take for a blob (it refuses to collect when it meets one)."""
        blobs: list[BlobInfo] = []
        odd: list[str] = []
        folder = f"{layout.BLOBS}/{algorithm}/{prefix}"
        async for page in self.store.list_leaves(folder, layout.DATA):
            for leaf in page:
                name = leaf.name
                if (
                    leaf.regular
                    and name.startswith(prefix)
                    and (is_sha256_hex(name) if algorithm == "sha256" else _is_hex(name))
                ):
                    blobs.append(BlobInfo(Digest(f"{algorithm}:{name}"), leaf.size, leaf.mtime))
                else:
                    odd.append(f"{folder}/{name}")
        return blobs, odd

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


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def _folders_below(folder: str, files: Iterable[str]) -> list[str]:
    """Every folder between ``folder`` and the given files (relative to it), deepest
    first, so that removing them in order empties each before its parent."""
    below: set[str] = set()
    for name in files:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            below.add("/".join(parts[:depth]))
    return [f"{folder}/{name}" for name in sorted(below, key=lambda n: -n.count("/"))]
