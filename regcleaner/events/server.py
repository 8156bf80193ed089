"""``regcleaner events serve``: receive the registry's notifications, record pull times.

- ``POST /events``: one envelope. 200 once its manifest pulls are committed to disk (the
  registry's retry queue holds an event until then, so a restart loses nothing it
  delivered); 400 malformed (nothing recorded), 401 without the bearer token, 413 over
  ``max_body`` bytes, 503 when the write failed (the registry retries).
- ``GET /healthz``: 200 while the record is writable; ``GET /metrics``: Prometheus text.

Group commit: handlers hand their pulls to one writer task and wait; the writer takes
everything queued since its last commit and writes it in one transaction, off the event
loop. Under load many envelopes share one fsync; when idle an envelope is written at once.
The first envelope accepted into a new file is committed even when it holds no pull: its
time is the start of coverage (``recording_since``), which retention's safe default needs.
SIGTERM or SIGINT: stop accepting, let in-flight requests finish (their pulls are
committed), close the file, exit 0.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from regcleaner.events.envelope import EnvelopeError, ManifestPull, parse_envelope
from regcleaner.events.store import PullStore

log = logging.getLogger("regcleaner.events")

DEFAULT_MAX_BODY = 1024 * 1024
MAX_BATCH_PULLS = 20_000
"""A commit takes at most this many pulls; the rest wait for the next one."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything ``events serve`` needs."""

    host: str
    port: int
    db: Path
    token: str | None
    max_body: int = DEFAULT_MAX_BODY
    shutdown_timeout_s: float = 20.0


class ServiceMetrics:
    """The service's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.envelopes = Counter(
            "regcleaner_events_envelopes", "Envelopes received, by outcome.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.events = Counter(
            "regcleaner_events_events", "Events in accepted envelopes.", registry=self.registry
        )
        self.pulls = Counter(
            "regcleaner_events_manifest_pulls", "Manifest pulls committed.", registry=self.registry
        )
        self.commit_seconds = Histogram(
            "regcleaner_events_commit_seconds", "Duration of one group commit.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.commit_envelopes = Histogram(
            "regcleaner_events_commit_envelopes", "Envelopes sharing one commit.",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )  # fmt: skip
        self.last_commit = Gauge(
            "regcleaner_events_last_commit_timestamp_seconds", "When the last commit ended.",
            registry=self.registry,
        )  # fmt: skip
        self.recording_since = Gauge(
            "regcleaner_events_recording_since_timestamp_seconds",
            "Since when pulls have been recorded.", registry=self.registry,
        )  # fmt: skip
        self.write_failed = Gauge(
            "regcleaner_events_write_failing", "1 while the last commit failed.",
            registry=self.registry,
        )  # fmt: skip


class GroupCommitWriter:
    """One writer task: pulls queued by many requests go to disk in one transaction."""

    def __init__(
        self, store: PullStore, metrics: ServiceMetrics, recording_since: float | None = None
    ) -> None:
        self._store = store
        self._metrics = metrics
        self.recording_since = recording_since
        """None until the first envelope is committed: then coverage begins."""
        self._pending: list[tuple[list[ManifestPull], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.failing = False

    async def write(self, pulls: list[ManifestPull]) -> None:
        """Return once ``pulls`` are committed; raise if the commit failed."""
        if self._closing:
            raise RuntimeError("the service is stopping")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((pulls, future))
        self._wake.set()
        await asyncio.shield(future)

    def close(self) -> None:
        """Finish what is queued, then end ``run``."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        """Commit queued pulls until closed and drained."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._take_batch()
                await self._commit(batch)
            if self._closing and not self._pending:
                return

    def _take_batch(self) -> list[tuple[list[ManifestPull], asyncio.Future[None]]]:
        count = 0
        taken = 0
        for pulls, _ in self._pending:
            if taken and count + len(pulls) > MAX_BATCH_PULLS:
                break
            count += len(pulls)
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    async def _commit(self, batch: list[tuple[list[ManifestPull], asyncio.Future[None]]]) -> None:
        pulls = [pull for request_pulls, _ in batch for pull in request_pulls]
        started = time.perf_counter()
        first = time.time() if self.recording_since is None else None
        try:
            await asyncio.to_thread(self._store.record, pulls, started_at=first)
        except Exception as exc:  # every waiter learns; the registry retries them
            self.failing = True
            self._metrics.write_failed.set(1)
            log.error("cannot write the pull record %s: %s", self._store.path, exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.failing = False
        self._metrics.write_failed.set(0)
        if first is not None:
            self.recording_since = first
            self._metrics.recording_since.set(first)
            log.info("first envelope recorded: pull recording covers the time from now on")
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.commit_envelopes.observe(len(batch))
        self._metrics.last_commit.set(time.time())
        self._metrics.pulls.inc(len(pulls))
        for _, future in batch:
            if not future.done():
                future.set_result(None)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(config: ServeConfig, writer: GroupCommitWriter, metrics: ServiceMetrics) -> (
    web.Application
):  # fmt: skip
    """The aiohttp application: routes, bearer check, body limit."""
    expected = f"Bearer {config.token}".encode() if config.token else None

    async def receive(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                metrics.envelopes.labels("unauthorized").inc()
                return web.json_response(
                    {"error": "a valid bearer token is required"}, status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="regcleaner-events"'},
                )  # fmt: skip
        if request.content_length is not None and request.content_length > config.max_body:
            metrics.envelopes.labels("too-large").inc()
            return _error(413, f"envelope over {config.max_body} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.envelopes.labels("too-large").inc()
            return _error(413, f"envelope over {config.max_body} bytes")
        try:
            pulls, event_count = parse_envelope(body)
        except EnvelopeError as exc:
            metrics.envelopes.labels("malformed").inc()
            log.warning("refused a malformed envelope from %s: %s", request.remote, exc)
            return _error(400, f"malformed envelope: {exc}")
        # The first envelope is committed even without pulls: it starts coverage.
        if pulls or writer.recording_since is None:
            try:
                await writer.write(pulls)
            except Exception:
                metrics.envelopes.labels("failed").inc()
                return _error(503, "the pull record cannot be written; retry later")
        metrics.envelopes.labels("recorded").inc()
        metrics.events.inc(event_count)
        return web.json_response({"recorded": len(pulls)})

    async def healthz(request: web.Request) -> web.Response:
        if writer.failing:
            return _error(503, "the last write of the pull record failed")
        return web.json_response({"status": "ok"})

    async def metrics_page(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=config.max_body)
    app.router.add_post("/events", receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def serve(config: ServeConfig, *, ready: Callable[[int], Awaitable[None] | None] | None
                = None) -> None:  # fmt: skip
    """Run the service until SIGTERM or SIGINT."""
    store = await asyncio.to_thread(PullStore, config.db)
    metrics = ServiceMetrics()
    since = await asyncio.to_thread(store.recording_since)
    if since is not None:
        metrics.recording_since.set(since)
    writer = GroupCommitWriter(store, metrics, since)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        build_app(config, writer, metrics), shutdown_timeout=config.shutdown_timeout_s,
        access_log=None, handle_signals=False,
    )  # fmt: skip
    try:
        async with asyncio.TaskGroup() as tasks:
            writer_task = tasks.create_task(writer.run())
            await runner.setup()
            site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
            await site.start()
            port = _bound_port(runner, config.port)
            log.info("recording pulls into %s; listening on %s:%d", config.db, config.host, port)
            if ready is not None:
                outcome = ready(port)
                if outcome is not None:
                    await outcome
            await stop.wait()
            log.info("stopping: finishing requests in flight")
            # Stops accepting, then waits for handlers in flight (each waits for its commit).
            await runner.cleanup()
            writer.close()
            await writer_task
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await asyncio.to_thread(store.close)
    log.info("stopped; the pull record %s is closed", config.db)


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return fallback
