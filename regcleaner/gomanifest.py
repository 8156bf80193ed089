"""Pure: read a stored manifest exactly as distribution 2.8.2's registry reads it.

``decode_manifest(data)`` answers what ``manifestStore.Get`` followed by
``References()`` gives in distribution 2.8.2 (the Debian ``docker-registry``
2.8.2+ds1 binary, built with go1.19.8), or raises ``GoManifestError`` where Get
returns an error (or panics). Everything below was read from the v2.8.2 tag and
from Go 1.19's ``encoding/json``; no code was copied.

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
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["GoDescriptor", "GoManifest", "GoManifestError", "decode_manifest"]

# Media types 2.8.2 dispatches on (manifest/*/manifest.go, vendored image-spec mediatype.go).
_MT_SCHEMA2: Final = "application/vnd.docker.distribution.manifest.v2+json"
_MT_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
_MT_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
_MT_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
_MT_SCHEMA1_LAYER: Final = "application/vnd.docker.container.image.rootfs.diff+x-gtar"

_MAX_DEPTH: Final = 10_000  # go1.19 encoding/json/scanner.go maxNestingDepth
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_FLOAT_SAFE: Final = 2**1023  # ints below this in magnitude always fit a float64

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


# ---------------------------------------------------------------------------------
# Parsing: bytes -> values. Objects are tuples of (key, value) pairs (so duplicates and
# order survive), arrays are lists, numbers are int or float (a float for any literal
# with a fraction or exponent; ±inf for literals beyond float64).


class _SyntaxError(Exception):
    """Go's checkValid would fail."""


def _reject_constant(name: str) -> object:
    raise _SyntaxError(f"invalid character {name[0]!r} looking for beginning of value")


_c_scanstring = getattr(json.decoder, "c_scanstring", None)
if (
    getattr(json.scanner, "c_make_scanner", None) is None or _c_scanstring is None
):  # pragma: no cover
    raise ImportError("regcleaner.gomanifest needs CPython's C json accelerator (_json)")

# Stateless between calls (the C scanner clears its key memo after each document).
_DECODER: Final = json.JSONDecoder(object_pairs_hook=tuple, parse_constant=_reject_constant)
_scanstring: Final[Callable[[str, int, bool], tuple[str, int]]] = _c_scanstring
_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
# ASCII digits only: Python's \d would take other scripts' digits.
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
# Bytes that are not UTF-8 come back from "surrogateescape" as U+DC80..U+DCFF, one per
# byte: exactly where Go's utf8.DecodeRune yields (RuneError, 1), so one U+FFFD each.
_ESCAPED_BYTES: Final = {0xDC80 + b: 0xFFFD for b in range(128)}
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _skip(s: str, i: int) -> int:
    found = _WHITESPACE.match(s, i)
    return found.end() if found is not None else i


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape").translate(_ESCAPED_BYTES)


def _parse(text: str) -> object:
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _SyntaxError(f"invalid JSON: {exc}") from None
    except RecursionError:
        pass  # deeper than Python's stack allows: parse again without recursion
    except ValueError:
        pass  # an integer literal above sys.get_int_max_str_digits()
    return _parse_iterative(text)


def _number(literal: str, has_fraction_or_exponent: bool) -> int | float:
    if has_fraction_or_exponent:
        return float(literal)  # ±inf beyond float64, like Go's ParseFloat range error
    digits = len(literal) - (literal[0] == "-")
    if digits > 400:  # far beyond int64 and float64 either way
        return -math.inf if literal[0] == "-" else math.inf
    return int(literal)


def _parse_iterative(s: str) -> object:
    """A JSON parser without recursion, with Go's grammar and depth limit."""
    n = len(s)
    stack: list[tuple[list[object], bool]] = []  # (items, is_object)
    keys: list[str] = []  # the pending key of each open object
    i = _skip(s, 0)

    def fail(what: str, at: int) -> _SyntaxError:
        return _SyntaxError(f"invalid JSON: {what} at offset {at}")

    def read_key(at: int) -> int:
        if at >= n or s[at] != '"':
            raise fail("expecting a string key", at)
        try:
            key, at = _scanstring(s, at + 1, True)
        except json.JSONDecodeError as exc:
            raise fail(exc.msg, exc.pos) from None
        at = _skip(s, at)
        if at >= n or s[at] != ":":
            raise fail("expecting ':'", at)
        keys.append(key)
        return _skip(s, at + 1)

    while True:
        # A value starts at i.
        if i >= n:
            raise fail("unexpected end of input", i)
        c = s[i]
        value: object
        if c in "[{":
            if len(stack) >= _MAX_DEPTH:
                raise fail("exceeded max depth", i)
            is_object = c == "{"
            i = _skip(s, i + 1)
            if i < n and s[i] == ("}" if is_object else "]"):
                value = () if is_object else []
                i += 1
            else:
                if is_object:
                    i = read_key(i)
                stack.append(([], is_object))
                continue
        elif c == '"':
            try:
                value, i = _scanstring(s, i + 1, True)
            except json.JSONDecodeError as exc:
                raise fail(exc.msg, exc.pos) from None
        elif s.startswith("true", i):
            value, i = True, i + 4
        elif s.startswith("false", i):
            value, i = False, i + 5
        elif s.startswith("null", i):
            value, i = None, i + 4
        else:
            m = _NUMBER.match(s, i)
            if m is None:
                raise fail("expecting a value", i)
            value = _number(m.group(), m.group(1) is not None or m.group(2) is not None)
            i = m.end()
        # A value ended at i: hand it to the open containers, closing those that end.
        while True:
            i = _skip(s, i)
            if not stack:
                if i != n:
                    raise fail("extra data", i)
                return value
            items, is_object = stack[-1]
            items.append((keys[-1], value) if is_object else value)
            if is_object:
                keys.pop()
            if i < n and s[i] == ",":
                i = _skip(s, i + 1)
                if is_object:
                    i = read_key(i)
                break
            if i < n and s[i] == ("}" if is_object else "]"):
                stack.pop()
                value = tuple(items) if is_object else items
                i += 1
                continue
            raise fail("expecting ',' or a closing bracket", i)


# ---------------------------------------------------------------------------------
# Go decoding of parsed values into the 2.8.2 structs.


class _TypeError(Exception):
    """An UnmarshalTypeError (or ParseFloat range error) Go would return."""

    def __init__(self, value: object, go_type: str) -> None:
        super().__init__()
        self.value = value
        self.go_type = go_type
        self.fields: list[str] = []

    def message(self, struct: str) -> str:
        what = _go_kind(self.value)
        if what == "number":
            what = _number_text(self.value)
        where = ".".join([struct, *reversed(self.fields)])
        return f"json: cannot unmarshal {what} into Go struct field {where} of type {self.go_type}"


def _number_text(value: object) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "a number beyond float64"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a number beyond int64"  # (str() of a huge int may itself raise)
    return f"number {value}"


def _go_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# go1.19 encoding/json/fold.go: for an all-ASCII field name, foldFunc picks
# equalFoldRight (name has k/K/s/S), asciiEqualFold or simpleLetterEqualFold. Only
# equalFoldRight accepts a non-ASCII rune in the key, and only U+017F where the name
# has s/S and U+212A where it has k/K. Everything else compares ASCII case-insensitively.
_FOLD: Final = {0x017F: "s", 0x212A: "k"}


def _fold(key: str) -> str | None:
    """The key as it compares under Go's fold for all-ASCII field names, or None."""
    if key.isascii():
        return key.lower()
    key = key.translate(_FOLD)
    return key.lower() if key.isascii() else None


class _Spec:
    """A Go type: ``decode`` merges a parsed JSON value into the current Go value.

    Go zero values are None here: "" for strings, 0 for ints, nil, or an empty struct.
    """

    __slots__ = ("go_type",)

    def __init__(self, go_type: str) -> None:
        self.go_type = go_type

    def decode(self, value: object, current: object) -> object:
        raise NotImplementedError


class _String(_Spec):
    __slots__ = ()

    def decode(self, value: object, current: object) -> object:
        if isinstance(value, str):
            return value
        if value is None:
            return current
        raise _TypeError(value, self.go_type)


class _Int(_Spec):
    __slots__ = ()

    def decode(self, value: object, current: object) -> object:
        # bool is an int in Python, never in Go. A float is a literal with a fraction
        # or an exponent, which strconv.ParseInt refuses.
        if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
            return value
        if value is None:
            return current
        raise _TypeError(value, self.go_type)


class _SliceValue:
    """A Go slice: the backing array (its length is the capacity) and the length."""

    __slots__ = ("backing", "length")

    def __init__(self, backing: list[object], length: int) -> None:
        self.backing = backing
        self.length = length

    def items(self) -> list[object]:
        return self.backing[: self.length]


class _Slice(_Spec):
    __slots__ = ("elem",)

    def __init__(self, go_type: str, elem: _Spec) -> None:
        super().__init__(go_type)
        self.elem = elem

    def decode(self, value: object, current: object) -> object:
        if not isinstance(value, list):
            if value is None:
                return None  # null: nil slice
            raise _TypeError(value, self.go_type)
        if not value:
            return _SliceValue([], 0)  # []: a new empty, non-nil slice
        if isinstance(current, _SliceValue):
            backing, length = current.backing, current.length
        else:
            backing, length = [], 0
        decode = self.elem.decode
        i = 0
        # go1.19 decode.go array(): element i is decoded over what the backing array
        # holds at i; growth copies [0:len) into a cap+cap/2 (min 4) array. (It grows
        # only when len == cap, so the growth rule never changes what is decoded.)
        for item in value:
            if i >= len(backing):
                capacity = max(len(backing) + len(backing) // 2, 4)
                backing = backing[:length] + [None] * (capacity - length)
            if i >= length:
                length = i + 1
            backing[i] = decode(item, backing[i])
            i += 1
        return _SliceValue(backing, i)


class _StringMap(_Spec):
    """map[string]string: keys are taken as they are; only errors matter here."""

    __slots__ = ()

    def decode(self, value: object, current: object) -> object:
        if isinstance(value, tuple):
            for _key, item in value:
                if item is not None and not isinstance(item, str):
                    raise _TypeError(item, "string")
            return True  # non-nil
        if value is None:
            return None
        raise _TypeError(value, self.go_type)


class _Struct(_Spec):
    __slots__ = ("exact", "folded")

    def __init__(self, go_type: str, fields: dict[str, _Spec]) -> None:
        super().__init__(go_type)
        self.exact = {name: (name, spec) for name, spec in fields.items()}
        self.folded = {name.lower(): (name, spec) for name, spec in fields.items()}
        assert all(name.isascii() for name in fields)

    def decode(self, value: object, current: object) -> object:
        if not isinstance(value, tuple):
            if value is None:
                return current  # null into a struct: no-op
            raise _TypeError(value, self.go_type)
        fields: dict[str, object] = current if isinstance(current, dict) else {}
        exact = self.exact
        folded = self.folded
        for key, item in value:
            found = exact.get(key)
            if found is None:
                canonical = _fold(key)
                found = folded.get(canonical) if canonical is not None else None
                if found is None:
                    continue  # unknown field: skipped whatever it holds
            name, spec = found
            try:
                fields[name] = spec.decode(item, fields.get(name))
            except _TypeError as exc:
                exc.fields.append(name)
                raise
        return fields


class _Pointer(_Spec):
    __slots__ = ("target",)

    def __init__(self, target: _Struct) -> None:
        super().__init__("*" + target.go_type)
        self.target = target

    def decode(self, value: object, current: object) -> object:
        if value is None:
            return None  # null: nil pointer
        if not isinstance(value, tuple):
            raise _TypeError(value, self.target.go_type)
        return self.target.decode(value, current)


_STRING: Final = _String("string")
_STRINGS: Final = _Slice("[]string", _STRING)
_ANNOTATIONS: Final = _StringMap("map[string]string")
_V1_PLATFORM: Final = _Struct(
    "v1.Platform",
    {
        "architecture": _STRING,
        "os": _STRING,
        "os.version": _STRING,
        "os.features": _STRINGS,
        "variant": _STRING,
    },
)
_DESCRIPTOR_FIELDS: Final[dict[str, _Spec]] = {
    "mediaType": _STRING,
    "size": _Int("int64"),
    "digest": _STRING,
    "urls": _STRINGS,
    "annotations": _ANNOTATIONS,
}
_DESCRIPTOR: Final = _Struct(
    "distribution.Descriptor", {**_DESCRIPTOR_FIELDS, "platform": _Pointer(_V1_PLATFORM)}
)
_PLATFORM_SPEC: Final = _Struct(
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
_MANIFEST_DESCRIPTOR: Final = _Struct(
    "manifestlist.ManifestDescriptor", {**_DESCRIPTOR_FIELDS, "platform": _PLATFORM_SPEC}
)
_VERSIONED_FIELDS: Final[dict[str, _Spec]] = {"schemaVersion": _Int("int"), "mediaType": _STRING}
_VERSIONED: Final = _Struct("manifest.Versioned", _VERSIONED_FIELDS)
_MANIFEST_LIST: Final = _Struct(
    "manifestlist.ManifestList",
    {
        **_VERSIONED_FIELDS,
        "manifests": _Slice("[]manifestlist.ManifestDescriptor", _MANIFEST_DESCRIPTOR),
    },
)
_IMAGE_FIELDS: Final[dict[str, _Spec]] = {
    **_VERSIONED_FIELDS,
    "config": _DESCRIPTOR,
    "layers": _Slice("[]distribution.Descriptor", _DESCRIPTOR),
}
_SCHEMA2_MANIFEST: Final = _Struct("schema2.Manifest", _IMAGE_FIELDS)
_OCI_IMAGE_MANIFEST: Final = _Struct(
    "ocischema.Manifest", {**_IMAGE_FIELDS, "annotations": _ANNOTATIONS}
)
_SCHEMA1_MANIFEST: Final = _Struct(
    "schema1.Manifest",
    {
        **_VERSIONED_FIELDS,
        "name": _STRING,
        "tag": _STRING,
        "architecture": _STRING,
        "fsLayers": _Slice("[]schema1.FSLayer", _Struct("schema1.FSLayer", {"blobSum": _STRING})),
        "history": _Slice(
            "[]schema1.History", _Struct("schema1.History", {"v1Compatibility": _STRING})
        ),
    },
)
# Not in 2.8.2: decoded as if the manifest had `Subject *Descriptor json:"subject"`.
_SUBJECT_HOLDER: Final = _Struct("manifest.subject", {"subject": _Pointer(_DESCRIPTOR)})


def _unmarshal(
    struct: _Struct, document: object, context: str, *, stricter: bool = False
) -> dict[str, object]:
    try:
        fields = struct.decode(document, None)
    except _TypeError as exc:
        message = f"{context}: {exc.message(struct.go_type)}"
        raise GoManifestError(message, stricter=stricter) from None
    return fields if isinstance(fields, dict) else {}


def _go_string(value: object) -> str:
    if not isinstance(value, str):
        return ""
    if value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)  # lone \uD800-style escapes: U+FFFD in Go


def _go_int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _descriptor(value: object) -> GoDescriptor:
    fields = value if isinstance(value, dict) else {}
    return GoDescriptor(
        _go_string(fields.get("mediaType")),
        _go_string(fields.get("digest")),
        _go_int(fields.get("size")),
    )


def _descriptors(value: object) -> tuple[GoDescriptor, ...]:
    if not isinstance(value, _SliceValue):
        return ()
    return tuple(_descriptor(item) for item in value.items())


def _check_floats(value: object) -> None:
    """Decoding into interface{} runs ParseFloat on every number: overflow fails."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if math.isinf(item):
                raise _TypeError(item, "float64")
        elif isinstance(item, int):
            if not isinstance(item, bool) and not -_FLOAT_SAFE < item < _FLOAT_SAFE:
                try:
                    float(item)
                except OverflowError:
                    raise _TypeError(item, "float64") from None
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, tuple):
            pending.extend(v for _k, v in item)


def _interface_field(document: object, name: str) -> tuple[bool, str]:
    """Decode one ``interface{}`` field of a validator struct: (non-nil, error)."""
    present = False
    if not isinstance(document, tuple):
        return False, ""
    for key, item in document:
        if key == name or _fold(key) == name:
            try:
                _check_floats(item)
            except _TypeError as exc:
                what = _number_text(exc.value)
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
        document = _parse(_text(data))
    except _SyntaxError as exc:
        raise GoManifestError(str(exc)) from None

    versioned = _unmarshal(_VERSIONED, document, "manifest")
    version = _go_int(versioned.get("schemaVersion"))
    media_type = _go_string(versioned.get("mediaType"))

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
        _check_floats(document)  # libtrust.NewJSONSignature: map[string]interface{}
    except _TypeError as exc:
        what = _number_text(exc.value)
        raise GoManifestError(
            f"schema1 (libtrust): json: cannot unmarshal {what} into Go value of type float64"
        ) from None
    fields = _unmarshal(_SCHEMA1_MANIFEST, document, "schema1")
    layers = fields.get("fsLayers")
    sums = tuple(
        _go_string(item.get("blobSum") if isinstance(item, dict) else None)
        for item in (layers.items() if isinstance(layers, _SliceValue) else ())
    )
    references = tuple(GoDescriptor(_MT_SCHEMA1_LAYER, blob_sum, 0) for blob_sum in sums)
    return GoManifest(1, media_type, "schema1", None, (), (), sums, None, references)
