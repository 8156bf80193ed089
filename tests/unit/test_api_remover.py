"""The API remover's retry and stop decisions, against a scripted HTTP server for what a
real registry won't do on demand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from regcleaner.concurrency import StopScope
from regcleaner.config import Limits, TLSOptions
from regcleaner.digest import Digest
from regcleaner.errors import AuthenticationError, DeletionDisabled, PermissionDenied
from regcleaner.planner import GONE, Reason, ReasonKind
from regcleaner.registry.auth import Authorizer
from regcleaner.registry.client import RegistryClient, parse_error_body, parse_retry_after
from regcleaner.removers.api import ANSWER_LOST, STOPPED, ApiRemover
from regcleaner.removers.base import Outcome
from regcleaner.retry import Action, Backoff, classify

DIGEST = Digest("sha256:" + "c" * 64)
Script = list[Callable[[web.Request], Awaitable[web.StreamResponse]]]


def status(code: int, headers: dict[str, str] | None = None, error: str = "") -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        body = f'{{"errors":[{{"code":"{error}","message":"scripted"}}]}}' if error else ""
        return web.Response(status=code, headers=headers, text=body)

    return answer


async def reset(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.abort()
    return web.Response(status=500)


async def with_server(
    script: Script, test: Callable[[str, list[float]], Awaitable[None]]
) -> list[float]:
    """Serve ``script`` (one handler per request, the last one repeats) on loopback."""
    seen: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(time.monotonic())
        step = script[min(len(seen), len(script)) - 1]
        return await step(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(site.name.rsplit(":", 1)[1])
    try:
        await test(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()
    return seen


def run_delete(
    script: Script,
    limits: Limits | None = None,
    *,
    last_look: Callable[[Digest], Awaitable[Reason | None]] | None = None,
    stop_after_sleeps: int | None = None,
) -> tuple[Any, list[float], list[float]]:
    """Delete one digest against ``script``; return (result or exception, sleeps, hits)."""
    limits = limits or Limits(max_attempts=4)
    sleeps: list[float] = []
    outcome: list[Any] = []

    async def fake_pause(delay: float, stopping: StopScope | None) -> bool:
        sleeps.append(delay)
        return stop_after_sleeps is None or len(sleeps) <= stop_after_sleeps

    async def test(url: str, seen: list[float]) -> None:
        async with RegistryClient(url, Authorizer(None), TLSOptions(), limits) as client:
            backoff = Backoff(limits.backoff_base_s, limits.backoff_cap_s, jitter=lambda: 0.5)
            remover = ApiRemover(client, limits, backoff=backoff, pause=fake_pause)
            try:
                outcome.append(await remover.delete("repo", DIGEST, last_look))
            except Exception as exc:  # the test inspects it
                outcome.append(exc)

    hits = asyncio.run(with_server(script, test))
    return outcome[0], sleeps, hits


def test_429_honours_retry_after_then_succeeds() -> None:
    result, sleeps, hits = run_delete(
        [status(429, {"Retry-After": "7"}, "TOOMANYREQUESTS"), status(429), status(202)]
    )
    assert result.outcome is Outcome.DELETED
    assert result.attempts == 3
    assert len(hits) == 3
    assert sleeps[0] == 7.0  # never shorter than Retry-After
    assert sleeps[1] == pytest.approx(0.5)  # 1 s ceiling x jitter 0.5


def test_5xx_burst_and_connection_reset_are_retried() -> None:
    result, sleeps, hits = run_delete([status(503), reset, status(502), status(202)])
    assert result.outcome is Outcome.DELETED
    assert len(hits) == 4
    assert len(sleeps) == 3  # every retry, the reset's included, is ours and backs off


def test_persistent_500_fails_after_bounded_attempts() -> None:
    result, sleeps, hits = run_delete([status(500, error="UNKNOWN")])
    assert result.outcome is Outcome.FAILED
    assert len(hits) == 4
    assert sleeps == [0.25, 0.5, 1.0]  # 0.5 s base doubling, jitter 0.5
    assert "gave up after 4 attempts" in result.detail
    assert "UNKNOWN" in result.detail


def test_404_is_already_gone() -> None:
    result, _, hits = run_delete([status(404, error="MANIFEST_UNKNOWN")])
    assert result.outcome is Outcome.ALREADY_GONE
    assert len(hits) == 1


@pytest.mark.parametrize(
    ("code", "error"),
    [(405, DeletionDisabled), (401, AuthenticationError), (403, PermissionDenied)],
)
def test_stop_statuses_raise_without_retry(code: int, error: type[Exception]) -> None:
    result, sleeps, hits = run_delete([status(code, error="DENIED")])
    assert isinstance(result, error)
    assert len(hits) == 1
    assert sleeps == []


def test_a_lost_answer_then_404_counts_as_deleted_by_this_run() -> None:
    """A 502 after the registry deleted (a proxy timing out), then 404 on the retry."""
    result, _sleeps, hits = run_delete([status(502), status(404, error="MANIFEST_UNKNOWN")])
    assert result.outcome is Outcome.DELETED
    assert result.detail == ANSWER_LOST
    assert len(hits) == 2


def test_a_lost_answer_then_link_gone_at_the_last_look_counts_as_deleted() -> None:
    looks: list[Digest] = []

    async def last_look(digest: Digest) -> Reason | None:
        looks.append(digest)
        return None if len(looks) == 1 else GONE

    result, _, hits = run_delete([reset, status(202)], last_look=last_look)
    assert result.outcome is Outcome.DELETED
    assert result.detail == ANSWER_LOST
    assert len(hits) == 1  # the retry was never sent: the last look found it gone


def test_link_gone_before_any_attempt_is_already_gone() -> None:
    async def last_look(digest: Digest) -> Reason | None:
        return GONE

    result, _, hits = run_delete([status(202)], last_look=last_look)
    assert result.outcome is Outcome.ALREADY_GONE
    assert hits == []


def test_a_stop_interrupts_the_retries() -> None:
    result, sleeps, hits = run_delete([status(503)], stop_after_sleeps=0)
    assert result.outcome is Outcome.KEPT
    assert result.reason == Reason(ReasonKind.STOPPED)
    assert len(hits) == 1  # nothing sent after the stop
    assert len(sleeps) == 1


def test_a_stop_after_no_answer_reports_the_outcome_as_unknown() -> None:
    result, _, hits = run_delete([reset], stop_after_sleeps=0)
    assert result.outcome is Outcome.FAILED
    assert "outcome unknown" in result.detail
    assert len(hits) == 1


def test_other_4xx_fails_without_retry() -> None:
    result, _, hits = run_delete([status(400, error="DIGEST_INVALID")])
    assert result.outcome is Outcome.FAILED
    assert len(hits) == 1


def test_rate_limit_is_never_exceeded() -> None:
    limits = Limits(concurrency=16, rate=25)

    async def test(url: str, seen: list[float]) -> None:
        async with RegistryClient(url, Authorizer(None), TLSOptions(), limits) as client:
            remover = ApiRemover(client, limits)
            results = await asyncio.gather(*(remover.delete("r", DIGEST) for _ in range(60)))
        assert all(r.outcome is Outcome.DELETED for r in results)

    hits = asyncio.run(with_server([status(202)], test))
    assert len(hits) == 60
    for i, start in enumerate(hits):
        in_window = sum(1 for t in hits[i:] if t - start < 1.0)
        assert in_window <= 25 + 1  # leaky bucket: capacity plus the one draining


# -- a stop starts no request ---------------------------------------------------------------


def stalled_until(released: asyncio.Event, arrived: asyncio.Event, answer: int = 202) -> Any:
    """A handler that sets ``arrived``, then answers once ``released`` is set: a request
    in flight."""

    async def handler(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await released.wait()
        return web.Response(status=answer)

    return handler


def test_deletions_queued_for_a_slot_are_not_sent_after_a_stop() -> None:
    """Concurrency 1: one DELETE in flight, two queued for the slot. A stop sends neither
    of the queued ones; the one in flight finishes."""
    limits = Limits(concurrency=1, per_repository=1)
    released, arrived = asyncio.Event(), asyncio.Event()
    results: list[Any] = []

    async def test(url: str, seen: list[float]) -> None:
        scope = StopScope(grace_s=30)
        async with RegistryClient(url, Authorizer(None), TLSOptions(), limits) as client:
            remover = ApiRemover(client, limits, stopping=scope)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(remover.delete("r", DIGEST)) for _ in range(3)]
                await arrived.wait()
                scope.request_stop("SIGTERM")
                await asyncio.sleep(0.05)  # the queued ones have ended by now
                results.extend(task.result() for task in tasks[1:] if task.done())
                released.set()
            results.insert(0, tasks[0].result())

    hits = asyncio.run(with_server([stalled_until(released, arrived)], test))
    assert len(hits) == 1
    assert results[0].outcome is Outcome.DELETED
    assert [r.outcome for r in results[1:]] == [Outcome.KEPT, Outcome.KEPT]
    assert all(r.reason == STOPPED for r in results[1:])


def test_a_deletion_waiting_for_the_rate_limiter_is_not_sent_after_a_stop() -> None:
    limits = Limits(concurrency=4, rate=1)
    waited: list[float] = []
    results: list[Any] = []

    async def test(url: str, seen: list[float]) -> None:
        scope = StopScope(grace_s=30)
        async with RegistryClient(url, Authorizer(None), TLSOptions(), limits) as client:
            remover = ApiRemover(client, limits, stopping=scope)
            results.append(await remover.delete("r", DIGEST))  # takes this second's turn
            asyncio.get_running_loop().call_later(0.1, scope.request_stop, "SIGTERM")
            started = time.monotonic()
            results.append(await remover.delete("r", DIGEST))  # waits ~1 s for its turn
            waited.append(time.monotonic() - started)

    hits = asyncio.run(with_server([status(202)], test))
    assert len(hits) == 1
    assert results[0].outcome is Outcome.DELETED
    assert results[1].outcome is Outcome.KEPT
    assert results[1].reason == STOPPED
    assert waited[0] < 0.5  # ended at the stop, not at the limiter's next turn


def test_a_stop_during_the_last_look_sends_nothing() -> None:
    scope = StopScope()

    async def last_look(digest: Digest) -> Reason | None:
        scope.request_stop("SIGTERM")  # the look at storage took a while
        return None

    results: list[Any] = []

    async def test(url: str, seen: list[float]) -> None:
        limits = Limits()
        async with RegistryClient(url, Authorizer(None), TLSOptions(), limits) as client:
            remover = ApiRemover(client, limits, stopping=scope)
            results.append(await remover.delete("r", DIGEST, last_look))

    hits = asyncio.run(with_server([status(202)], test))
    assert hits == []
    assert results[0].reason == STOPPED


def test_a_stop_ends_a_real_backoff_at_once() -> None:
    """No fake pause: the scope's own sleep, with a 30 s Retry-After."""
    limits = Limits(max_attempts=4)
    results: list[Any] = []
    waited: list[float] = []

    async def test(url: str, seen: list[float]) -> None:
        scope = StopScope()
        async with RegistryClient(url, Authorizer(None), TLSOptions(), limits) as client:
            remover = ApiRemover(client, limits, stopping=scope)
            asyncio.get_running_loop().call_later(0.2, scope.request_stop, "SIGTERM")
            started = time.monotonic()
            results.append(await remover.delete("r", DIGEST))
            waited.append(time.monotonic() - started)

    hits = asyncio.run(with_server([status(429, {"Retry-After": "30"})], test))
    assert len(hits) == 1
    assert results[0].outcome is Outcome.KEPT
    assert results[0].reason == Reason(ReasonKind.STOPPED)
    assert waited[0] < 2


@pytest.mark.parametrize(
    ("first", "outcome"), [(reset, Outcome.FAILED), (status(503), Outcome.KEPT)],
    ids=["no-answer", "503"],
)  # fmt: skip
def test_a_stop_while_a_retry_waits_for_its_turn(first: Any, outcome: Outcome) -> None:
    """The retry waits for the rate limiter and the stop comes: after no answer at all
    the outcome is unknown (the registry may have deleted), after a 503 it is kept."""
    limits = Limits(max_attempts=4, rate=1)
    results: list[Any] = []

    async def test(url: str, seen: list[float]) -> None:
        scope = StopScope()
        async with RegistryClient(url, Authorizer(None), TLSOptions(), limits) as client:
            backoff = Backoff(jitter=lambda: 0.0)  # no backoff: straight to the limiter
            remover = ApiRemover(client, limits, stopping=scope, backoff=backoff)
            asyncio.get_running_loop().call_later(0.3, scope.request_stop, "SIGTERM")
            results.append(await remover.delete("r", DIGEST))

    hits = asyncio.run(with_server([first, status(202)], test))
    assert len(hits) == 1
    assert results[0].outcome is outcome
    assert results[0].attempts == 1
    if outcome is Outcome.FAILED:
        assert "outcome unknown" in results[0].detail
    else:
        assert results[0].reason == STOPPED


def test_a_stop_signalled_by_an_event_ends_the_waits_too() -> None:
    """The engine of today hands over an asyncio.Event: the remover follows it during its
    session, so a DELETE queued for the rate limiter is not sent either."""
    limits = Limits(concurrency=4, rate=1)
    results: list[Any] = []
    waited: list[float] = []

    async def test(url: str, seen: list[float]) -> None:
        stopping = asyncio.Event()
        client = RegistryClient(url, Authorizer(None), TLSOptions(), limits)
        remover = ApiRemover(client, limits, stopping=stopping)
        async with remover.session():  # opens and closes the client
            results.append(await remover.delete("r", DIGEST))
            asyncio.get_running_loop().call_later(0.1, stopping.set)
            started = time.monotonic()
            results.append(await remover.delete("r", DIGEST))
            waited.append(time.monotonic() - started)

    hits = asyncio.run(with_server([status(200), status(202)], test))
    assert len(hits) == 2  # the session's ping, then the first DELETE
    assert results[0].outcome is Outcome.DELETED
    assert results[1].reason == STOPPED
    assert waited[0] < 0.5


def test_classify_covers_the_status_space() -> None:
    assert classify(202) is Action.DONE
    assert classify(404) is Action.GONE
    assert classify(429) is Action.RETRY
    assert classify(599) is Action.RETRY
    assert classify(418) is Action.FAIL


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("99999") == 300.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_error_body_parsing() -> None:
    assert parse_error_body(b'{"errors":[{"code":"DENIED","message":"no"}]}') == ("DENIED", "no")
    assert parse_error_body(b"<html>") == ("", "")
    assert parse_error_body(b'{"errors":[]}') == ("", "")
