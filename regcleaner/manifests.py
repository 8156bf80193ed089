"""Pure: manifest bytes → what the manifest references.

The OCI ``mediaType`` field is optional, so the kind is decided by shape: a
``manifests`` array makes an index, ``config``/``layers`` (or ``blobs``, for the
short-lived OCI artifact manifest) an image, ``schemaVersion: 1`` a schema1
manifest. Anything else is an error and the caller keeps the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from regcleaner import mediatypes
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
class ManifestRefs:
    """The references of one manifest: children (of an index), subject, and blobs."""

    kind: ManifestKind
    media_type: str
    children: tuple[Digest, ...] = ()
    subject: Digest | None = None
    blobs: tuple[Digest, ...] = ()
    blob_sizes: tuple[int, ...] = ()
    """Declared sizes of ``blobs`` (0 where a descriptor has none), for space estimates."""
    size: int = 0
    """Bytes of the manifest JSON itself (it is a blob too)."""


def _descriptor_digest(descriptor: Any, field: str, index: int | None = None) -> Digest:
    # The label is only built for an error message: this runs for every descriptor.
    if not isinstance(descriptor, dict):
        raise ManifestError(f"{_label(field, index)} is not a descriptor object")
    value = descriptor.get("digest")
    if not isinstance(value, str):
        raise ManifestError(f"{_label(field, index)} has no digest")
    try:
        return parse_digest(value)
    except ValueError as exc:
        raise ManifestError(f"{_label(field, index)}: {exc}") from None


def _label(field: str, index: int | None) -> str:
    return field if index is None else f"{field}[{index}]"


def _descriptor_size(descriptor: Any) -> int:
    size = descriptor.get("size") if isinstance(descriptor, dict) else None
    return size if isinstance(size, int) and size >= 0 else 0


def _descriptor_list(document: dict[str, Any], field: str) -> list[Any]:
    value = document.get(field, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{field} is not an array")
    return value


def parse_manifest(data: bytes) -> ManifestRefs:
    """Parse manifest JSON into its references; raise ManifestError when unsure."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(data)} bytes, above the {MAX_MANIFEST_BYTES} cap")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError("not a JSON object")
    media_type = document.get("mediaType", "")
    if not isinstance(media_type, str):
        raise ManifestError("mediaType is not a string")

    subject: Digest | None = None
    if "subject" in document and document["subject"] is not None:
        subject = _descriptor_digest(document["subject"], "subject")

    if "manifests" in document or media_type in mediatypes.INDEX_TYPES:
        entries = _descriptor_list(document, "manifests")
        children = tuple(
            _descriptor_digest(entry, "manifests", i) for i, entry in enumerate(entries)
        )
        return ManifestRefs(
            ManifestKind.INDEX,
            media_type or mediatypes.OCI_INDEX,
            children,
            subject,
            size=len(data),
        )

    if (
        "config" in document
        or "layers" in document
        or "blobs" in document
        or media_type in mediatypes.IMAGE_TYPES
    ):
        blobs: list[Digest] = []
        sizes: list[int] = []
        if document.get("config") is not None:
            blobs.append(_descriptor_digest(document["config"], "config"))
            sizes.append(_descriptor_size(document["config"]))
        for field in ("layers", "blobs"):
            for i, entry in enumerate(_descriptor_list(document, field)):
                blobs.append(_descriptor_digest(entry, field, i))
                sizes.append(_descriptor_size(entry))
        return ManifestRefs(
            ManifestKind.IMAGE,
            media_type or mediatypes.OCI_MANIFEST,
            (),
            subject,
            tuple(blobs),
            tuple(sizes),
            len(data),
        )

    if document.get("schemaVersion") == 1 or media_type in mediatypes.SCHEMA1_TYPES:
        layers = _descriptor_list(document, "fsLayers")
        sums: list[Digest] = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or not isinstance(layer.get("blobSum"), str):
                raise ManifestError(f"fsLayers[{i}] has no blobSum")
            try:
                sums.append(parse_digest(layer["blobSum"]))
            except ValueError as exc:
                raise ManifestError(f"fsLayers[{i}]: {exc}") from None
        unique = tuple(dict.fromkeys(sums))
        return ManifestRefs(
            ManifestKind.SCHEMA1,
            media_type or mediatypes.DOCKER_MANIFEST_V1_SIGNED,
            (),
            None,
            unique,
            (0,) * len(unique),
            len(data),
        )

    raise ManifestError("unknown manifest shape (no manifests, config, layers or fsLayers)")
