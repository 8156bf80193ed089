"""WWW-Authenticate parsing (property-tested) and the token cache."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from regcleaner.config import Credentials
from regcleaner.registry.auth import (
    PULL_ACTIONS,
    Authorizer,
    Challenge,
    basic_authorization,
    challenge_error,
    parse_www_authenticate,
)
from regcleaner.registry.client import nothing_answered

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
values = st.text(
    st.characters(min_codepoint=32, max_codepoint=126), max_size=30
)  # commas, quotes, backslashes, spaces included


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    st.lists(
        st.tuples(tokens, st.dictionaries(tokens.map(str.lower), values, min_size=1, max_size=4)),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([", ", ",", " , "]),
)
def test_serialised_challenges_parse_back(
    challenges: list[tuple[str, dict[str, str]]], separator: str
) -> None:
    header = separator.join(
        f"{scheme} " + separator.join(f"{k}={quote(v)}" for k, v in params.items())
        for scheme, params in challenges
    )
    parsed = parse_www_authenticate(header)
    assert parsed == [Challenge(scheme.lower(), params) for scheme, params in challenges]


@given(st.text(max_size=200))
def test_parser_never_raises(header: str) -> None:
    for challenge in parse_www_authenticate(header):
        assert challenge.scheme


def test_real_world_headers() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token?a=1,b=2",service="registry.example.com",'
        'scope="repository:org/app:pull,delete",error="insufficient_scope"'
    )
    [bearer] = parse_www_authenticate(header)
    assert bearer.params == {
        "realm": "https://auth.example.com/token?a=1,b=2",
        "service": "registry.example.com",
        "scope": "repository:org/app:pull,delete",
        "error": "insufficient_scope",
    }
    assert challenge_error(header) == "insufficient_scope"
    both = parse_www_authenticate('Basic realm="Harbor", Bearer realm="https://h/service/token"')
    assert [c.scheme for c in both] == ["basic", "bearer"]
    token68 = parse_www_authenticate("Negotiate abc123==, Basic realm=x")
    assert token68 == [Challenge("negotiate", {"": "abc123=="}), Challenge("basic", {"realm": "x"})]
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate('Bearer realm="unterminated') == [Challenge("bearer")]


def test_basic_header_and_redaction() -> None:
    credentials = Credentials("user", "p:a:ss")
    assert basic_authorization(credentials) == "Basic dXNlcjpwOmE6c3M="
    assert "p:a:ss" not in repr(credentials)
    assert "dXNlcjpwOmE6c3M" not in repr(Authorizer(credentials))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_token_server(
    answer: dict[str, Any], test: Any, *, delay_s: float = 0.0
) -> list[dict[str, str]]:
    """Run ``test(session, realm)`` against a token endpoint; return the requests seen."""
    import aiohttp

    seen: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if delay_s:
            await asyncio.sleep(delay_s)  # hold the fetch open so callers pile up
        return web.json_response(answer)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/token", token)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        realm = f"http://127.0.0.1:{int(site.name.rsplit(':', 1)[1])}/token"
        try:
            async with aiohttp.ClientSession() as session:
                await test(session, realm)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return seen


def challenge(realm: str) -> str:
    return f'Bearer realm="{realm}",service="svc"'


def test_concurrent_requests_share_one_fetch_and_tokens_are_cached_per_scope() -> None:
    clock = Clock()
    authorizer = Authorizer(Credentials("u", "p"), clock=clock)

    async def test(session: Any, realm: str) -> None:
        assert await authorizer.challenged(session, "app", challenge(realm), "Basic x")
        headers = await asyncio.gather(*(authorizer.header(session, "app") for _ in range(20)))
        assert set(headers) == {"Bearer T1"}
        await asyncio.gather(*(authorizer.header(session, "other") for _ in range(20)))

    seen = with_token_server({"token": "T1", "expires_in": 300}, test, delay_s=0.05)
    assert [q["scope"] for q in seen] == ["repository:app:pull,delete",
                                          "repository:other:pull,delete"]  # fmt: skip
    assert all(q["service"] == "svc" for q in seen)


def test_token_is_refreshed_before_it_expires() -> None:
    clock = Clock()
    authorizer = Authorizer(None, clock=clock)

    async def test(session: Any, realm: str) -> None:
        await authorizer.challenged(session, "app", challenge(realm), None)
        await authorizer.header(session, "app")
        clock.now += 40  # 100 s token, refreshed 20 s early: still fresh
        await authorizer.header(session, "app")
        clock.now += 45
        await authorizer.header(session, "app")

    seen = with_token_server({"access_token": "A", "expires_in": 100}, test)
    assert len(seen) == 2


def test_a_rejected_token_is_replaced_once_for_all_waiters() -> None:
    authorizer = Authorizer(None, clock=Clock())

    async def test(session: Any, realm: str) -> None:
        await authorizer.challenged(session, "app", challenge(realm), None)
        sent = await authorizer.header(session, "app")
        results = await asyncio.gather(
            *(authorizer.challenged(session, "app", challenge(realm), sent) for _ in range(10))
        )
        assert all(results)

    seen = with_token_server({"token": "T"}, test, delay_s=0.05)
    assert len(seen) == 2


@pytest.mark.parametrize("header", ['Basic realm="r"', "", "Digest realm=x"])
def test_non_bearer_401_means_refused(header: str) -> None:
    authorizer = Authorizer(Credentials("u", "p"))

    async def test(session: Any, realm: str) -> None:
        del realm
        assert not await authorizer.challenged(session, "app", header, "Basic x")

    assert with_token_server({}, test) == []


# -- what counts as "nothing answers" (the gate's --registry-stopped) -------------------------


@pytest.mark.parametrize(
    ("error", "nothing"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),
        # A server may be there: a DNS server that did not answer, a timeout, a reset,
        # a TLS handshake of any outcome.
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), False),
        (TimeoutError(), False),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), False),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
        (None, False),
    ],
    ids=[
        "refused",
        "no-route",
        "no-network",
        "no-such-host",
        "dns-timeout",
        "timeout",
        "reset",
        "tls",
        "none",
    ],
)
def test_only_no_server_at_all_counts_as_nothing_answering(
    error: BaseException | None, nothing: bool
) -> None:
    assert nothing_answered(error) is nothing


def test_the_identity_probe_asks_for_pull_only() -> None:
    """The storage-identity HEADs ask the token server for ``pull`` and nothing more."""
    assert Authorizer(None).scope("team/app", PULL_ACTIONS) == "repository:team/app:pull"
