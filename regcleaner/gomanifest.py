"""Pure: read a stored manifest exactly as distribution 2.8.2's registry reads it.

``decode_manifest(data)`` answers what ``manifestStore.Get`` followed by
``References()`` gives in distribution 2.8.2 (the Debian ``docker-registry``
2.8.2+ds1 binary, built with go1.19.8), or raises ``GoManifestError`` where Get
returns an error (or panics). Everything below was read from the v2.8.2 tag and
from Go 1.19's ``encoding/json``; no code was copied. That ``encoding/json`` itself
(parsing, decoding into Go types) is ``regcleaner.gojson``; this module holds the
manifest kinds: their Go structs, the dispatch and the checks of each handler.

What 2.8.2 does (registry/storage/manifeststore.go, ``Get``)
    1. ``json.Unmarshal`` into ``manifest.Versioned`` (manifest/versioned.go:
       ``SchemaVersion int "schemaVersion"``, ``MediaType string "mediaType"``).
    2. schemaVersion 1: the schema1 handler. 2: switch on mediaType: Docker v2
       manifest → schema2 handler; OCI image manifest → ocischema handler; Docker
       manifest list or OCI index → manifest-list handler; ``""`` → manifest-list
       handler, kept if it succeeds with ``Manifests != nil``, else the ocischema
       handler. If that first attempt fails, Get type-asserts a nil interface and
       PANICS (manifeststore.go line 114; seen in ``garbage-collect``). Any other
       mediaType or schemaVersion is an error.
    3. Each handler (registry/storage/*handler.go) calls the type's UnmarshalJSON,
       which is a plain ``json.Unmarshal`` into the struct, plus: schema2 requires
       mediaType == Docker v2 (manifest/schema2/manifest.go), ocischema requires
       mediaType "" or OCI image manifest (manifest/ocischema/manifest.go); the
       manifest list checks nothing (manifest/manifestlist/manifestlist.go).
    4. References(): schema2/OCI image: config, then layers; list/index: the
       entries' embedded Descriptor; schema1: one descriptor per fsLayers entry,
       duplicates kept, mediaType "application/vnd.docker.container.image.rootfs
       .diff+x-gtar" (manifest/schema1/manifest.go).

The structs (field name, JSON name, Go type), in manifest/, blobs.go and the vendored
opencontainers image-spec v1.0.2. (Debian's 2.8.2+ds1 drops vendor/ and builds against
bookworm's image-spec 1.1.0~rc2, whose ``Platform`` is the same, and libtrust
0.0~git20150526, which differs only in base64 decoding, not reached on this path.)
    Versioned{schemaVersion int; mediaType string} is embedded in every manifest.
    distribution.Descriptor (blobs.go){mediaType string; size int64; digest
        digest.Digest (a plain string type, no UnmarshalJSON); urls []string;
        annotations map[string]string; platform *v1.Platform}.
    v1.Platform{architecture, os, os.version string; os.features []string; variant string}.
    manifestlist.PlatformSpec{architecture, os, os.version string; os.features
        []string; variant string; features []string}.
    manifestlist.ManifestDescriptor{Descriptor (embedded); Platform PlatformSpec
        "platform"}: the depth-0 "platform" dominates the embedded one, so an index
        entry's "platform" is a PlatformSpec (struct, not pointer).
    manifestlist.ManifestList{Versioned; manifests []ManifestDescriptor}.
    schema2.Manifest{Versioned; config Descriptor; layers []Descriptor}.
    ocischema.Manifest{Versioned; config Descriptor; layers []Descriptor;
        annotations map[string]string}.
    schema1.Manifest{Versioned; name, tag, architecture string; fsLayers
        []FSLayer{blobSum digest.Digest}; history []History{v1Compatibility string}}.

Go 1.19 encoding/json, as mirrored here (decode.go, fold.go, scanner.go)
    - Syntax is checked on the whole input first (any error fails). Nesting deeper
      than 10,000 arrays/objects is a syntax error (scanner.go maxNestingDepth).
    - Keys are matched per key in document order: exact JSON name first, else the
      first field whose name folds equal. So the LAST key that matches a field wins,
      whatever its spelling. Fold: ASCII case-insensitive; in fold.go the only
      non-ASCII runes that fold to ASCII are U+017F (s) and U+212A (k); none of the
      JSON names above contains a k, so only U+017F matters here.
    - A later duplicate decodes INTO what the earlier one left: structs keep fields
      it does not mention; a slice decodes element i over the existing element i
      (so elements cut off by an earlier, shorter duplicate come back: the backing
      array keeps them until ``[]`` or ``null``), then is cut to the new length;
      ``[]`` makes a new empty non-nil slice; ``null`` makes a slice, map or pointer
      nil and is a no-op for strings, ints and structs.
    - Type errors anywhere in a known field make Unmarshal fail (the error is saved
      and returned at the end). Unknown fields are skipped whatever they hold.
    - int/int64 take ``strconv.ParseInt(literal, 10, 64)``: "2.0", "2e0", "1e2"
      and values outside int64 fail; "-0" is 0.
    - Invalid UTF-8 in a string becomes U+FFFD per bad byte; a lone ``\\uD800``
      escape becomes U+FFFD. Both are mirrored (the caller validates digests).

Schema1 (registry/storage/signedmanifesthandler.go, vendored libtrust jsonsign.go)
    The stored "signatures" member is never parsed: Get calls
    ``libtrust.NewJSONSignature(content)`` (decodes the whole document into
    ``map[string]interface{}``), signs it with the registry's own key (app.go and
    the garbage-collect command always set one), and ``PrettySignature`` appends a
    fresh "signatures" member that ``SignedManifest.UnmarshalJSON`` parses back; its
    payload is the original bytes again, decoded into schema1.Manifest. So schema1
    fails exactly when (a) a number anywhere in the document overflows float64
    (``interface{}`` decoding uses ParseFloat; 1e-400 is fine, 1e400 fails) or
    (b) schema1.Manifest's fields hold a type error. Both are mirrored exactly.

Stricter than 2.8.2 (``GoManifestError.stricter`` is True; the caller keeps the
manifest and blocks its repository, never deletes on a guess)
    - CVE-2021-41190 validation on read. 2.8.2 runs ``validateIndex`` (manifestlist)
      and ``validateManifest`` (ocischema) only in the PUT path (the registered
      UnmarshalFuncs), not in Get. Here an index whose "config" or "layers" decodes
      non-null, and a schema2/OCI image whose "manifests" decodes non-null, are
      refused: such a document is read as an image by some readers and as an index
      by others. (Same case-insensitive, last-wins rules; ``interface{}`` fields.)
    - "subject" (OCI 1.1; 2.8.2 has no such field) is decoded as if the manifest had
      ``Subject *Descriptor `json:"subject"```; a type error in it is refused.
    - If Python's own stack is exhausted (only when called from very deep), or
      memory runs out, the manifest is refused.

Parsing: the C ``json`` scanner (``object_pairs_hook=tuple``, NaN/Infinity
refused) does the syntax; when it hits Python's recursion limit or the int
digit limit, an iterative parser with Go's 10,000-level limit takes over, so
10,000 levels are read like Go and deeper ones are refused like Go.

Timing (CPython 3.11.7, one core of the dev machine, ``timeit``, best of 5 x 20,000):
an OCI index of 5 entries with platforms and annotations, 1.4 KB compact / 1.9 KB
indented: 23-27 µs; an OCI image with config and 10 layers, 1.9 KB / 2.3 KB: 30-37 µs.
``json.loads`` alone takes about 7 µs of that. A 4 MB document that needs the
iterative parser takes about 0.3 s.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from dataclasses import dataclass
from typing import Final, Literal

from regcleaner.gojson import (
    GoSyntaxError,
    GoTypeError,
    Int,
    Pointer,
    Slice,
    SliceValue,
    Spec,
    String,
    StringMap,
    Struct,
    check_floats,
    go_fold,
    go_int,
    go_string,
    go_text,
    number_text,
    parse_go_json,
)

__all__ = ["GoDescriptor", "GoManifest", "GoManifestError", "decode_manifest"]

# Media types 2.8.2 dispatches on (manifest/*/manifest.go, vendored image-spec mediatype.go).
_MT_SCHEMA2: Final = "application/vnd.docker.distribution.manifest.v2+json"
_MT_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
_MT_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
_MT_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
_MT_SCHEMA1_LAYER: Final = "application/vnd.docker.container.image.rootfs.diff+x-gtar"


Kind = Literal["schema1", "schema2", "oci-image", "index"]


class GoManifestError(Exception):
    """2.8.2's ``manifestStore.Get`` would fail on these bytes (or, with
    ``stricter``, it would not, but they are refused on purpose: see the module doc)."""

    def __init__(self, message: str, *, stricter: bool = False) -> None:
        super().__init__(message)
        self.stricter = stricter


@dataclass(frozen=True, slots=True)
class GoDescriptor:
    """The three descriptor fields regcleaner uses, as Go holds them."""

    media_type: str
    digest: str
    """The raw string Go would hold ("" when absent); the caller validates it."""
    size: int


@dataclass(frozen=True, slots=True)
class GoManifest:
    """One manifest as 2.8.2 reads it."""

    schema_version: int
    media_type: str
    """The document's mediaType as Go decoded it ("" if absent)."""
    kind: Kind
    """The 2.8.2 handler that reads it."""
    config: GoDescriptor | None
    layers: tuple[GoDescriptor, ...]
    manifests: tuple[GoDescriptor, ...]
    fs_layers: tuple[str, ...]
    subject: GoDescriptor | None
    references: tuple[GoDescriptor, ...]
    """Exactly what 2.8.2's References() returns for this kind, in order."""


_STRING: Final = String("string")
_STRINGS: Final = Slice("[]string", _STRING)
_ANNOTATIONS: Final = StringMap("map[string]string")
_V1_PLATFORM: Final = Struct(
    "v1.Platform",
    {
        "architecture": _STRING,
        "os": _STRING,
        "os.version": _STRING,
        "os.features": _STRINGS,
        "variant": _STRING,
    },
)
_DESCRIPTOR_FIELDS: Final[dict[str, Spec]] = {
    "mediaType": _STRING,
    "size": Int("int64"),
    "digest": _STRING,
    "urls": _STRINGS,
    "annotations": _ANNOTATIONS,
}
_DESCRIPTOR: Final = Struct(
    "distribution.Descriptor", {**_DESCRIPTOR_FIELDS, "platform": Pointer(_V1_PLATFORM)}
)
_PLATFORM_SPEC: Final = Struct(
    "manifestlist.PlatformSpec",
    {
        "architecture": _STRING,
        "os": _STRING,
        "os.version": _STRING,
        "os.features": _STRINGS,
        "variant": _STRING,
        "features": _STRINGS,
    },
)
# Descriptor's fields promoted from depth 1; its "platform" is hidden by the depth-0 one.
_MANIFEST_DESCRIPTOR: Final = Struct(
    "manifestlist.ManifestDescriptor", {**_DESCRIPTOR_FIELDS, "platform": _PLATFORM_SPEC}
)
_VERSIONED_FIELDS: Final[dict[str, Spec]] = {"schemaVersion": Int("int"), "mediaType": _STRING}
_VERSIONED: Final = Struct("manifest.Versioned", _VERSIONED_FIELDS)
_MANIFEST_LIST: Final = Struct(
    "manifestlist.ManifestList",
    {
        **_VERSIONED_FIELDS,
        "manifests": Slice("[]manifestlist.ManifestDescriptor", _MANIFEST_DESCRIPTOR),
    },
)
_IMAGE_FIELDS: Final[dict[str, Spec]] = {
    **_VERSIONED_FIELDS,
    "config": _DESCRIPTOR,
    "layers": Slice("[]distribution.Descriptor", _DESCRIPTOR),
}
_SCHEMA2_MANIFEST: Final = Struct("schema2.Manifest", _IMAGE_FIELDS)
_OCI_IMAGE_MANIFEST: Final = Struct(
    "ocischema.Manifest", {**_IMAGE_FIELDS, "annotations": _ANNOTATIONS}
)
_SCHEMA1_MANIFEST: Final = Struct(
    "schema1.Manifest",
    {
        **_VERSIONED_FIELDS,
        "name": _STRING,
        "tag": _STRING,
        "architecture": _STRING,
        "fsLayers": Slice("[]schema1.FSLayer", Struct("schema1.FSLayer", {"blobSum": _STRING})),
        "history": Slice(
            "[]schema1.History", Struct("schema1.History", {"v1Compatibility": _STRING})
        ),
    },
)
# Not in 2.8.2: decoded as if the manifest had `Subject *Descriptor json:"subject"`.
_SUBJECT_HOLDER: Final = Struct("manifest.subject", {"subject": Pointer(_DESCRIPTOR)})


def _unmarshal(
    struct: Struct, document: object, context: str, *, stricter: bool = False
) -> dict[str, object]:
    try:
        fields = struct.decode(document, None)
    except GoTypeError as exc:
        message = f"{context}: {exc.message(struct.go_type)}"
        raise GoManifestError(message, stricter=stricter) from None
    return fields if isinstance(fields, dict) else {}


def _descriptor(value: object) -> GoDescriptor:
    fields = value if isinstance(value, dict) else {}
    return GoDescriptor(
        go_string(fields.get("mediaType")),
        go_string(fields.get("digest")),
        go_int(fields.get("size")),
    )


def _descriptors(value: object) -> tuple[GoDescriptor, ...]:
    if not isinstance(value, SliceValue):
        return ()
    return tuple(_descriptor(item) for item in value.items())


def _interface_field(document: object, name: str) -> tuple[bool, str]:
    """Decode one ``interface{}`` field of a validator struct: (non-nil, error)."""
    present = False
    if not isinstance(document, tuple):
        return False, ""
    for key, item in document:
        if key == name or go_fold(key) == name:
            try:
                check_floats(item)
            except GoTypeError as exc:
                what = number_text(exc.value)
                return False, f"json: cannot unmarshal {what} into Go value of type float64"
            present = item is not None
    return present, ""


def _refuse_confusion(document: object, kind: Kind) -> None:
    """CVE-2021-41190 checks, which 2.8.2 applies on PUT only (see module doc)."""
    names = ("config", "layers") if kind == "index" else ("manifests",)
    for name in names:
        present, error = _interface_field(document, name)
        if error:
            raise GoManifestError(f"validate {kind}: {error}", stricter=True)
        if present:
            found = "manifest" if kind == "index" else "index"
            raise GoManifestError(
                f"{kind} has a non-null {name!r}: expected {kind} but found {found} "
                "(2.8.2 refuses this only on push)",
                stricter=True,
            )


def _quote(value: str) -> str:
    return json.dumps(value[:200])


def decode_manifest(data: bytes) -> GoManifest:
    """Raise GoManifestError whenever 2.8.2's manifestStore.Get (plus the handler's
    Unmarshal/UnmarshalJSON and its validation) would return an error for these bytes."""
    try:
        return _decode(data)
    except RecursionError:
        raise GoManifestError("too deep for this Python stack", stricter=True) from None
    except MemoryError:
        raise GoManifestError("out of memory while decoding", stricter=True) from None


def _decode(data: bytes) -> GoManifest:
    try:
        document = parse_go_json(go_text(data))
    except GoSyntaxError as exc:
        raise GoManifestError(str(exc)) from None

    versioned = _unmarshal(_VERSIONED, document, "manifest")
    version = go_int(versioned.get("schemaVersion"))
    media_type = go_string(versioned.get("mediaType"))

    if version == 1:
        return _schema1(document, media_type)
    if version != 2:
        raise GoManifestError(f"unrecognized manifest schema version {version}")

    kind: Kind
    if media_type == _MT_SCHEMA2:
        kind = "schema2"
        fields = _unmarshal(_SCHEMA2_MANIFEST, document, "schema2")
    elif media_type == _MT_OCI_MANIFEST:
        kind = "oci-image"
        fields = _unmarshal(_OCI_IMAGE_MANIFEST, document, "ocischema")
    elif media_type in (_MT_MANIFEST_LIST, _MT_OCI_INDEX):
        kind = "index"
        fields = _unmarshal(_MANIFEST_LIST, document, "manifestlist")
    elif media_type == "":
        try:
            fields = _unmarshal(_MANIFEST_LIST, document, "manifestlist")
        except GoManifestError as exc:
            raise GoManifestError(f"{exc} (2.8.2 then panics on a nil manifest list)") from None
        if fields.get("manifests") is not None:
            kind = "index"
        else:
            kind = "oci-image"
            fields = _unmarshal(_OCI_IMAGE_MANIFEST, document, "ocischema")
    else:
        raise GoManifestError(f"unrecognized manifest content type {_quote(media_type)}")

    _refuse_confusion(document, kind)
    holder = _unmarshal(_SUBJECT_HOLDER, document, "subject (2.8.2 ignores it)", stricter=True)
    subject_fields = holder.get("subject")
    subject = None if subject_fields is None else _descriptor(subject_fields)

    if kind == "index":
        entries = _descriptors(fields.get("manifests"))
        return GoManifest(2, media_type, kind, None, (), entries, (), subject, entries)
    config = _descriptor(fields.get("config"))
    layers = _descriptors(fields.get("layers"))
    return GoManifest(2, media_type, kind, config, layers, (), (), subject, (config, *layers))


def _schema1(document: object, media_type: str) -> GoManifest:
    try:
        check_floats(document)  # libtrust.NewJSONSignature: map[string]interface{}
    except GoTypeError as exc:
        what = number_text(exc.value)
        raise GoManifestError(
            f"schema1 (libtrust): json: cannot unmarshal {what} into Go value of type float64"
        ) from None
    fields = _unmarshal(_SCHEMA1_MANIFEST, document, "schema1")
    layers = fields.get("fsLayers")
    sums = tuple(
        go_string(item.get("blobSum") if isinstance(item, dict) else None)
        for item in (layers.items() if isinstance(layers, SliceValue) else ())
    )
    references = tuple(GoDescriptor(_MT_SCHEMA1_LAYER, blob_sum, 0) for blob_sum in sums)
    return GoManifest(1, media_type, "schema1", None, (), (), sums, None, references)
