"""regcleaner's own S3 reads (storage/s3fast.py): its SigV4 signature is botocore's, byte
for byte, and it learns where requests go only from a URL it fully understands.

The signature is also checked by a real server (moto verifying signatures) in
tests/integration/test_s3_fast_reads.py."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner.errors import StorageError
from regcleaner.storage import s3fast
from regcleaner.storage.s3fast import EMPTY_SHA256, NotServed, Signer

AMZ_DATE = "20261207T123456Z"
WHEN = datetime.datetime(2026, 12, 7, 12, 34, 56)

# Object keys as a registry writes them and worse: reserved and unicode characters.
key_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)


def botocore_authorization(
    method: str, host: str, path: str, query: dict[str, str], token: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> str:  # fmt: skip
    """The Authorization header botocore's own S3 signer gives the same request."""
    from botocore import auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    monkeypatch.setattr(auth, "get_current_datetime", lambda: WHEN)
    url = f"http://{host}{path}"
    if query:
        url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    request = AWSRequest(method=method, url=url, headers={})
    signer = auth.S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalr/secret+key", token), "s3",
                              "eu-west-3")  # fmt: skip
    signer.add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == EMPTY_SHA256
    return str(request.headers["Authorization"])


def ours(method: str, host: str, path: str, query: dict[str, str], token: str | None) -> str:
    headers = Signer("eu-west-3").headers(
        method, host, path, query, ("AKIDEXAMPLE", "wJalr/secret+key", token), AMZ_DATE
    )
    return headers["authorization"]


@settings(max_examples=150, deadline=None)
@given(key=key_text, method=st.sampled_from(["GET", "HEAD"]),
       token=st.none() | st.text(alphabet="abcXYZ019+/=", min_size=1, max_size=30))  # fmt: skip
def test_an_object_request_is_signed_as_botocore_signs_it(
    key: str, method: str, token: str | None
) -> None:
    path = "/bucket/" + s3fast.uri_encode(key, slash=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected = botocore_authorization(method, "s3.example:9000", path, {}, token, monkeypatch)
    assert ours(method, "s3.example:9000", path, {}, token) == expected


@settings(max_examples=150, deadline=None)
@given(prefix=key_text, token=st.none() | key_text, delimiter=st.sampled_from([None, "/"]))
def test_a_listing_is_signed_as_botocore_signs_it(
    prefix: str, token: str | None, delimiter: str | None
) -> None:
    query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
    if delimiter:
        query["delimiter"] = delimiter
    if token is not None:
        query["continuation-token"] = token
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected = botocore_authorization("GET", "bucket.s3.eu-west-3.amazonaws.com", "/",
                                          query, None, monkeypatch)  # fmt: skip
    assert ours("GET", "bucket.s3.eu-west-3.amazonaws.com", "/", query, None) == expected


def test_a_different_path_or_secret_gives_a_different_signature() -> None:
    # The comparison above could not fail if the signature ignored its inputs.
    base = ours("GET", "h", "/b/k", {}, None)
    assert ours("GET", "h", "/b/k2", {}, None) != base
    assert ours("HEAD", "h", "/b/k", {}, None) != base
    other = Signer("eu-west-3").headers("GET", "h", "/b/k", {}, ("AKIDEXAMPLE", "x", None),
                                        AMZ_DATE)["authorization"]  # fmt: skip
    assert other != base


PRESIGNED = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261207%2F{region}"
             "%2F{service}%2Faws4_request&X-Amz-Date=20261207T120000Z&X-Amz-Expires=60"
             "&X-Amz-SignedHeaders=host&X-Amz-Signature=abc")  # fmt: skip
PROBE = "regcleaner-probe/key"


def presigned(base: str, *, region: str = "eu-west-3", service: str = "s3", extra: str = "") -> str:
    return f"{base}{PROBE}?{PRESIGNED.format(region=region, service=service)}{extra}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (presigned("http://127.0.0.1:9000/bkt/"),
         ("http", "127.0.0.1:9000", "/bkt/", "eu-west-3")),
        (presigned("https://bkt.s3.eu-west-3.amazonaws.com/"),
         ("https", "bkt.s3.eu-west-3.amazonaws.com", "/", "eu-west-3")),
        (presigned("https://s3.amazonaws.com/my.dotted.bucket/", region="us-east-1"),
         ("https", "s3.amazonaws.com", "/my.dotted.bucket/", "us-east-1")),
        (presigned("https://h/bkt/", extra="&x-id=GetObject"),
         ("https", "h", "/bkt/", "eu-west-3")),
    ],
)  # fmt: skip
def test_where_requests_go_is_read_from_botocore_s_presigned_url(
    url: str, expected: tuple[str, str, str, str]
) -> None:
    assert s3fast._probe_location(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        # Signature version 2: another scheme entirely.
        f"http://h/bkt/{PROBE}?AWSAccessKeyId=AKID&Signature=x&Expires=1",
        presigned("https://h/bkt/", service="s3express"),
        presigned("https://h/bkt/", service="s3-object-lambda"),
        presigned("https://h/bkt/", extra="&versionId=1"),
        presigned("https://user:pw@h/bkt/"),
        presigned("ftp://h/bkt/"),
        "https://h/bkt/elsewhere?" + PRESIGNED.format(region="r", service="s3"),
        presigned("https://h/bkt/").replace("SignedHeaders=host", "SignedHeaders=host%3Bx-amz-a"),
        presigned("https://h/bkt/").replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
    ],
)
def test_a_url_not_fully_understood_leaves_every_request_to_botocore(url: str) -> None:
    assert s3fast._probe_location(url) is None


def test_proxies_in_the_environment_leave_every_request_to_botocore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    built = asyncio.run(s3fast.FastReads.build(object(), "bkt", timestamp=lambda s: WHEN,
                                               max_connections=4))  # fmt: skip
    assert built is None


def _item(key: str) -> dict[str, Any]:
    return {"Key": key, "LastModified": WHEN.replace(tzinfo=datetime.UTC), "Size": 1,
            "ETag": '"e"'}  # fmt: skip


class _Pages:
    """A fast path that serves scripted listing pages."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.tokens: list[str | None] = []

    async def page(self, prefix: str, delimiter: str | None, token: str | None) -> dict[str, Any]:
        self.tokens.append(token)
        if not self.pages:
            raise NotServed("no more")
        return self.pages.pop(0)

    async def aclose(self) -> None:
        return None


def _store_with(fast: _Pages) -> Any:
    from regcleaner.config import S3Options
    from regcleaner.storage.s3 import S3Store

    store = S3Store(S3Options(bucket="bkt", access_key="a", secret_key="b"))
    store._client = object()  # no botocore: every page must come from the fast path
    store._fast = fast  # type: ignore[assignment]
    return store


async def _walk_all(store: Any) -> list[str]:
    return [info.key async for page in store.walk("r") for info in page]


def test_pages_follow_continuation_tokens_in_order() -> None:
    fast = _Pages([
        {"IsTruncated": True, "NextContinuationToken": "t1", "Contents": [_item("r/a")]},
        {"IsTruncated": True, "NextContinuationToken": "t2", "Contents": [_item("r/b")]},
        {"IsTruncated": False, "Contents": [_item("r/c")]},
    ])  # fmt: skip
    store = _store_with(fast)
    assert asyncio.run(_walk_all(store)) == ["a", "b", "c"]
    assert fast.tokens == [None, "t1", "t2"]
    assert store.stats.list == 3


@pytest.mark.parametrize(
    "second",
    [
        {"IsTruncated": True, "Contents": [_item("r/b")]},
        {"IsTruncated": True, "NextContinuationToken": "t1", "Contents": [_item("r/b")]},
    ],
    ids=["no-token", "the-same-token-again"],
)
def test_a_listing_that_says_it_goes_on_without_a_new_token_is_refused(
    second: dict[str, Any],
) -> None:
    """Stopping there would hide keys (tag links among them): botocore's paginator
    stops quietly on a truncated page without a token; the store refuses."""
    pages = [{"IsTruncated": True, "NextContinuationToken": "t1", "Contents": [_item("r/a")]}]
    pages.append(second)
    store = _store_with(_Pages(pages))
    with pytest.raises(StorageError, match="gave no new continuation token"):
        asyncio.run(_walk_all(store))
