"""Pure: Go 1.19's ``encoding/json`` as distribution 2.8.2 reads a stored manifest
with it, for ``gomanifest`` (which knows the manifest kinds and their structs).

Two stages. Parsing: bytes to values with Go's grammar, its nesting limit and its
handling of invalid UTF-8 (``go_text``, ``parse_go_json``; a failure is
``GoSyntaxError``, what Go's checkValid returns). Decoding: values merged into Go types
(``Spec`` and its kinds ``String``, ``Int``, ``Slice``, ``StringMap``, ``Struct``,
``Pointer``), with Go's case-folded field names (``go_fold``) and its zero values; a
mismatch is ``GoTypeError``, Go's UnmarshalTypeError. Read from Go 1.19's source; no
code was copied.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import re
from collections.abc import Callable
from typing import Final

MAX_DEPTH: Final = 10_000  # go1.19 encoding/json/scanner.go maxNestingDepth
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_FLOAT_SAFE: Final = 2**1023  # ints below this in magnitude always fit a float64


# ---------------------------------------------------------------------------------
# Parsing: bytes -> values. Objects are tuples of (key, value) pairs (so duplicates and
# order survive), arrays are lists, numbers are int or float (a float for any literal
# with a fraction or exponent; ±inf for literals beyond float64).


class GoSyntaxError(Exception):
    """Go's checkValid would fail."""


def _reject_constant(name: str) -> object:
    raise GoSyntaxError(f"invalid character {name[0]!r} looking for beginning of value")


_c_scanstring = getattr(json.decoder, "c_scanstring", None)
if (
    getattr(json.scanner, "c_make_scanner", None) is None or _c_scanstring is None
):  # pragma: no cover
    raise ImportError("regcleaner.gojson needs CPython's C json accelerator (_json)")

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


def go_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape").translate(_ESCAPED_BYTES)


def parse_go_json(text: str) -> object:
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise GoSyntaxError(f"invalid JSON: {exc}") from None
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

    def fail(what: str, at: int) -> GoSyntaxError:
        return GoSyntaxError(f"invalid JSON: {what} at offset {at}")

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
            if len(stack) >= MAX_DEPTH:
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


class GoTypeError(Exception):
    """An UnmarshalTypeError (or ParseFloat range error) Go would return."""

    def __init__(self, value: object, go_type: str) -> None:
        super().__init__()
        self.value = value
        self.go_type = go_type
        self.fields: list[str] = []

    def message(self, struct: str) -> str:
        what = go_kind(self.value)
        if what == "number":
            what = number_text(self.value)
        where = ".".join([struct, *reversed(self.fields)])
        return f"json: cannot unmarshal {what} into Go struct field {where} of type {self.go_type}"


def number_text(value: object) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "a number beyond float64"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a number beyond int64"  # (str() of a huge int may itself raise)
    return f"number {value}"


def go_kind(value: object) -> str:
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


def go_fold(key: str) -> str | None:
    """The key as it compares under Go's fold for all-ASCII field names, or None."""
    if key.isascii():
        return key.lower()
    key = key.translate(_FOLD)
    return key.lower() if key.isascii() else None


class Spec:
    """A Go type: ``decode`` merges a parsed JSON value into the current Go value.

    Go zero values are None here: "" for strings, 0 for ints, nil, or an empty struct.
    """

    __slots__ = ("go_type",)

    def __init__(self, go_type: str) -> None:
        self.go_type = go_type

    def decode(self, value: object, current: object) -> object:
        raise NotImplementedError


class String(Spec):
    __slots__ = ()

    def decode(self, value: object, current: object) -> object:
        if isinstance(value, str):
            return value
        if value is None:
            return current
        raise GoTypeError(value, self.go_type)


class Int(Spec):
    __slots__ = ()

    def decode(self, value: object, current: object) -> object:
        # bool is an int in Python, never in Go. A float is a literal with a fraction
        # or an exponent, which strconv.ParseInt refuses.
        if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
            return value
        if value is None:
            return current
        raise GoTypeError(value, self.go_type)


class SliceValue:
    """A Go slice: the backing array (its length is the capacity) and the length."""

    __slots__ = ("backing", "length")

    def __init__(self, backing: list[object], length: int) -> None:
        self.backing = backing
        self.length = length

    def items(self) -> list[object]:
        return self.backing[: self.length]


class Slice(Spec):
    __slots__ = ("elem",)

    def __init__(self, go_type: str, elem: Spec) -> None:
        super().__init__(go_type)
        self.elem = elem

    def decode(self, value: object, current: object) -> object:
        if not isinstance(value, list):
            if value is None:
                return None  # null: nil slice
            raise GoTypeError(value, self.go_type)
        if not value:
            return SliceValue([], 0)  # []: a new empty, non-nil slice
        if isinstance(current, SliceValue):
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
        return SliceValue(backing, i)


class StringMap(Spec):
    """map[string]string: keys are taken as they are; only errors matter here."""

    __slots__ = ()

    def decode(self, value: object, current: object) -> object:
        if isinstance(value, tuple):
            for _key, item in value:
                if item is not None and not isinstance(item, str):
                    raise GoTypeError(item, "string")
            return True  # non-nil
        if value is None:
            return None
        raise GoTypeError(value, self.go_type)


class Struct(Spec):
    __slots__ = ("exact", "folded")

    def __init__(self, go_type: str, fields: dict[str, Spec]) -> None:
        super().__init__(go_type)
        self.exact = {name: (name, spec) for name, spec in fields.items()}
        self.folded = {name.lower(): (name, spec) for name, spec in fields.items()}
        assert all(name.isascii() for name in fields)

    def decode(self, value: object, current: object) -> object:
        if not isinstance(value, tuple):
            if value is None:
                return current  # null into a struct: no-op
            raise GoTypeError(value, self.go_type)
        fields: dict[str, object] = current if isinstance(current, dict) else {}
        exact = self.exact
        folded = self.folded
        for key, item in value:
            found = exact.get(key)
            if found is None:
                canonical = go_fold(key)
                found = folded.get(canonical) if canonical is not None else None
                if found is None:
                    continue  # unknown field: skipped whatever it holds
            name, spec = found
            try:
                fields[name] = spec.decode(item, fields.get(name))
            except GoTypeError as exc:
                exc.fields.append(name)
                raise
        return fields


class Pointer(Spec):
    __slots__ = ("target",)

    def __init__(self, target: Struct) -> None:
        super().__init__("*" + target.go_type)
        self.target = target

    def decode(self, value: object, current: object) -> object:
        if value is None:
            return None  # null: nil pointer
        if not isinstance(value, tuple):
            raise GoTypeError(value, self.target.go_type)
        return self.target.decode(value, current)


def go_string(value: object) -> str:
    if not isinstance(value, str):
        return ""
    if value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)  # lone \uD800-style escapes: U+FFFD in Go


def go_int(value: object) -> int:
    return value if isinstance(value, int) else 0


def check_floats(value: object) -> None:
    """Decoding into interface{} runs ParseFloat on every number: overflow fails."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if math.isinf(item):
                raise GoTypeError(item, "float64")
        elif isinstance(item, int):
            if not isinstance(item, bool) and not -_FLOAT_SAFE < item < _FLOAT_SAFE:
                try:
                    float(item)
                except OverflowError:
                    raise GoTypeError(item, "float64") from None
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, tuple):
            pending.extend(v for _k, v in item)
