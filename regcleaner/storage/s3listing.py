"""ListObjectsV2 pages parsed without botocore's generic XML walk.

botocore parses a listing by walking its service model for every element: about 40 µs
of Python a key, most of the client CPU of a run that lists many keys (a warm run lists
and reads nothing else). ``parse_listing`` reads the same XML straight into the same
dict (the same keys, types and values, empty elements as "", repeated ``Contents`` and
``CommonPrefixes`` as lists, unknown elements ignored, namespaces stripped), and gives
up (None) on anything it does not read exactly as botocore: a repeated single element,
a number that does not parse, XML it cannot parse. botocore then parses the page as
before. ``tests/unit/test_s3_listing.py`` compares the two on random pages.

Only the body is parsed here; headers, ``ResponseMetadata`` and botocore's handlers
(the URL-decoding of keys with ``EncodingType=url``) run as for any response.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from xml.etree import ElementTree

OPERATION_SHAPE = "ListObjectsV2Output"

_TOP_TEXT = frozenset(
    {"Name", "Prefix", "Delimiter", "EncodingType", "ContinuationToken",
     "NextContinuationToken", "StartAfter"}
)  # fmt: skip
_TOP_NUMBER = frozenset({"MaxKeys", "KeyCount"})
_ITEM_TEXT = frozenset({"Key", "ETag", "StorageClass", "ChecksumType"})


class _NotExact(Exception):
    """The page holds something botocore would read differently from here."""


_NAMESPACE = re.compile("{.*}")
"""What botocore strips from a tag (``.`` stops at a newline, as there)."""
_TAGS: dict[str, str] = {}
"""Element tag → its name without the namespace (a few dozen distinct tags)."""


def _tag(element: ElementTree.Element) -> str:
    tag = element.tag
    name = _TAGS.get(tag)
    if name is None:
        name = _NAMESPACE.sub("", tag)
        if len(_TAGS) < 256:
            _TAGS[tag] = name
    return name


def _text(element: ElementTree.Element) -> str:
    return element.text or ""


def _number(element: ElementTree.Element) -> int:
    try:
        return int(_text(element))
    except ValueError:
        raise _NotExact from None


def _once(parsed: dict[str, Any], name: str, value: Any) -> None:
    if name in parsed:
        raise _NotExact  # botocore would turn a repeated element into a list
    parsed[name] = value


def _fields(element: ElementTree.Element, names: frozenset[str]) -> dict[str, str]:
    parsed: dict[str, Any] = {}
    for child in element:
        name = _tag(child)
        if name in names:
            _once(parsed, name, _text(child))
    return parsed


def _item(element: ElementTree.Element, timestamp: Callable[[str], datetime]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    checksums: list[str] = []
    for child in element:
        name = _tag(child)
        if name in _ITEM_TEXT:
            _once(parsed, name, _text(child))
        elif name == "LastModified":
            _once(parsed, name, timestamp(_text(child)))
        elif name == "Size":
            _once(parsed, name, _number(child))
        elif name == "ChecksumAlgorithm":
            checksums.append(_text(child))
        elif name == "Owner":
            _once(parsed, name, _fields(child, frozenset({"DisplayName", "ID"})))
        elif name == "RestoreStatus":
            _once(parsed, name, _restore_status(child, timestamp))
    if checksums:
        parsed["ChecksumAlgorithm"] = checksums
    return parsed


def _restore_status(
    element: ElementTree.Element, timestamp: Callable[[str], datetime]
) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for child in element:
        name = _tag(child)
        if name == "IsRestoreInProgress":
            _once(parsed, name, _text(child) == "true")
        elif name == "RestoreExpiryDate":
            _once(parsed, name, timestamp(_text(child)))
    return parsed


def parse_root(body: bytes) -> ElementTree.Element | None:
    """The page's XML, or None if it is not plain XML that parses."""
    if b"<!" in body:
        return None  # S3 sends no DOCTYPE, entity or CDATA: botocore's parser decides
    # As botocore parses: UTF-8 whatever the XML declaration says.
    parser = ElementTree.XMLParser(target=ElementTree.TreeBuilder(), encoding="utf-8")  # noqa: S314 (no DTD: entities cannot expand)
    try:
        parser.feed(body)
        root: ElementTree.Element = parser.close()
    except ElementTree.ParseError:
        return None
    return root


def parse_listing(
    body: bytes, timestamp: Callable[[str], datetime], root: ElementTree.Element | None = None
) -> dict[str, Any] | None:
    """The body of one ListObjectsV2 page as botocore parses it, or None where this
    parser is not sure to agree (botocore then parses the page). ``root``: the body
    already parsed by ``parse_root``."""
    root = parse_root(body) if root is None else root
    if root is None:
        return None
    try:
        parsed: dict[str, Any] = {}
        contents: list[dict[str, Any]] = []
        prefixes: list[dict[str, Any]] = []
        for child in root:
            name = _tag(child)
            if name == "Contents":
                contents.append(_item(child, timestamp))
            elif name == "CommonPrefixes":
                prefixes.append(_fields(child, frozenset({"Prefix"})))
            elif name in _TOP_TEXT:
                _once(parsed, name, _text(child))
            elif name in _TOP_NUMBER:
                _once(parsed, name, _number(child))
            elif name == "IsTruncated":
                _once(parsed, name, _text(child) == "true")
    except _NotExact:
        return None
    return _with_lists(parsed, contents, prefixes)


def _with_lists(
    parsed: dict[str, Any], contents: list[dict[str, Any]], prefixes: list[dict[str, Any]]
) -> dict[str, Any]:
    """``parsed`` with the page's objects and common prefixes, where it has any (as
    botocore leaves out a list it found nothing for)."""
    if contents:
        parsed["Contents"] = contents
    if prefixes:
        parsed["CommonPrefixes"] = prefixes
    return parsed


_PARSED_ROOT = "regcleaner_parsed_root"


def check_listing_for_error(operation_model: Any, response_dict: Any, **kwargs: Any) -> None:
    """botocore's check for an error inside a 200 answer (S3 may send one; a body cut
    off by the network parses as none), for listing pages: the same verdict from one
    parse of the body, kept for ``parse_listing``. Other operations go to botocore's."""
    from botocore.handlers import _handle_200_error  # present: see install_listing_check

    body = response_dict.get("body") if response_dict else None
    if operation_model.name != "ListObjectsV2" or not isinstance(body, bytes) or not body:
        _handle_200_error(operation_model, response_dict, **kwargs)
        return
    if response_dict["status_code"] != 200 or b"<!" in body:
        _handle_200_error(operation_model, response_dict, **kwargs)
        return
    root = parse_root(body)
    if root is None or root.tag == "Error":
        response_dict["status_code"] = 500  # as botocore: retried
        return
    response_dict[_PARSED_ROOT] = root


def install_listing_check(events: Any) -> None:
    """Replace botocore's 200-error check with ``check_listing_for_error`` on a client's
    event hooks (it parsed every listing page once more, about a third of its CPU). A
    botocore without that check (before 1.35.4x) keeps what it has."""
    from botocore import handlers

    _handle_200_error = getattr(handlers, "_handle_200_error", None)
    if _handle_200_error is None:
        return
    events.unregister("before-parse.s3.*", _handle_200_error)
    events.register_first("before-parse.s3.*", check_listing_for_error)


def listing_parser_factory(timestamp: Callable[[str], datetime]) -> Any:
    """An aiobotocore response-parser factory whose rest-xml parser reads listing pages
    with ``parse_listing`` (everything else, and what it gives up on, as before)."""
    from aiobotocore.parsers import AioResponseParserFactory, AioRestXMLParser

    class ListingParser(AioRestXMLParser):  # type: ignore[misc]
        def _parse_payload(
            self, response: dict[str, Any], shape: Any, member_shapes: Any,
            final_parsed: dict[str, Any],
        ) -> None:  # fmt: skip
            body = response.get("body")
            if shape.name == OPERATION_SHAPE and isinstance(body, bytes) and body:
                fast = parse_listing(body, timestamp, response.get(_PARSED_ROOT))
                if fast is not None:
                    final_parsed.update(fast)
                    return
            super()._parse_payload(response, shape, member_shapes, final_parsed)

    class ListingParserFactory(AioResponseParserFactory):  # type: ignore[misc]
        def create_parser(self, protocol_name: str) -> Any:
            if protocol_name == "rest-xml":
                return ListingParser(**self._defaults)
            return super().create_parser(protocol_name)

    factory = ListingParserFactory()
    factory.set_parser_defaults(timestamp_parser=timestamp)
    return factory


# -- the pages regcleaner's own reads fetch (storage/s3fast.py) ------------------------

_SIMPLE_TOP = ("Name", "Prefix", "KeyCount", "MaxKeys", "EncodingType", "IsTruncated",
               "NextContinuationToken", "ContinuationToken", "StartAfter", "Delimiter")  # fmt: skip
_VALUE = rb"([^<]*)"
_TOP_NAMES = b"|".join(name.encode() for name in _SIMPLE_TOP)
_TOKEN = re.compile(
    rb"<Contents><Key>" + _VALUE + rb"</Key><LastModified>" + _VALUE + rb"</LastModified>"
    rb"<ETag>" + _VALUE + rb"</ETag>"
    rb"((?:<ChecksumAlgorithm>[^<]*</ChecksumAlgorithm>)*)"
    rb"(?:<ChecksumType>[^<]*</ChecksumType>)?"
    rb"<Size>([0-9]{1,18})</Size>"
    rb"(?:<Owner><ID>[^<]*</ID>(?:<DisplayName>[^<]*</DisplayName>)?</Owner>)?"
    rb"(?:<StorageClass>[^<]*</StorageClass>)?</Contents>"
    rb"|<CommonPrefixes><Prefix>" + _VALUE + rb"</Prefix></CommonPrefixes>"
    rb"|<(" + _TOP_NAMES + rb")>" + _VALUE + rb"</\7>"  # group 7: the field's name
    rb"|<(?:" + _TOP_NAMES + rb")/>"
)
"""One child of ListBucketResult as S3 sends it, in S3's order and without spaces: an
object, a common prefix, or a top-level field (``<Name/>`` when empty)."""
_HEAD = re.compile(
    rb'(?:<\?xml version="1\.0" encoding="(?i:utf-8)"\?>\s*)?'
    rb'<ListBucketResult(?: xmlns="http://s3\.amazonaws\.com/doc/2006-03-01/")?>'
)
_TAIL = re.compile(rb"</ListBucketResult>\s*")
_ENTITIES = {"&quot;": '"', "&#34;": '"', "&amp;": "&", "&lt;": "<", "&gt;": ">",
             "&apos;": "'", "&#39;": "'"}  # fmt: skip
_CHECKSUM = re.compile(rb">([^<]*)</")


def _unescape(raw: bytes) -> str:
    if b"&" not in raw:
        return raw.decode()
    if raw.startswith(b"&quot;") and raw.endswith(b"&quot;") and raw.count(b"&") == 2:
        return '"' + raw[6:-6].decode() + '"'  # an ETag
    first, *rest = raw.decode().split("&")
    out = [first]
    for piece in rest:
        name, semicolon, after = piece.partition(";")
        replacement = _ENTITIES.get(f"&{name};") if semicolon else None
        if replacement is None:
            raise _NotExact  # an entity not listed here
        out.append(replacement + after)
    return "".join(out)


def scan_listing(body: bytes, timestamp: Callable[[str], datetime]) -> dict[str, Any] | None:
    """A ListObjectsV2 page read with one regular expression where it has exactly the
    shape S3 sends (its elements in its order, no spaces between them), about a fifth of
    ``parse_listing``'s CPU; None for anything else (``parse_listing`` then reads it).

    It gives what ``parse_listing`` gives for the page's top-level fields, each
    object's Key, LastModified, ETag, Size and ChecksumAlgorithm, and the common
    prefixes (StorageClass and Owner are not kept: nothing reads them); tested against
    it on random pages in tests/unit/test_s3_listing.py."""
    if b"\r" in body:
        return None  # an XML parser turns CR and CRLF into LF: parse_listing does
    head = _HEAD.match(body)
    if head is None:
        return None
    at = head.end()
    parsed: dict[str, Any] = {}
    contents: list[dict[str, Any]] = []
    prefixes: list[dict[str, Any]] = []
    stamps: dict[bytes, datetime] = {}
    try:
        for token in _TOKEN.finditer(body, at):
            if token.start() != at:
                return None  # something between two known elements
            at = token.end()
            key, modified, etag, checksums, size, prefix, name, value = token.groups()
            if key is not None:
                stamp = stamps.get(modified)
                if stamp is None:
                    stamp = stamps[modified] = timestamp(modified.decode())
                item: dict[str, Any] = {
                    "Key": _unescape(key) if b"&" in key else key.decode(),
                    "LastModified": stamp,
                    "ETag": _unescape(etag),
                    "Size": int(size),
                }
                if checksums:
                    item["ChecksumAlgorithm"] = [
                        found.decode() for found in _CHECKSUM.findall(checksums)
                    ]
                contents.append(item)
            elif prefix is not None:
                prefixes.append({"Prefix": _unescape(prefix)})
            else:
                field = (name or token.group()[1:-2]).decode()
                text = "" if name is None else _unescape(value)
                if field == "IsTruncated":
                    _once(parsed, field, text == "true")
                elif field in _TOP_NUMBER:
                    if not text.isdigit():
                        return None
                    _once(parsed, field, int(text))
                else:
                    _once(parsed, field, text)
    except (_NotExact, UnicodeDecodeError, ValueError):
        return None
    if _TAIL.fullmatch(body, at) is None:
        return None
    return _with_lists(parsed, contents, prefixes)
