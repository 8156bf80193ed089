"""Reads from S3 without botocore's per-request machinery: GET, HEAD and ListObjectsV2
signed here (AWS Signature Version 4, header form) and sent with aiohttp.

botocore spends about 1.1 ms of client CPU on every request (event hooks, endpoint
rules, the user agent, its signer, its parser); a run that reads a million manifests
spends most of its CPU there. This path spends about 0.3 ms (``python -m bench.scale
cpu``). It serves plain answers only: 200, and 404 (no such key) to a GET or HEAD.
Anything else (a redirect, an error, throttling, a failed connection, a page its
parser is not sure of) raises ``NotServed``, and the store makes the same request
through botocore, with botocore's retries, adaptive rate and error translation. An
answer that would come again (a 503 SlowDown, a redirect, a refusal; not a 500, 502 or
504) turns this path off for the rest of the run, so that throttling meets botocore's
adaptive rate alone.

Where requests go is botocore's decision, not this module's: ``FastReads.build`` has
the store's client build and sign a HeadObject of a probe key, stops it before it is
sent, and takes the scheme, host, path style and signing region from it. It declines
(the store then uses botocore for everything) when it cannot tell: no credentials, a
signature other than SigV4 for ``s3``, a URL that does not end in the key, a proxy in
the environment for the endpoint, a CA bundle it cannot find.

Nothing here writes: deletions stay with botocore.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

from regcleaner.storage.base import Blob, FileInfo
from regcleaner.storage.s3listing import parse_listing, parse_root, scan_listing

log = logging.getLogger(__name__)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"
_PROBE_KEY = "regcleaner-probe/key"
_URL_DECODED = ("Delimiter", "Prefix", "StartAfter")
MAX_FAILED_CONNECTIONS = 3
"""Requests in a row without an answer after which this path turns off."""


class NotServed(Exception):
    """This path does not answer that request: make it through botocore."""


def uri_encode(value: str, *, slash: bool) -> str:
    """SigV4's URI encoding: every byte but ``A-Za-z0-9-._~`` as %XX (and ``/`` kept
    when ``slash``, as in an S3 object's path)."""
    return quote(value, safe="/-_.~" if slash else "-_.~")


def canonical_query(query: dict[str, str]) -> str:
    return "&".join(
        f"{uri_encode(name, slash=False)}={uri_encode(value, slash=False)}"
        for name, value in sorted(query.items())
    )


class Signer:
    """SigV4 for S3 in one region, with a signing key per day (it depends on nothing
    else)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._keys: dict[tuple[str, str], bytes] = {}

    def _signing_key(self, secret: str, day: str) -> bytes:
        found = self._keys.get((secret, day))
        if found is None:
            found = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                found = hmac.new(found, part.encode(), hashlib.sha256).digest()
            self._keys.clear()  # one key at a time: a day, or new credentials
            self._keys[(secret, day)] = found
        return found

    def headers(
        self,
        method: str,
        host: str,
        path: str,
        query: dict[str, str],
        credentials: tuple[str, str, str | None],
        amz_date: str,
    ) -> dict[str, str]:
        """The headers that sign ``method`` of ``path`` (already URI-encoded, as sent)
        with ``query`` at ``amz_date`` (``20261207T120000Z``): Host,
        X-Amz-Content-SHA256, X-Amz-Date, X-Amz-Security-Token if there is a token,
        Authorization."""
        access_key, secret_key, token = credentials
        headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
        if token:
            headers["x-amz-security-token"] = token
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join(
            (method, path, canonical_query(query),
             "".join(f"{name}:{headers[name].strip()}\n" for name in names),
             signed, EMPTY_SHA256)
        )  # fmt: skip
        day = amz_date[:8]
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            (_ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        signature = hmac.new(
            self._signing_key(secret_key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers["authorization"] = (
            f"{_ALGORITHM} Credential={access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers


class _Clock:
    """``20261207T120000Z`` for now, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def amz_date(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        return self._text


class FastReads:
    """GET, HEAD and listing pages of one bucket, signed here. Built by ``build``."""

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        base_path: str,
        region: str,
        credentials: Any,
        timestamp: Callable[[str], datetime],
        max_connections: int,
        ca_file: str | None,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.base_path = base_path
        """The path before a key, encoded and ending in ``/``: ``/bucket/`` (path
        style) or ``/`` (virtual-hosted)."""
        self.signer = Signer(region)
        self.enabled = True
        """False once an answer would come again (a 503, a redirect, a refusal), a
        certificate is refused, or requests in a row get no answer: botocore (its
        adaptive rate, its retries) then makes every request."""
        self._credentials = credentials
        self._frozen: tuple[str, str, str | None] | None = None
        self._timestamp = timestamp
        self._clock = _Clock()
        self._max_connections = max_connections
        self._ca_file = ca_file
        self._session: Any = None
        self._failed_connections = 0

    @classmethod
    async def build(
        cls,
        client: Any,
        bucket: str,
        *,
        timestamp: Callable[[str], datetime],
        max_connections: int,
    ) -> FastReads | None:
        """A fast path for ``client``'s requests to ``bucket``, or None where botocore
        should make them all (see the module's docstring)."""
        credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        if credentials is None or not hasattr(credentials, "get_frozen_credentials"):
            return None
        where = await _request_location(client, bucket)
        if where is None:
            return None
        scheme, host, base_path, region = where
        if _proxied(f"{scheme}://{host}/"):
            return None
        ca_file: str | None = None
        if scheme == "https":
            ca_file = _ca_file(client)
            if ca_file is None:
                return None
        return cls(
            scheme=scheme, host=host, base_path=base_path, region=region,
            credentials=credentials, timestamp=timestamp, max_connections=max_connections,
            ca_file=ca_file,
        )  # fmt: skip

    async def _session_for(self) -> Any:
        if self._session is None:
            import aiohttp

            ssl_context: ssl.SSLContext | bool = False
            if self.scheme == "https":
                ssl_context = ssl.create_default_context(cafile=self._ca_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=ssl_context),
                timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=60),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def _frozen_credentials(self) -> tuple[str, str, str | None]:
        if self._frozen is not None:
            return self._frozen
        try:
            frozen = await self._credentials.get_frozen_credentials()
        except Exception as exc:  # a refresh that failed: botocore's request says why
            raise NotServed(type(exc).__name__) from None
        values = (frozen.access_key, frozen.secret_key, frozen.token)
        if not (values[0] and values[1]):
            raise NotServed("no credentials")
        if not hasattr(self._credentials, "refresh_needed"):
            self._frozen = values  # static: the same for the whole run
        return values

    async def _request(self, method: str, path: str, query: dict[str, str]) -> Any:
        """The response to one signed request; NotServed if it did not come."""
        if not self.enabled:
            raise NotServed("off")
        import aiohttp
        from yarl import URL

        headers = self.signer.headers(
            method, self.host, path, query, await self._frozen_credentials(),
            self._clock.amz_date(),
        )  # fmt: skip
        target = f"{self.scheme}://{self.host}{path}"
        if query:
            target += "?" + canonical_query(query)
        try:
            session = await self._session_for()
        except OSError as exc:  # the CA bundle holds no certificate: botocore says why
            self.enabled = False
            log.warning(
                "the CA bundle %s cannot be used (%s): every S3 request goes through "
                "botocore from now on", self._ca_file, exc,
            )  # fmt: skip
            raise NotServed(type(exc).__name__) from None
        try:
            response = await session.request(
                method, URL(target, encoded=True), headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._unreachable(exc)
            raise NotServed(type(exc).__name__) from None
        self._failed_connections = 0
        return response

    def _unreachable(self, exc: BaseException) -> None:
        """A request that got no answer. A certificate refused, or a few in a row that
        could not connect, turn this path off (botocore would otherwise make every
        request a second time); a single failure is botocore's to retry."""
        import aiohttp

        self._failed_connections += 1
        certificate = isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError)
        if self.enabled and (certificate or self._failed_connections >= MAX_FAILED_CONNECTIONS):
            self.enabled = False
            log.info(
                "S3 could not be reached by regcleaner's own reads (%s): every S3 request "
                "goes through botocore from now on", type(exc).__name__,
            )  # fmt: skip

    def _refused(self, response: Any) -> NotServed:
        """An answer this path does not serve. A 500, 502 or 504 is botocore's to retry,
        this once; anything else (throttling, a redirect, a refusal) would come again,
        and this path turns off: botocore makes every request from then on."""
        status = response.status
        if self.enabled and status not in (500, 502, 504):
            self.enabled = False
            log.info(
                "S3 answered %s to a %s: every S3 request goes through botocore from now on",
                status, response.method,
            )  # fmt: skip
        response.close()
        return NotServed(f"S3 answered {status}")

    def _seconds(self, header: str) -> float:
        """A Last-Modified header in whole seconds, as the store gives every mtime."""
        try:
            return float(int(self._timestamp(header).timestamp()))
        except (ValueError, TypeError, OverflowError):
            raise NotServed("a Last-Modified it cannot read") from None

    def _object_path(self, key: str) -> str:
        return self.base_path + uri_encode(key, slash=True)

    async def get(self, key: str, cap: int) -> Blob | None:
        """At most ``cap + 1`` bytes of ``key`` (a full key), None if it is missing."""
        import aiohttp

        response = await self._request("GET", self._object_path(key), {})
        try:
            if response.status == 404:
                if _error_code(await response.read()) == "NoSuchKey":
                    return None
                raise NotServed("404 other than NoSuchKey")
            if response.status != 200:
                raise self._refused(response)
            chunks: list[bytes] = []
            remaining = cap + 1
            while remaining > 0:
                chunk: bytes = await response.content.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            modified = response.headers.get("Last-Modified")
            if modified is None:
                raise NotServed("no Last-Modified")
            return Blob(b"".join(chunks), self._seconds(modified), response.headers.get("ETag"))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise NotServed(type(exc).__name__) from None
        finally:
            response.release()

    async def head(self, key: str) -> FileInfo | None:
        """What a HEAD of ``key`` says, as ``FileInfo`` keyed by ``key`` as given."""
        response = await self._request("HEAD", self._object_path(key), {})
        try:
            if response.status == 404:
                return None  # botocore's "404", which the store reads as missing too
            if response.status != 200:
                raise self._refused(response)
            modified = response.headers.get("Last-Modified")
            length = response.headers.get("Content-Length")
            if modified is None or length is None or not length.isdigit():
                raise NotServed("no Last-Modified or Content-Length")
            return FileInfo(
                key, self._seconds(modified), int(length), True, response.headers.get("ETag")
            )
        finally:
            response.release()

    async def page(
        self, prefix: str, delimiter: str | None, token: str | None, start_after: str | None = None
    ) -> dict[str, Any]:
        """One ListObjectsV2 page as botocore's client returns it (keys decoded)."""
        import aiohttp

        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if delimiter:
            query["delimiter"] = delimiter
        if start_after:
            query["start-after"] = start_after
        if token is not None:
            query["continuation-token"] = token
        response = await self._request("GET", self.base_path.rstrip("/") or "/", query)
        try:
            if response.status != 200:
                raise self._refused(response)
            body = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise NotServed(type(exc).__name__) from None
        finally:
            response.release()
        parsed = None
        if body:
            parsed = scan_listing(body, self._timestamp) or parse_listing(body, self._timestamp)
        if parsed is None or "IsTruncated" not in parsed:
            raise NotServed("a page these parsers are not sure of")  # botocore parses it
        if parsed.get("EncodingType") != "url":
            raise NotServed("keys not URL-encoded")
        decode_keys(parsed)
        return parsed

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def decode_keys(parsed: dict[str, Any]) -> None:
    """What botocore does to a page it asked for with ``encoding-type=url``: the keys,
    prefixes, delimiter and start-after decoded with ``unquote_plus`` (S3 writes a space
    as ``+``)."""
    for name in _URL_DECODED:
        if name in parsed:
            parsed[name] = unquote_plus(parsed[name])
    for item in parsed.get("Contents", []):
        item["Key"] = unquote_plus(item["Key"])
    for common in parsed.get("CommonPrefixes", []):
        common["Prefix"] = unquote_plus(common["Prefix"])


def _error_code(body: bytes) -> str | None:
    """The Code of an S3 error document, None if the body is not one."""
    root = parse_root(body) if body else None
    if root is None or root.tag != "Error":
        return None
    codes = [child.text or "" for child in root if child.tag == "Code"]
    return codes[0] if len(codes) == 1 else None


class _Captured(Exception):
    """Raised in botocore's ``before-send``: the request it would have sent."""

    def __init__(self, url: str, authorization: str) -> None:
        super().__init__("captured")
        self.url = url
        self.authorization = authorization


async def _request_location(client: Any, bucket: str) -> tuple[str, str, str, str] | None:
    """(scheme, host, base path, signing region) of the HeadObject of a probe key that
    ``client`` would send to ``bucket``: botocore builds and signs it (endpoint rules,
    addressing style, region, FIPS, dual-stack) and it is stopped before it is sent."""

    def capture(request: Any, **_: Any) -> None:
        authorization = request.headers.get("Authorization", "")
        if isinstance(authorization, bytes):
            authorization = authorization.decode("ascii", "replace")
        raise _Captured(str(request.url), str(authorization))

    events = client.meta.events
    events.register_first("before-send.s3.HeadObject", capture, unique_id="regcleaner-probe")
    try:
        await client.head_object(Bucket=bucket, Key=_PROBE_KEY)
    except _Captured as captured:
        return _location(captured.url, captured.authorization)
    except Exception:  # no credentials, an odd configuration: botocore decides
        return None
    finally:
        events.unregister("before-send.s3.HeadObject", unique_id="regcleaner-probe")
    return None  # answered without being sent: nothing to learn from


def _location(url: str, authorization: str) -> tuple[str, str, str, str] | None:
    """(scheme, host, base path, signing region) from the URL and Authorization header
    of botocore's request for the probe key, or None if they are not the plain SigV4
    form this module signs (another signature version, S3 Express, a query string)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    if parts.query or parts.fragment:
        return None
    encoded_key = uri_encode(_PROBE_KEY, slash=True)
    if not parts.path.endswith("/" + encoded_key):
        return None
    base_path = parts.path[: -len(encoded_key)]
    algorithm, _, fields = authorization.partition(" ")
    if algorithm != _ALGORITHM:
        return None
    credential = ""
    for field in fields.split(","):
        name, _, value = field.strip().partition("=")
        if name == "Credential":
            credential = value
    scope = credential.split("/")
    if len(scope) != 5 or scope[3] != "s3" or scope[4] != "aws4_request" or not scope[2]:
        return None
    return parts.scheme, parts.netloc, base_path, scope[2]


def _proxied(url: str) -> bool:
    """Whether the environment names a proxy for ``url`` (``HTTPS_PROXY`` or
    ``HTTP_PROXY`` for its scheme, as botocore reads them, or ``ALL_PROXY``) that
    ``NO_PROXY`` does not exempt it from: this path sends nothing through a proxy, so
    it declines."""
    from botocore.utils import get_environ_proxies

    proxies = get_environ_proxies(url)
    return bool(proxies.get(url.partition(":")[0]) or proxies.get("all"))


def _ca_file(client: Any) -> str | None:
    """The CA bundle botocore verifies S3's certificate with (None: it does not verify,
    or this cannot tell which: botocore then makes every request)."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    verify = getattr(session, "_verify", None)
    if verify is None or verify is False:
        return None  # not verifying, or aiobotocore keeps it elsewhere: botocore decides
    from botocore.httpsession import get_cert_path

    path = get_cert_path(verify)
    return str(path) if path else None
