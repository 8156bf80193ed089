"""What the test suite's reverse proxies share: an aiohttp server on 127.0.0.1 with an
event loop of its own thread, and a client session towards the upstream."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
from aiohttp import web


class ThreadedProxy:
    """``start``/``stop``/``url`` for a proxy dataclass that has the fields ``port``,
    ``_loop``, ``_thread``, ``_runner`` and ``_session``, and a ``_handle`` method.
    Subclasses say how their session and server are made (``_session_options``,
    ``_app_options``, ``_runner_options``)."""

    name = "proxy"
    port: int
    _loop: asyncio.AbstractEventLoop | None
    _thread: threading.Thread | None
    _runner: web.AppRunner | None
    _session: aiohttp.ClientSession | None

    scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _session_options(self) -> dict[str, Any]:
        return {}

    def _app_options(self) -> dict[str, Any]:
        return {}

    def _runner_options(self) -> dict[str, Any]:
        return {}

    def _site_options(self) -> dict[str, Any]:
        """Options of the listening site (``ssl_context`` for TLS)."""
        return {}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

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
            raise RuntimeError(f"{self.name} did not start")

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False, **self._session_options())
        app = web.Application(**self._app_options())
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, **self._runner_options())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, **self._site_options())  # 0: any
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
