"""The Storage protocol both backends implement, and helpers they share."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection
from typing import Protocol

from regcleaner.digest import Digest, parse_digest
from regcleaner.errors import ManifestError
from regcleaner.manifests import MAX_MANIFEST_BYTES, parse_manifest
from regcleaner.planner import ManifestInfo, RepositorySnapshot, Unreadable

# A link file holds a 71-byte digest; anything much longer is garbage.
MAX_LINK_BYTES = 1024


class Storage(Protocol):
    """Read-only view of a registry's storage; regcleaner never writes through it."""

    def describe(self) -> str:
        """Where this storage is, for logs and reports (no secrets)."""
        ...

    async def check(self) -> None:
        """Raise StorageError unless the storage root looks like a registry's."""
        ...

    def list_repositories(self) -> AsyncIterator[str]:
        """Every directory that holds ``_manifests``, as a repository name."""
        ...

    async def snapshot(self, repository: str) -> RepositorySnapshot:
        """Revisions (with mtimes) and tags' current links of one repository."""
        ...

    async def read_manifests(self, digests: Collection[Digest]) -> dict[Digest, ManifestInfo]:
        """Parse the manifest JSON of each digest; problems come back as Unreadable."""
        ...

    async def revision_mtime(self, repository: str, digest: Digest) -> float | None:
        """The revision link's mtime now (None if gone): a push since the snapshot
        rewrites it, which is how a re-tag just before a DELETE is caught."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


def parse_link(data: bytes) -> Digest:
    """Parse a link file's content; raise ValueError for anything but one digest."""
    if len(data) > MAX_LINK_BYTES:
        raise ValueError(f"link file of {len(data)} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("link file is not ASCII") from None
    return parse_digest(text.strip())


def decode_manifest(digest: Digest, data: bytes) -> ManifestInfo:
    """Check that ``data`` hashes to ``digest`` and parse it; Unreadable on any problem."""
    if len(data) > MAX_MANIFEST_BYTES:
        return Unreadable(f"blob larger than {MAX_MANIFEST_BYTES} bytes")
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        return Unreadable("blob content does not match its digest")
    try:
        return parse_manifest(data)
    except ManifestError as exc:
        return Unreadable(str(exc))
