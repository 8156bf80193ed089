"""A fault-injecting reverse proxy in front of the real registry (test code only).

The registry cannot produce a 429 storm, a reset or a stall on demand; this proxy
forwards everything to it and, for DELETE requests, follows a script of faults.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from testkit.proxy import ThreadedProxy


@dataclass
class Seen:
    """One DELETE the proxy received."""

    at: float
    path: str
    answered: int  # status sent, 0 for a reset or a stall


@dataclass
class FaultScript:
    """Decides, per DELETE (numbered from 1), what the proxy does instead of forwarding.

    Return None to forward, an int status (429 gets ``Retry-After``), "reset" to drop
    the connection, or "stall" to hold the request until the client gives up.
    """

    decide: Callable[[int, str], int | str | None] = lambda n, path: None
    retry_after: str = "1"
    methods: frozenset[str] = frozenset({"DELETE"})
    body: str = '{"errors":[{"code":"INJECTED","message":"fault"}]}'
    content_type: str = "application/json"


@dataclass
class FaultProxy(ThreadedProxy):
    """Runs in its own thread with its own event loop."""

    name = "fault proxy"
    upstream: str
    script: FaultScript = field(default_factory=FaultScript)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def _runner_options(self) -> dict[str, Any]:
        return {"handler_cancellation": True}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method in self.script.methods:
            number = len(self.seen) + 1
            action = self.script.decide(number, request.path_qs)
            record = Seen(time.monotonic(), request.path, 0)
            self.seen.append(record)
            if action == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            if action == "stall":
                await asyncio.sleep(3600)
            if action == "lose-answer":
                # The registry deletes, but the client never hears so: it must retry.
                await self._forward(request, record)
                record.answered = 502
                return web.Response(status=502)
            if isinstance(action, int):
                record.answered = action
                headers = {"Retry-After": self.script.retry_after} if action == 429 else {}
                headers["Content-Type"] = self.script.content_type
                return web.Response(status=action, headers=headers, text=self.script.body)
            return await self._forward(request, record)
        return await self._forward(request, None)

    async def _forward(self, request: web.Request, record: Seen | None) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                data = await upstream.read()
                status = upstream.status
                out_headers = {
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower()
                    not in ("transfer-encoding", "content-length", "connection", "content-encoding")
                }
        except aiohttp.ClientError:
            status, data, out_headers = 502, b"upstream down", {}
        if record is not None:
            record.answered = status
        return web.Response(status=status, body=data, headers=out_headers)
