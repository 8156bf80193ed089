"""A reverse proxy that adds a fixed delay to every request: object-store latency.

A real S3 region answers in 10-30 ms; moto on loopback answers in well under one. Put
this proxy between a client and moto (both the registry's s3 driver and regcleaner,
so that a comparison is fair) to model the round trip. It also counts requests by
method, for "requests per manifest" figures.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP_BY_HOP = frozenset(
    {"transfer-encoding", "content-length", "connection", "content-encoding", "host"}
)


@dataclass
class LatencyProxy:
    """Forwards everything to ``upstream`` after ``delay_s``; runs in its own thread."""

    upstream: str
    delay_s: float = 0.020
    requests: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("latency proxy did not start")

    async def _start(self) -> None:
        connector = aiohttp.TCPConnector(limit=256)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site.name.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

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
