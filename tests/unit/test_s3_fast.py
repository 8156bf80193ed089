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
@given(prefix=key_text, token=st.none() | key_text,
       delimiter=st.sampled_from([None, "/", "/_layers/"]), after=st.none() | key_text)  # fmt: skip
def test_a_listing_is_signed_as_botocore_signs_it(
    prefix: str, token: str | None, delimiter: str | None, after: str | None
) -> None:
    query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
    if delimiter:
        query["delimiter"] = delimiter
    if after:
        query["start-after"] = after
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


PROBE = "regcleaner-probe/key"
AUTH = ("AWS4-HMAC-SHA256 Credential=AKID/20261207/{region}/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=abc")  # fmt: skip


def auth(region: str = "eu-west-3", service: str = "s3") -> str:
    return AUTH.format(region=region, service=service)


@pytest.mark.parametrize(
    ("url", "authorization", "expected"),
    [
        (f"http://127.0.0.1:9000/bkt/{PROBE}", auth(),
         ("http", "127.0.0.1:9000", "/bkt/", "eu-west-3")),
        (f"https://bkt.s3.eu-west-3.amazonaws.com/{PROBE}", auth(),
         ("https", "bkt.s3.eu-west-3.amazonaws.com", "/", "eu-west-3")),
        (f"https://s3.amazonaws.com/my.dotted.bucket/{PROBE}", auth("us-east-1"),
         ("https", "s3.amazonaws.com", "/my.dotted.bucket/", "us-east-1")),
    ],
)  # fmt: skip
def test_where_requests_go_is_read_from_botocore_s_own_request(
    url: str, authorization: str, expected: tuple[str, str, str, str]
) -> None:
    assert s3fast._location(url, authorization) == expected


@pytest.mark.parametrize(
    ("url", "authorization"),
    [
        (f"http://h/bkt/{PROBE}", "AWS AKID:signature"),  # signature version 2
        (f"https://h/bkt/{PROBE}", auth(service="s3express")),
        (f"https://h/bkt/{PROBE}", auth(service="s3-object-lambda")),
        (f"https://h/bkt/{PROBE}?versionId=1", auth()),
        (f"https://user:pw@h/bkt/{PROBE}", auth()),
        (f"ftp://h/bkt/{PROBE}", auth()),
        ("https://h/bkt/elsewhere", auth()),
        (f"https://h/bkt/{PROBE}", auth().replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")),
        (f"https://h/bkt/{PROBE}", auth().replace("Credential=", "Cred=")),
        (f"https://h/bkt/{PROBE}", ""),
    ],
)
def test_a_request_not_fully_understood_leaves_every_request_to_botocore(
    url: str, authorization: str
) -> None:
    assert s3fast._location(url, authorization) is None


async def _botocore_urls(client: Any, bucket: str, key: str, prefix: str) -> tuple[str, str]:
    """The URLs botocore sends a GetObject of ``key`` and a listing of ``prefix`` to."""

    class Sent(Exception):
        pass

    def capture(request: Any, **_: Any) -> None:
        raise Sent(str(request.url))

    urls = []
    client.meta.events.register_first("before-send.s3", capture, unique_id="test")
    for call in (client.get_object(Bucket=bucket, Key=key),
                 client.list_objects_v2(Bucket=bucket, Prefix=prefix)):  # fmt: skip
        try:
            await call
        except Sent as sent:
            urls.append(str(sent))
    client.meta.events.unregister("before-send.s3", unique_id="test")
    return urls[0], urls[1]


@pytest.mark.parametrize(
    ("options", "environment"),
    [
        ({"region": "eu-west-1"}, {}),
        ({"region": "us-east-1"}, {}),
        ({"region": "ap-east-1"}, {}),
        ({"region": "us-east-2"}, {"AWS_USE_FIPS_ENDPOINT": "true"}),
        ({"region": "eu-west-1"}, {"AWS_USE_DUALSTACK_ENDPOINT": "true"}),
        ({"region": "eu-west-1", "bucket": "my.dotted.bucket"}, {}),
        ({"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9000"}, {}),
        ({"region": "eu-central-1", "endpoint_url": "https://minio.example:9000/"}, {}),
    ],
)
def test_the_fast_path_sends_where_botocore_sends(
    options: dict[str, str], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """For AWS regions (the global, an opt-in one, FIPS, dual-stack), dotted buckets and
    custom endpoints: the same host, path and query path as botocore's own requests (a
    review found presigned URLs go to the global endpoint, requests do not)."""
    from regcleaner.config import S3Options
    from regcleaner.storage.s3 import S3Store

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings_: dict[str, Any] = {"bucket": "mybucket", **options}
    store = S3Store(S3Options(access_key="AKID", secret_key="secret", **settings_))
    key = "root/docker/registry/v2/a b/c+d/é"

    async def compare() -> None:
        try:
            client = await store._ensure_client()
            fast = store._fast
            assert fast is not None
            got, listing = await _botocore_urls(client, settings_["bucket"], key, "root/")
            assert got == f"{fast.scheme}://{fast.host}{fast._object_path(key)}"
            assert listing.split("?")[0] == (
                f"{fast.scheme}://{fast.host}{fast.base_path.rstrip('/') or '/'}"
            )
        finally:
            await store.aclose()

    asyncio.run(compare())


@pytest.mark.parametrize(
    ("variables", "endpoint", "built"),
    [
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, None, False),
        ({"ALL_PROXY": "http://proxy.example:3128"}, None, False),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, "http://s3.example:9000", False),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, None, True),  # https: not for it
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "amazonaws.com"}, None,
         True),
        ({"HTTP_PROXY": "http://proxy.example:3128", "NO_PROXY": "127.0.0.1"},
         "http://127.0.0.1:9000", True),
    ],
)  # fmt: skip
def test_a_proxy_botocore_would_use_leaves_every_request_to_botocore(
    variables: dict[str, str], endpoint: str | None, built: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """This path sends nothing through a proxy: where botocore would use one for the
    endpoint, it declines; a proxy for another scheme, or NO_PROXY, leaves it on."""
    from regcleaner.config import S3Options

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    options = S3Options(bucket="bkt", region="eu-west-1", endpoint_url=endpoint,
                        access_key="AKID", secret_key="secret")  # fmt: skip
    assert _fast_path_built(options) is built


def _fast_path_built(options: Any) -> bool:
    """Whether a store with ``options`` builds its fast path (then closed)."""
    from regcleaner.storage.s3 import S3Store

    store = S3Store(options)

    async def built() -> bool:
        try:
            await store._ensure_client()
            return store._fast is not None
        finally:
            await store.aclose()

    return asyncio.run(built())


def _item(key: str) -> dict[str, Any]:
    return {"Key": key, "LastModified": WHEN.replace(tzinfo=datetime.UTC), "Size": 1,
            "ETag": '"e"'}  # fmt: skip


class _Pages:
    """A fast path that serves scripted listing pages."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.tokens: list[str | None] = []

    async def page(
        self, prefix: str, delimiter: str | None, token: str | None, start_after: str | None
    ) -> dict[str, Any]:
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
        {"NextContinuationToken": "t2", "Contents": [_item("r/b")]},
    ],
    ids=["no-token", "the-same-token-again", "a-token-without-is-truncated"],
)
def test_a_listing_that_says_it_goes_on_without_a_new_token_is_refused(
    second: dict[str, Any],
) -> None:
    """Stopping there would hide keys (tag links among them): botocore's paginator
    stops quietly on a truncated page without a token, and on a page with a token that
    does not say IsTruncated; the store refuses."""
    pages = [{"IsTruncated": True, "NextContinuationToken": "t1", "Contents": [_item("r/a")]}]
    pages.append(second)
    store = _store_with(_Pages(pages))
    with pytest.raises(StorageError, match=r"gave no new continuation token|no IsTruncated"):
        asyncio.run(_walk_all(store))


# -- answers the fast path does not serve: a scripted server (no real one sends these) --


def _not_found(body: bytes) -> bytes:
    return b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


LAST_MODIFIED = b'Last-Modified: Mon, 07 Dec 2026 05:03:57 GMT\r\nETag: "e1"\r\n'
ANSWERS = {
    "big": b"HTTP/1.1 200 OK\r\n" + LAST_MODIFIED + b"Content-Length: 5000\r\n\r\n" + b"y" * 5000,
    "short": b"HTTP/1.1 200 OK\r\n" + LAST_MODIFIED + b"Content-Length: 100\r\n\r\n" + b"x" * 10,
    "no-such-key": _not_found(b"<Error><Code>NoSuchKey</Code></Error>"),
    "no-such-bucket": _not_found(b"<Error><Code>NoSuchBucket</Code></Error>"),
    "echo": _not_found(b"<Error><Code>NoSuchBucket</Code><Message>gone; <Code>NoSuchKey"
                       b"</Code></Message></Error>"),
    "bad-date": b"HTTP/1.1 200 OK\r\nLast-Modified: yesterday\r\nContent-Length: 1\r\n\r\nz",
    "no-date": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
    "500": b"HTTP/1.1 500 Internal Error\r\nContent-Length: 0\r\n\r\n",
    "502": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
    "504": b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n",
    "503": b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n",
    "301": b"HTTP/1.1 301 Moved Permanently\r\nContent-Length: 0\r\n\r\n",
    "403": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
}  # fmt: skip


class _Frozen:
    access_key, secret_key, token = "AKID", "secret", None


class _Credentials:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def get_frozen_credentials(self) -> _Frozen:
        if self.fail:
            raise RuntimeError("the refresh failed")
        return _Frozen()


async def _with_server(action: Any, *, credentials: Any = None, port: int | None = None) -> Any:
    """``action(fast)`` with a fast path towards a server that answers each key with
    ``ANSWERS[key]`` (then closes), or towards ``port`` where nothing listens."""
    from regcleaner.storage.s3 import _timestamp

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        raw = ANSWERS[target.removeprefix("/b/")]
        writer.write(raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n" if method == "HEAD" else raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    where = port or server.sockets[0].getsockname()[1]
    fast = s3fast.FastReads(
        scheme="http", host=f"127.0.0.1:{where}", base_path="/b/", region="us-east-1",
        credentials=credentials or _Credentials(), timestamp=_timestamp, max_connections=4,
        ca_file=None,
    )  # fmt: skip
    try:
        return await action(fast)
    finally:
        await fast.aclose()
        server.close()
        await server.wait_closed()


async def _outcome(call: Any) -> Any:
    try:
        return await call
    except NotServed:
        return "not served"


@pytest.mark.parametrize(
    ("key", "expected", "stays_on"),
    [
        ("no-such-key", None, True),
        ("no-such-bucket", "not served", True),  # botocore says which bucket is missing
        ("echo", "not served", True),  # the code is the error's, not a message's
        ("short", "not served", True),  # a body cut off: botocore reads it again
        ("bad-date", "not served", True),
        ("no-date", "not served", True),
        ("500", "not served", True),  # botocore retries it
        ("502", "not served", True),
        ("504", "not served", True),
        ("503", "not served", False),  # throttling: botocore's adaptive rate from now on
        ("301", "not served", False),
        ("403", "not served", False),
    ],
)
def test_a_get_serves_plain_answers_only(key: str, expected: object, stays_on: bool) -> None:
    async def get(fast: s3fast.FastReads) -> tuple[object, bool]:
        return await _outcome(fast.get(key, 1000)), fast.enabled

    assert asyncio.run(_with_server(get)) == (expected, stays_on)


def test_a_get_reads_at_most_one_byte_more_than_asked() -> None:
    async def get(fast: s3fast.FastReads) -> Any:
        return await fast.get("big", 1000)

    blob = asyncio.run(_with_server(get))
    assert blob.data == b"y" * 1001
    assert blob.etag == '"e1"'
    assert blob.mtime == float(int(datetime.datetime(2026, 12, 7, 5, 3, 57,
                                                     tzinfo=datetime.UTC).timestamp()))  # fmt: skip


def test_a_head_of_a_missing_key_is_missing_and_a_refusal_is_not_served() -> None:
    async def heads(fast: s3fast.FastReads) -> list[object]:
        return [await _outcome(fast.head("no-such-key")), await _outcome(fast.head("403"))]

    assert asyncio.run(_with_server(heads)) == [None, "not served"]


def test_a_failed_credential_refresh_is_left_to_botocore() -> None:
    async def get(fast: s3fast.FastReads) -> object:
        return await _outcome(fast.get("big", 10))

    assert asyncio.run(_with_server(get, credentials=_Credentials(fail=True))) == "not served"


def test_requests_that_cannot_connect_turn_the_path_off_after_a_few() -> None:
    from testkit.registry import free_port

    async def gets(fast: s3fast.FastReads) -> list[tuple[object, bool]]:
        found = []
        for _ in range(s3fast.MAX_FAILED_CONNECTIONS):
            found.append((await _outcome(fast.get("big", 10)), fast.enabled))
        return found

    outcomes = asyncio.run(_with_server(gets, port=free_port()))
    assert [served for served, _ in outcomes] == ["not served"] * s3fast.MAX_FAILED_CONNECTIONS
    assert [on for _, on in outcomes] == [True] * (s3fast.MAX_FAILED_CONNECTIONS - 1) + [False]


def test_the_flag_and_its_variable_send_every_request_through_botocore() -> None:
    from typer.main import get_command

    from regcleaner.cli import app
    from regcleaner.options import StorageOptions

    on = StorageOptions(storage="s3", bucket="b").settings().s3
    off = StorageOptions(storage="s3", bucket="b", s3_botocore_reads=True).settings().s3
    assert on is not None
    assert off is not None
    assert on.fast_reads
    assert not off.fast_reads
    command: Any = get_command(app)
    for name in ("clean", "gc"):
        found = {p.name: p for p in command.commands[name].params}["s3_botocore_reads"]
        assert found.opts == ["--s3-botocore-reads"]
        assert found.envvar == "S3_BOTOCORE_READS" or found.envvar == ["S3_BOTOCORE_READS"]


def test_turning_off_says_so_once_in_an_info_line(caplog: pytest.LogCaptureFixture) -> None:
    async def twice(fast: s3fast.FastReads) -> None:
        await _outcome(fast.get("503", 10))
        await _outcome(fast.get("503", 10))

    with caplog.at_level("INFO", logger="regcleaner.storage.s3fast"):
        asyncio.run(_with_server(twice))
    lines = [r.getMessage() for r in caplog.records if r.name == "regcleaner.storage.s3fast"]
    assert lines == ["S3 answered 503 to a GET: every S3 request goes through botocore from now on"]


def test_without_credentials_botocore_makes_every_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No keys given and none in the environment, a profile or instance metadata: the
    fast path is not built, and botocore says there are no credentials."""
    from regcleaner.config import S3Options

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = S3Options(bucket="bkt", region="eu-west-1", endpoint_url="http://127.0.0.1:9")
    assert _fast_path_built(options) is False
