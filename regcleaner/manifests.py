"""Pure: manifest bytes → what the manifest references, defined once for the planner,
the space estimate and blob collection.

The bytes are read as the registry reads them (``regcleaner.gomanifest``): a manifest
the registry reads one way is never read another way here. Its kind is the registry's
(schemaVersion, then mediaType; without mediaType, an index when ``manifests`` is
there, else an OCI image). Anything the registry would fail on, and any reference that
is not a sha256 digest, is a ManifestError, and the caller keeps the manifest and
everything beside it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from regcleaner import gomanifest, mediatypes
from regcleaner.digest import Digest, parse_digest
from regcleaner.errors import ManifestError

# distribution v3 refuses manifests above 4 MiB; nothing legitimate is near it.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class ManifestKind(Enum):
    """What role a manifest plays in the reachability graph."""

    INDEX = "index"
    IMAGE = "image"
    SCHEMA1 = "schema1"


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A blob a manifest references, with its declared size (0 when none is given)."""

    digest: Digest
    size: int = 0


@dataclass(frozen=True, slots=True)
class ManifestRefs:
    """What one manifest references: other manifests (an index's children, an
    artifact's subject) and blobs (config and layers)."""

    kind: ManifestKind
    media_type: str
    children: tuple[Digest, ...] = ()
    subject: Digest | None = None
    blobs: tuple[Descriptor, ...] = ()
    size: int = 0
    """Bytes of the manifest JSON itself (it is a blob too)."""

    @property
    def references(self) -> tuple[Digest, ...]:
        """The manifests this one points at: children first, then the subject. What
        points goes before what it points at when deleting, and keeping this manifest
        keeps its children (a subject is kept by nothing but its own reasons)."""
        return self.children + ((self.subject,) if self.subject is not None else ())


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A manifest whose bytes could not be read or understood."""

    problem: str


ManifestInfo = ManifestRefs | Unreadable


def references_of(info: ManifestInfo | None) -> tuple[Digest, ...]:
    """The manifests ``info`` points at (nothing for an unreadable one)."""
    return info.references if isinstance(info, ManifestRefs) else ()


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
    except Exception as exc:  # a bug reading one manifest keeps it (and its repository)
        return Unreadable(f"internal error reading it: {type(exc).__name__}: {exc}")


def _digest(value: str, label: str) -> Digest:
    if not value:
        raise ManifestError(f"{label} has no digest")
    try:
        return parse_digest(value)
    except ValueError as exc:
        raise ManifestError(f"{label}: {exc}") from None


def parse_manifest(data: bytes) -> ManifestRefs:
    """Read manifest JSON exactly as the registry does (``regcleaner.gomanifest``: Go's
    ``encoding/json`` field matching, duplicate keys, types, and distribution 2.8's
    choice of manifest kind); raise ManifestError where the registry would fail, and
    where a reference is not a sha256 digest."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(data)} bytes, above the {MAX_MANIFEST_BYTES} cap")
    try:
        found = gomanifest.decode_manifest(data)
    except gomanifest.GoManifestError as exc:
        raise ManifestError(str(exc)) from None
    subject = None
    if found.subject is not None:
        subject = _digest(found.subject.digest, "subject")
    if found.kind == "index":
        children = tuple(
            _digest(entry.digest, f"manifests[{i}]") for i, entry in enumerate(found.manifests)
        )
        media_type = found.media_type or mediatypes.OCI_INDEX
        return ManifestRefs(ManifestKind.INDEX, media_type, children, subject, size=len(data))
    if found.kind == "schema1":
        sums = [_digest(blob, f"fsLayers[{i}]") for i, blob in enumerate(found.fs_layers)]
        unique = tuple(Descriptor(d) for d in dict.fromkeys(sums))
        media_type = found.media_type or mediatypes.DOCKER_MANIFEST_V1_SIGNED
        return ManifestRefs(ManifestKind.SCHEMA1, media_type, (), None, unique, len(data))
    blobs: list[Descriptor] = []
    # A config without a digest (an OCI manifest without "config" is still an image to
    # the registry) references nothing; a layer without one is garbage.
    if found.config is not None and found.config.digest:
        blobs.append(Descriptor(_digest(found.config.digest, "config"), max(found.config.size, 0)))
    for i, layer in enumerate(found.layers):
        blobs.append(Descriptor(_digest(layer.digest, f"layers[{i}]"), max(layer.size, 0)))
    media_type = found.media_type or mediatypes.OCI_MANIFEST
    return ManifestRefs(ManifestKind.IMAGE, media_type, (), subject, tuple(blobs), len(data))
