"""One aiohttp session to the registry: ping, delete by digest, and error bodies.

The client only speaks HTTP; what a status means for the run (retry, stop, count)
is decided in regcleaner.retry. The one request it sends again by itself is the
bearer-token handshake: a 401 with a challenge it can answer gets one more try with a
fresh token (that is authentication, not a retry of a failure).
"""

from __future__ import annotations

import email.utils
import errno
import functools
import json
import socket
import ssl
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

import aiohttp

from regcleaner import __version__, mediatypes
from regcleaner.config import Limits, TLSOptions
from regcleaner.digest import Digest
from regcleaner.errors import (
    AuthenticationError,
    ConfigError,
    NothingAnswers,
    RegistryAbsent,
    RegistryUnreachable,
    TokenFetchError,
    TransportError,
)
from regcleaner.registry.auth import (
    DELETE_ACTIONS,
    PROBE_ACTIONS,
    PULL_ACTIONS,
    Authorizer,
    challenge_error,
)

USER_AGENT = f"regcleaner/{__version__}"
MAX_RETRY_AFTER_S = 300.0


@dataclass(frozen=True, slots=True)
class RegistryResponse:
    """What the registry answered to one request."""

    status: int
    error_code: str = ""
    message: str = ""
    retry_after_s: float | None = None
    auth_error: str = ""
    """The ``error`` parameter of a 401's bearer challenge, e.g. ``insufficient_scope``."""
    content_type: str = ""
    body: bytes = b""
    """The start of an error answer's body (at most 200 bytes)."""
    digest: str = ""
    """The ``Docker-Content-Digest`` header, if any."""
    location: str = ""
    """The ``Location`` header of a redirect, if any."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def parse_error_body(body: bytes) -> tuple[str, str]:
    """First ``errors[].code`` and ``message`` of a registry error body, if any."""
    try:
        document = json.loads(body)
        first = document["errors"][0]
        return str(first.get("code", "")), str(first.get("message", ""))[:200]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", ""


_NO_SERVER_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
_NO_SUCH_HOST = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)  # fmt: skip


def nothing_answered(error: BaseException | None) -> bool:
    """True only when no server can have answered: connection refused, no route to the
    host or its network, or a host name that does not exist. A timeout, a reset or any
    TLS error may come from a server that is there."""
    if isinstance(error, ssl.SSLError):
        return False
    if isinstance(error, socket.gaierror):
        return error.errno in _NO_SUCH_HOST
    return isinstance(error, OSError) and error.errno in _NO_SERVER_ERRNOS


def build_ssl_context(tls: TLSOptions) -> ssl.SSLContext | bool:
    """The ``ssl`` argument for aiohttp: True (default verification), False or a context."""
    if tls.insecure:
        return False
    if tls.ca_cert is not None:
        try:
            return ssl.create_default_context(cafile=str(tls.ca_cert))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA certificate {tls.ca_cert}: {exc}") from None
    return True


class RegistryClient:
    """The registry's v2 API as regcleaner needs it."""

    def __init__(
        self,
        base_url: str,
        authorizer: Authorizer,
        tls: TLSOptions,
        limits: Limits,
    ) -> None:
        self.base_url = base_url
        self._authorizer = authorizer
        self._ssl = build_ssl_context(tls)
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RegistryClient:
        connector = aiohttp.TCPConnector(
            limit=self._limits.concurrency + 4, ssl=self._ssl, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._limits.request_timeout_s),
            headers={"User-Agent": USER_AGENT},
            # 202 bodies are empty; skip aiohttp's cookie handling on the hot path.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp silently re-sends an idempotent request once when a kept-alive
        # connection drops; that re-send would bypass --rate and the backoff, so the
        # Deleter's own retry handles it instead. (No public switch exists for it.)
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        repository: str | None,
        *,
        actions: str = DELETE_ACTIONS,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        fresh_connection: bool = False,
    ) -> RegistryResponse:
        """Send one request; after a 401 with a usable challenge, send it once more."""
        url = self.base_url + path
        try:
            for attempt in (1, 2):
                sent = await self._authorizer.header(self.session, repository, actions)
                headers = {"Authorization": sent} if sent else {}
                if content_type:
                    headers["Content-Type"] = content_type
                if accept:
                    headers["Accept"] = accept
                if fresh_connection:
                    headers["Connection"] = "close"  # behind a load balancer: maybe another replica
                async with self.session.request(
                    method, url, headers=headers, data=body, allow_redirects=False
                ) as response:
                    answer = b""
                    if response.status >= 400:
                        answer = await response.content.read(64 * 1024)
                    else:
                        await response.read()
                    if (
                        response.status == 401
                        and attempt == 1
                        and await self._authorizer.challenged(
                            self.session,
                            repository,
                            response.headers.get("WWW-Authenticate"),
                            sent,
                            actions,
                        )
                    ):
                        continue
                    code, message = parse_error_body(answer) if answer else ("", "")
                    auth_error = ""
                    if response.status == 401:
                        auth_error = challenge_error(response.headers.get("WWW-Authenticate"))
                    return RegistryResponse(
                        response.status,
                        code,
                        message,
                        parse_retry_after(response.headers.get("Retry-After")),
                        auth_error,
                        response.headers.get("Content-Type", ""),
                        answer[:200],
                        response.headers.get("Docker-Content-Digest", ""),
                        response.headers.get("Location", ""),
                    )
        except aiohttp.ClientConnectorCertificateError as exc:
            raise RegistryUnreachable(
                f"TLS verification of {self.base_url} failed ({exc.certificate_error}); "
                "pass --ca-cert PATH for a private CA or --insecure for a self-signed certificate"
            ) from None
        except TokenFetchError as exc:
            raise TransportError(str(exc), status=exc.status) from None
        except aiohttp.ClientConnectorError as exc:
            kind = type(exc.os_error).__name__
            message = f"{method} {path}: {kind}: {exc.os_error.strerror or exc.os_error}"
            if nothing_answered(exc.os_error):
                raise NothingAnswers(message) from None
            raise TransportError(message) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            kind = type(exc).__name__
            raise TransportError(f"{method} {path}: {kind}: {exc}".strip(": ")) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def ping(self) -> None:
        """Check that the registry answers ``/v2/`` and accepts our credentials."""
        try:
            response = await self._request("GET", "/v2/", None)
        except NothingAnswers as exc:
            raise RegistryAbsent(
                f"registry {self.base_url} is unreachable: nothing answers ({exc})"
            ) from None
        except TransportError as exc:
            raise RegistryUnreachable(f"registry {self.base_url} is unreachable: {exc}") from None
        if response.status == 401:
            if self._authorizer.has_credentials:
                raise AuthenticationError(
                    f"registry {self.base_url} refused the credentials (401)", status=401
                )
            raise AuthenticationError(
                f"registry {self.base_url} requires authentication; set --auth or REGISTRY_AUTH",
                status=401,
            )
        if 300 <= response.status < 400:
            target = f" to {response.location}" if response.location else ""
            raise RegistryUnreachable(
                f"registry {self.base_url} answered GET /v2/ with a {response.status} "
                f"redirect{target}; use the URL the registry itself serves",
                status=response.status,
            )
        if response.status != 200:
            raise RegistryUnreachable(
                f"registry {self.base_url} answered {response.status} to GET /v2/ "
                "(is this a Docker/OCI registry URL?)",
                status=response.status,
            )

    async def head_manifest(
        self, repository: str, digest: Digest, *, fresh_connection: bool = False
    ) -> RegistryResponse:
        """``HEAD /v2/<name>/manifests/<digest>`` with every manifest type accepted and a
        pull-only token scope (proves which storage the registry serves; writes nothing)."""
        return await self._request(
            "HEAD", _manifests_path(repository) + digest, repository,
            actions=PULL_ACTIONS, accept=mediatypes.ACCEPT_ALL_MANIFESTS,
            fresh_connection=fresh_connection,
        )  # fmt: skip

    async def delete_manifest(
        self, repository: str, digest: Digest, *, fresh_connection: bool = False
    ) -> RegistryResponse:
        """``DELETE /v2/<name>/manifests/<digest>``; the caller interprets the status."""
        return await self._request(
            "DELETE", _manifests_path(repository) + digest, repository,
            fresh_connection=fresh_connection,
        )  # fmt: skip

    async def get_tag(self, repository: str, tag: str) -> RegistryResponse:
        """``GET /v2/<name>/manifests/<tag>`` with a pull-only scope; for a tag that does
        not exist, the start of the error body tells registry versions apart."""
        return await self._request(
            "GET", _manifests_path(repository) + quote(tag, safe=""), repository,
            actions=PULL_ACTIONS, accept=mediatypes.ACCEPT_ALL_MANIFESTS,
        )  # fmt: skip

    async def head_tag(self, repository: str, tag: str) -> RegistryResponse:
        """``HEAD /v2/<name>/manifests/<tag>`` with every manifest type accepted: where
        the tag points now (``Docker-Content-Digest``), with a pull-only scope."""
        return await self._request(
            "HEAD", _manifests_path(repository) + quote(tag, safe=""), repository,
            actions=PULL_ACTIONS, accept=mediatypes.ACCEPT_ALL_MANIFESTS,
        )  # fmt: skip

    async def delete_tag(self, repository: str, tag: str) -> RegistryResponse:
        """``DELETE /v2/<name>/manifests/<tag>``: distribution 3 removes that tag alone
        (202; 404 ``MANIFEST_UNKNOWN`` for a tag it does not have); 2.8 refuses any tag
        with 400 ``DIGEST_INVALID`` and changes nothing."""
        return await self._request(
            "DELETE", _manifests_path(repository) + quote(tag, safe=""), repository
        )

    async def put_manifest(
        self,
        repository: str,
        reference: str,
        body: bytes,
        media_type: str,
        *,
        fresh_connection: bool = False,
    ) -> RegistryResponse:
        """``PUT /v2/<name>/manifests/<reference>`` (used only to probe read-only mode,
        with a manifest the registry must refuse)."""
        return await self._request(
            "PUT", _manifests_path(repository) + quote(reference, safe=""), repository,
            actions=PROBE_ACTIONS, body=body, content_type=media_type,
            fresh_connection=fresh_connection,
        )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _manifests_path(repository: str) -> str:
    """``/v2/<name>/manifests/``, quoted once per repository rather than per DELETE."""
    return f"/v2/{quote(repository, safe='/')}/manifests/"
