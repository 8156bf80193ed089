"""parse_listing reads a ListObjectsV2 page exactly as botocore does, or not at all."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner.storage.s3 import _timestamp
from regcleaner.storage.s3listing import listing_parser_factory, parse_listing, scan_listing

NAMESPACE = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"), max_size=12
)
STAMP = st.sampled_from(["2026-12-07T05:03:57.000Z", "2025-01-31T23:59:59Z",
                         "2026-02-28T00:00:00.123Z"])  # fmt: skip


def _element(name: str, value: str | None) -> str:
    return f"<{name}/>" if value is None else f"<{name}>{escape(value)}</{name}>"


@st.composite
def items(draw: st.DrawFn) -> str:
    parts = [_element("Key", draw(TEXT))]
    if draw(st.booleans()):
        parts.append(_element("LastModified", draw(STAMP)))
    if draw(st.booleans()):
        parts.append(_element("ETag", '"' + draw(st.text("0123456789abcdef-", max_size=34)) + '"'))
    if draw(st.booleans()):
        parts.append(_element("Size", str(draw(st.integers(0, 2**40)))))
    if draw(st.booleans()):
        parts.append(_element("StorageClass", draw(st.sampled_from(["STANDARD", "GLACIER", ""]))))
    for algorithm in draw(st.lists(st.sampled_from(["CRC32", "SHA256", "CRC64NVME"]),
                                   max_size=2)):  # fmt: skip
        parts.append(_element("ChecksumAlgorithm", algorithm))
    if draw(st.booleans()):
        parts.append(_element("ChecksumType", "FULL_OBJECT"))
    if draw(st.booleans()):
        parts.append("<Owner>" + _element("ID", draw(TEXT)) + _element("DisplayName", draw(TEXT))
                     + "</Owner>")  # fmt: skip
    if draw(st.booleans()):
        parts.append("<RestoreStatus>" + _element("IsRestoreInProgress", draw(
            st.sampled_from(["true", "false"]))) + _element("RestoreExpiryDate", draw(STAMP))
            + "</RestoreStatus>")  # fmt: skip
    if draw(st.booleans()):
        parts.append("<Unmodelled>x</Unmodelled>")
    order = draw(st.permutations(parts))
    return "<Contents>" + "".join(order) + "</Contents>"


@st.composite
def pages(draw: st.DrawFn) -> bytes:
    parts = [_element("Name", "bucket"), _element("Prefix", draw(TEXT)),
             _element("KeyCount", str(draw(st.integers(0, 1000)))),
             _element("MaxKeys", "1000"),
             _element("IsTruncated", draw(st.sampled_from(["true", "false"])))]  # fmt: skip
    for name in ("Delimiter", "EncodingType", "ContinuationToken", "NextContinuationToken",
                 "StartAfter"):  # fmt: skip
        if draw(st.booleans()):
            parts.append(_element(name, draw(st.one_of(st.none(), TEXT))))
    parts += draw(st.lists(items(), max_size=6))
    parts += [
        "<CommonPrefixes>" + _element("Prefix", prefix) + "</CommonPrefixes>"
        for prefix in draw(st.lists(TEXT, max_size=4))
    ]
    order = draw(st.permutations(parts))
    namespace = NAMESPACE if draw(st.booleans()) else ""
    declaration = '<?xml version="1.0" encoding="UTF-8"?>\n' if draw(st.booleans()) else ""
    return (declaration + f"<ListBucketResult{namespace}>" + "".join(order)
            + "</ListBucketResult>").encode()  # fmt: skip


def _botocore(body: bytes) -> dict[str, Any]:
    from aiobotocore.parsers import AioRestXMLParser
    from botocore.session import get_session

    shape = get_session().get_service_model("s3").operation_model("ListObjectsV2").output_shape
    parsed: dict[str, Any] = {}
    parser = AioRestXMLParser(timestamp_parser=_timestamp)
    parser._parse_payload({"body": body, "headers": {}}, shape, shape.members, parsed)
    return parsed


@settings(max_examples=300, deadline=None)
@given(pages())
def test_pages_parse_as_botocore_parses_them(body: bytes) -> None:
    assert parse_listing(body, _timestamp) == _botocore(body)


def test_the_factory_parses_listings_and_leaves_the_rest_to_botocore() -> None:
    from botocore.session import get_session

    model = get_session().get_service_model("s3")
    parser = listing_parser_factory(_timestamp).create_parser("rest-xml")
    body = (f"<ListBucketResult{NAMESPACE}><Name>b</Name><KeyCount>1</KeyCount><Contents>"
            "<Key>a&amp;b</Key><Size>3</Size></Contents></ListBucketResult>").encode()  # fmt: skip
    listing = model.operation_model("ListObjectsV2").output_shape
    parsed: dict[str, Any] = {}
    parser._parse_payload({"body": body, "headers": {}}, listing, listing.members, parsed)
    assert parsed == {"Name": "b", "KeyCount": 1, "Contents": [{"Key": "a&b", "Size": 3}]}
    other = model.operation_model("ListObjects").output_shape
    parsed = {}
    parser._parse_payload({"body": body, "headers": {}}, other, other.members, parsed)
    assert parsed == _botocore_shape(body, other)


def _botocore_shape(body: bytes, shape: Any) -> dict[str, Any]:
    from aiobotocore.parsers import AioRestXMLParser

    parsed: dict[str, Any] = {}
    AioRestXMLParser(timestamp_parser=_timestamp)._parse_payload(
        {"body": body, "headers": {}}, shape, shape.members, parsed
    )
    return parsed


@pytest.mark.parametrize(
    "body",
    [
        b"<ListBucketResult><Name>a</Name><Name>b</Name></ListBucketResult>",
        b"<ListBucketResult><Contents><Key>a</Key><Key>b</Key></Contents></ListBucketResult>",
        b"<ListBucketResult><KeyCount>many</KeyCount></ListBucketResult>",
        b"<ListBucketResult><Contents><Size></Size></Contents></ListBucketResult>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><ListBucketResult><Name>&a;</Name></ListBucketResult>',
        b"<ListBucketResult><Name>unclosed</ListBucketResult>",
    ],
    ids=["repeated-name", "repeated-key", "not-a-number", "empty-size", "doctype", "broken"],
)
def test_what_botocore_might_read_otherwise_is_left_to_it(body: bytes) -> None:
    assert parse_listing(body, _timestamp) is None


def _operation(name: str) -> Any:
    from botocore.session import get_session

    return get_session().get_service_model("s3").operation_model(name)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"<ListBucketResult><Name>b</Name><Contents><Key>a</Key>", 500),  # cut off
        (b"<Error><Code>InternalError</Code></Error>", 500),
        (b"<ListBucketResult><Name>b</Name></ListBucketResult>", 200),
    ],
    ids=["cut-off", "error-inside-200", "a-page"],
)
def test_a_listing_is_checked_for_an_error_inside_a_200_as_botocore_does(
    body: bytes, status: int
) -> None:
    from botocore.handlers import _handle_200_error

    from regcleaner.storage.s3listing import check_listing_for_error

    ours = {"status_code": 200, "body": body, "headers": {}}
    theirs = dict(ours)
    check_listing_for_error(_operation("ListObjectsV2"), ours)
    _handle_200_error(_operation("ListObjectsV2"), theirs)
    assert ours["status_code"] == theirs["status_code"] == status
    parsed_root = ours.get("regcleaner_parsed_root")
    assert (parsed_root is not None) == (status == 200)


def test_other_operations_keep_botocores_check() -> None:
    from regcleaner.storage.s3listing import check_listing_for_error

    response = {"status_code": 200, "body": b"<Error><Code>x</Code></Error>", "headers": {}}
    check_listing_for_error(_operation("DeleteObjects"), response)
    assert response["status_code"] == 500
    assert "regcleaner_parsed_root" not in response


def test_the_client_runs_the_listing_check_instead_of_botocores() -> None:
    from botocore.handlers import _handle_200_error
    from botocore.hooks import HierarchicalEmitter

    from regcleaner.storage.s3listing import check_listing_for_error, install_listing_check

    events = HierarchicalEmitter()
    events.register_first("before-parse.s3.*", _handle_200_error)
    install_listing_check(events)
    handlers = list(events._handlers.prefix_search("before-parse.s3.ListObjectsV2"))
    assert check_listing_for_error in handlers
    assert _handle_200_error not in handlers


@pytest.mark.parametrize(
    "body",
    [
        '<?xml version="1.0" encoding="x-foo"?><ListBucketResult><Name>b</Name>'
        "<Contents><Key>é</Key></Contents></ListBucketResult>".encode(),
        '<?xml version="1.0" encoding="ISO-8859-1"?><ListBucketResult>'
        "<Contents><Key>é</Key></Contents></ListBucketResult>".encode(),
        b'<?xml version="1.0" encoding="shift_jis"?><ListBucketResult>'
        b"<Contents><Key>k</Key></Contents></ListBucketResult>",
        b'<ListBucketResult xmlns="a&#10;b"><Contents><Key>k</Key></Contents>'
        b"<IsTruncated>true</IsTruncated></ListBucketResult>",
        b"\xef\xbb\xbf<ListBucketResult><KeyCount>1</KeyCount></ListBucketResult>",
    ],
    ids=[
        "unknown-encoding",
        "latin-1-declared",
        "multibyte-declared",
        "newline-namespace",
        "byte-order-mark",
    ],
)
def test_odd_pages_parse_as_botocore_parses_them(body: bytes) -> None:
    """The body is UTF-8 whatever its declaration says, and namespaces go as botocore
    strips them (review of the first version: a declared encoding made it differ)."""
    fast = parse_listing(body, _timestamp)
    assert fast is None or fast == _botocore(body)
    assert fast is not None or body.startswith(b"<!")


# -- scan_listing: the fast reads' parser, against parse_listing ----------------------

KEPT = ("Key", "LastModified", "ETag", "Size", "ChecksumAlgorithm")


def _kept(parsed: dict[str, Any]) -> dict[str, Any]:
    """What scan_listing keeps of a page (StorageClass and Owner are read by nothing)."""
    kept = {name: value for name, value in parsed.items() if name != "Contents"}
    if "Contents" in parsed:
        kept["Contents"] = [{name: item[name] for name in KEPT if name in item}
                            for item in parsed["Contents"]]  # fmt: skip
    return kept


@st.composite
def s3_pages(draw: st.DrawFn) -> bytes:
    """Pages in the shape S3 sends: its order, no spaces, every object's fields."""
    optional = ("Delimiter", "ContinuationToken", "NextContinuationToken", "StartAfter")
    top = [_element("Name", "bucket"), _element("Prefix", draw(TEXT))]
    top += [_element(name, draw(TEXT)) for name in optional if draw(st.booleans())]
    top += [_element("KeyCount", str(draw(st.integers(0, 1000)))), _element("MaxKeys", "1000"),
            _element("EncodingType", "url"),
            _element("IsTruncated", draw(st.sampled_from(["true", "false"])))]  # fmt: skip
    objects = []
    for _ in range(draw(st.integers(0, 5))):
        parts = [
            _element("Key", draw(TEXT)),
            _element("LastModified", draw(STAMP)),
            _element("ETag", '"' + draw(st.text("0123456789abcdef-", max_size=34)) + '"'),
        ]
        parts += [
            _element("ChecksumAlgorithm", algorithm)
            for algorithm in draw(st.lists(st.sampled_from(["CRC32", "SHA256"]), max_size=2))
        ]
        if draw(st.booleans()):
            parts.append(_element("ChecksumType", "FULL_OBJECT"))
        parts.append(_element("Size", str(draw(st.integers(0, 2**40)))))
        if draw(st.booleans()):
            parts.append("<Owner>" + _element("ID", draw(TEXT)) + "</Owner>")
        if draw(st.booleans()):
            parts.append(_element("StorageClass", "STANDARD"))
        objects.append("<Contents>" + "".join(parts) + "</Contents>")
    common = ["<CommonPrefixes>" + _element("Prefix", prefix) + "</CommonPrefixes>"
              for prefix in draw(st.lists(TEXT, max_size=3))]  # fmt: skip
    # S3's declaration, or moto's (and S3's order of the children, or any other).
    declaration = draw(st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>',
                                        '<?xml version="1.0" encoding="utf-8"?>\n']))  # fmt: skip
    namespace = NAMESPACE if draw(st.booleans()) else ""
    children = top + objects + common
    if draw(st.booleans()):
        children = draw(st.permutations(children))
    return (declaration + f"<ListBucketResult{namespace}>" + "".join(children)
            + "</ListBucketResult>").encode()  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(s3_pages())
def test_s3_shaped_pages_are_scanned_as_parse_listing_reads_them(body: bytes) -> None:
    scanned = scan_listing(body, _timestamp)
    parsed = parse_listing(body, _timestamp)
    assert parsed is not None
    assert scanned is not None  # the shape S3 sends is what it is for
    assert scanned == _kept(parsed)


@settings(max_examples=300, deadline=None)
@given(pages())
def test_any_other_page_is_scanned_the_same_or_left_to_parse_listing(body: bytes) -> None:
    scanned = scan_listing(body, _timestamp)
    if scanned is not None:
        parsed = parse_listing(body, _timestamp)
        assert parsed is not None
        assert scanned == _kept(parsed)


@pytest.mark.parametrize(
    "body",
    [
        # Prefixed elements: counting <Contents> would find none, and hide the keys.
        b'<ListBucketResult xmlns:s="x"><s:Contents><s:Key>k</s:Key></s:Contents>'
        b"<IsTruncated>false</IsTruncated></ListBucketResult>",
        b"<ListBucketResult><IsTruncated>false</IsTruncated> <Contents><Key>k</Key>"
        b"<LastModified>2026-12-07T05:03:57.000Z</LastModified><ETag>e</ETag><Size>1</Size>"
        b"</Contents></ListBucketResult>",
        b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key>"
        b"<LastModified>2026-12-07T05:03:57.000Z</LastModified><ETag>e</ETag><Size>1</Size>"
        b"<RestoreStatus/></Contents></ListBucketResult>",
        b"<ListBucketResult><IsTruncated>false</IsTruncated><IsTruncated>true</IsTruncated>"
        b"</ListBucketResult>",
        b"<ListBucketResult><IsTruncated>false</IsTruncated><!-- x --></ListBucketResult>",
        b"<ListBucketResult><Name>&nbsp;</Name></ListBucketResult>",
        b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult><x/>",
        b"<Error><Code>SlowDown</Code></Error>",
        # An XML parser reads CR LF as LF (a review found the scan kept the CR).
        b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a\r\nb</Key>"
        b"<LastModified>2026-12-07T05:03:57.000Z</LastModified><ETag>e</ETag><Size>1</Size>"
        b"</Contents></ListBucketResult>",
    ],
    ids=["namespace-prefix", "space", "unknown-element", "repeated", "comment", "entity",
         "after-the-end", "error", "carriage-return"],
)  # fmt: skip
def test_what_is_not_exactly_s3_s_shape_is_not_scanned(body: bytes) -> None:
    assert scan_listing(body, _timestamp) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, max_size=4), st.lists(TEXT, max_size=3), st.one_of(st.none(), TEXT))
def test_keys_are_decoded_as_botocore_decodes_them(
    keys: list[str], prefixes: list[str], delimiter: str | None
) -> None:
    from botocore.handlers import decode_list_object_v2

    from regcleaner.storage.s3fast import decode_keys

    def page() -> dict[str, Any]:
        parsed: dict[str, Any] = {"EncodingType": "url", "Prefix": "a+b%2B",
                                  "Contents": [{"Key": key} for key in keys],
                                  "CommonPrefixes": [{"Prefix": p} for p in prefixes]}  # fmt: skip
        if delimiter is not None:
            parsed["Delimiter"] = delimiter
        return parsed

    ours, theirs = page(), page()
    decode_keys(ours)
    decode_list_object_v2(theirs, {"encoding_type_auto_set": True})
    assert ours == theirs
    assert ours["Prefix"] == "a b+"  # S3 writes a space as "+"
