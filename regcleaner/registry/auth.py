"""Authorization for registry requests: basic, and the Docker bearer-token flow.

Basic credentials are sent as they are. When the registry answers 401 with a
``Bearer`` challenge, a token is fetched from the challenge's ``realm`` for
``repository:<name>:pull,delete`` (``*`` for older Harbor, which grants delete only
that way), cached per scope, shared by concurrent requests (one fetch per scope),
refreshed before ``expires_in`` runs out and once after a 401. Header values are
secrets: they are kept out of reprs, logs and exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from regcleaner.config import Credentials
from regcleaner.errors import AuthenticationError, TokenFetchError

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
DEFAULT_EXPIRES_IN_S = 60.0
DELETE_ACTIONS = "pull,delete"
PULL_ACTIONS = "pull"
PROBE_ACTIONS = "pull,push,delete"


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header (RFC 7235)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_www_authenticate(value: str) -> list[Challenge]:
    """Parse every challenge in a header; quoted values may hold commas and escapes.

    Malformed input never raises: parsing stops at the first thing it cannot read
    and returns the challenges understood so far.
    """
    challenges: list[Challenge] = []
    current: Challenge | None = None
    pos, end = 0, len(value)

    def skip(chars: str) -> None:
        nonlocal pos
        while pos < end and value[pos] in chars:
            pos += 1

    while True:
        skip(" \t,")
        if pos >= end:
            break
        match = _TOKEN.match(value, pos)
        if match is None:
            break
        name = match.group()
        after = match.end()
        probe = after
        while probe < end and value[probe] in " \t":
            probe += 1
        is_param = (
            current is not None
            and probe < end
            and value[probe] == "="
            and not (probe + 1 < end and value[probe + 1] == "=")
        )
        if not is_param:
            current = Challenge(name.lower())
            challenges.append(current)
            pos = after
            skip(" \t")
            token68 = _TOKEN68.match(value, pos)
            if token68 is not None:
                follow = token68.end()
                while follow < end and value[follow] in " \t":
                    follow += 1
                if follow >= end or value[follow] == ",":
                    # "Basic dXNlcg==": a token68 blob stands alone, not as parameters.
                    current.params[""] = token68.group()
                    pos = follow
            continue
        assert current is not None
        pos = probe + 1
        skip(" \t")
        if pos < end and value[pos] == '"':
            pos += 1
            chars: list[str] = []
            closed = False
            while pos < end:
                char = value[pos]
                if char == "\\" and pos + 1 < end:
                    chars.append(value[pos + 1])
                    pos += 2
                    continue
                if char == '"':
                    closed = True
                    pos += 1
                    break
                chars.append(char)
                pos += 1
            if not closed:
                break
            current.params[name.lower()] = "".join(chars)
        else:
            token = _TOKEN.match(value, pos)
            if token is None:
                current.params[name.lower()] = ""
            else:
                current.params[name.lower()] = token.group()
                pos = token.end()
    return challenges


def challenge_error(www_authenticate: str | None) -> str:
    """The ``error`` parameter of the first challenge that has one, else ""."""
    for challenge in parse_www_authenticate(www_authenticate or ""):
        if challenge.params.get("error"):
            return challenge.params["error"]
    return ""


def basic_authorization(credentials: Credentials) -> str:
    """The ``Authorization: Basic`` value (RFC 7617, UTF-8)."""
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(slots=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float


class Authorizer:
    """Produces the Authorization header for a repository's requests."""

    def __init__(
        self,
        credentials: Credentials | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._basic = basic_authorization(credentials) if credentials is not None else None
        self._clock = clock
        self._bearer: Challenge | None = None
        self._star_repositories: set[str] = set()
        self._tokens: dict[str | None, _Token] = {}
        self._locks: dict[str | None, asyncio.Lock] = {}
        self.token_fetches = 0

    def __repr__(self) -> str:
        mode = "bearer" if self._bearer else "basic" if self._basic else "anonymous"
        return f"Authorizer(mode={mode}, credentials={'<redacted>' if self._basic else None})"

    @property
    def has_credentials(self) -> bool:
        """True if a username and password were configured."""
        return self._basic is not None

    def scope(self, repository: str | None, actions: str = DELETE_ACTIONS) -> str | None:
        """The token scope for ``actions`` in ``repository`` (None: registry-wide ping)."""
        if repository is None:
            return None
        if repository in self._star_repositories:
            actions = "*"
        return f"repository:{repository}:{actions}"

    async def header(
        self,
        session: aiohttp.ClientSession,
        repository: str | None,
        actions: str = DELETE_ACTIONS,
    ) -> str | None:
        """The Authorization value to send now, fetching or refreshing a token if due."""
        if self._bearer is None:
            return self._basic
        scope = self.scope(repository, actions)
        return "Bearer " + await self._token(session, scope, rejected=None)

    async def challenged(
        self,
        session: aiohttp.ClientSession,
        repository: str | None,
        www_authenticate: str | None,
        sent: str | None,
        actions: str = DELETE_ACTIONS,
    ) -> bool:
        """Handle a 401; True if the request is worth sending once more."""
        challenges = parse_www_authenticate(www_authenticate or "")
        bearer = next(
            (c for c in challenges if c.scheme == "bearer" and c.params.get("realm")), None
        )
        if bearer is None:
            return False  # basic (or unknown) scheme: the credentials were refused
        first_bearer = self._bearer is None
        self._bearer = bearer
        if (
            bearer.params.get("error") == "insufficient_scope"
            and repository is not None
            and repository not in self._star_repositories
            and sent is not None
            and sent.startswith("Bearer ")
        ):
            # Older Harbor grants delete only to a request for "*".
            log.info("%s: token lacked the delete action; asking for action '*'", repository)
            self._star_repositories.add(repository)
        rejected = sent[len("Bearer ") :] if sent and sent.startswith("Bearer ") else None
        if not first_bearer and rejected is None and sent is not None:
            return False
        await self._token(session, self.scope(repository, actions), rejected=rejected, force=True)
        return True

    async def _token(
        self,
        session: aiohttp.ClientSession,
        scope: str | None,
        *,
        rejected: str | None,
        force: bool = False,
    ) -> str:
        lock = self._locks.setdefault(scope, asyncio.Lock())
        seen = self._tokens.get(scope)
        async with lock:
            cached = self._tokens.get(scope)
            if cached is not None:
                fresh = self._clock() < cached.refresh_at
                # Another request replaced the rejected token while this one waited.
                replaced = force and (
                    cached is not seen or (rejected is not None and cached.value != rejected)
                )
                if (fresh and not force) or replaced:
                    return cached.value
            token = await self._fetch(session, scope)
            self._tokens[scope] = token
            return token.value

    async def _fetch(self, session: aiohttp.ClientSession, scope: str | None) -> _Token:
        assert self._bearer is not None
        realm = self._bearer.params["realm"]
        query: dict[str, str] = {}
        if self._bearer.params.get("service"):
            query["service"] = self._bearer.params["service"]
        if scope is not None:
            query["scope"] = scope
        headers = {"Authorization": self._basic} if self._basic else {}
        self.token_fetches += 1
        started = self._clock()
        try:
            async with session.get(realm, params=query, headers=headers) as response:
                body = await response.content.read(1 << 20)
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TokenFetchError(
                f"token server {realm} unreachable: {type(exc).__name__}"
            ) from None
        if status in (401, 403):
            raise AuthenticationError(
                f"the token server {realm} refused the credentials ({status})", status=status
            )
        if status != 200:
            raise TokenFetchError(f"token server {realm} answered {status}", status=status)
        try:
            document = json.loads(body)
            value = document.get("token") or document.get("access_token")
            expires_in = float(document.get("expires_in") or DEFAULT_EXPIRES_IN_S)
        except (ValueError, AttributeError, TypeError):
            raise TokenFetchError(f"token server {realm} answered something not JSON") from None
        if not isinstance(value, str) or not value:
            raise TokenFetchError(f"token server {realm} answered without a token")
        expires_in = max(expires_in, 1.0)
        margin = min(30.0, expires_in * 0.2)
        return _Token(value, started + expires_in - margin)
