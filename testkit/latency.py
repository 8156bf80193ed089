"""A reverse proxy that adds a fixed delay to every request: object-store latency.

A real S3 region answers in 10-30 ms; moto on loopback answers in well under one. Put
this proxy between a client and moto (both the registry's s3 driver and regcleaner,
so that a comparison is fair) to model the round trip. It also counts requests by
method, for "requests per manifest" figures.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from testkit.proxy import ThreadedProxy

_HOP_BY_HOP = frozenset(
    {"transfer-encoding", "content-length", "connection", "content-encoding", "host"}
)


@dataclass
class LatencyProxy(ThreadedProxy):
    """Forwards everything to ``upstream`` after ``delay_s``; runs in its own thread.
    With ``certificate`` (PEM files of a certificate chain and its key, e.g.
    ``testkit.auth.make_tls``), it answers over TLS."""

    name = "latency proxy"
    upstream: str
    delay_s: float = 0.020
    requests: Counter[str] = field(default_factory=Counter)
    port: int = 0
    certificate: tuple[str, str] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        if self.certificate is not None:
            self.scheme = "https"

    def _site_options(self) -> dict[str, Any]:
        if self.certificate is None:
            return {}
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.certificate)
        return {"ssl_context": context}

    def _session_options(self) -> dict[str, Any]:
        return {"connector": aiohttp.TCPConnector(limit=256)}

    def _app_options(self) -> dict[str, Any]:
        return {"client_max_size": 1 << 30}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.requests[request.method] += 1
        body = await request.read()
        await asyncio.sleep(self.delay_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers,
            allow_redirects=False,
        ) as upstream:  # fmt: skip
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            response = web.Response(status=upstream.status, body=data, headers=out)
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # No body comes with a HEAD, but its Content-Length is the object's size.
                response.headers["Content-Length"] = upstream.headers["Content-Length"]
            return response
