"""Deletion through the registry API: ``DELETE /v2/<name>/manifests/<digest>``.

Requests go under one global concurrency bound, one global rate (paced 1/rate apart,
no burst) and a small per-repository bound (every DELETE makes the registry read every
tag of the repository). What each answer means is decided in ``regcleaner.retry``.

A stop starts no request: every wait on the way to one (a slot, the mismatch probe,
the rate limiter, a backoff) ends when the run's ``StopScope`` is stopped, and the
stop is checked again right before each request is sent. Only requests already sent
run on, for the grace the engine gives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from regcleaner import retry
from regcleaner.concurrency import StopRequested, StopScope
from regcleaner.config import Limits
from regcleaner.digest import Digest
from regcleaner.errors import (
    AuthenticationError,
    DeletionDisabled,
    PermissionDenied,
    RegistryError,
    RegistryUnreachable,
    TransportError,
)
from regcleaner.planner import Decision, Reason, ReasonKind
from regcleaner.registry.client import RegistryClient, RegistryResponse
from regcleaner.removers.base import Outcome, Removal, WaveContext
from regcleaner.removers.direct import STOPPED_BEFORE_REMOVAL
from regcleaner.snapshots import RepositorySnapshot

log = logging.getLogger(__name__)

LastLook = Callable[[Digest], Awaitable[Reason | None]]
Pause = Callable[[float, StopScope | None], Awaitable[bool]]
REGISTRY_404 = "HTTP 404 MANIFEST_UNKNOWN"
ANSWER_LOST = "deleted: an earlier attempt's answer was lost and the retry found it gone"
STOPPED = Reason(ReasonKind.STOPPED)


def describe(response: RegistryResponse) -> str:
    """Status and registry error code for messages."""
    text = f"HTTP {response.status}"
    if response.error_code:
        text += f" {response.error_code}"
    if response.message:
        text += f": {response.message}"
    return text


def _stopped_before_retry(digest: Digest, last: str, no_answer: bool, attempts: int) -> Removal:
    """A stop came before the retry went: after an attempt that got no answer at all the
    outcome is unknown (the registry may have deleted); after a retryable status the
    manifest is kept, and the run is reported stopped."""
    if no_answer:
        return Removal(
            digest, Outcome.FAILED, f"stopped before retrying; outcome unknown ({last})",
            attempts=attempts,
        )  # fmt: skip
    return Removal(
        digest, Outcome.KEPT, f"stopped before retrying after {last}", reason=STOPPED,
        attempts=attempts,
    )  # fmt: skip


class ApiRemover:
    """Issues DELETEs under the global bounds; a stop interrupts every retry."""

    name = "api"
    watches_pushes = True
    needs_history = False
    removes_tags = False

    def __init__(
        self,
        client: RegistryClient,
        limits: Limits,
        *,
        stopping: StopScope | asyncio.Event | None = None,
        backoff: retry.Backoff | None = None,
        pause: Pause = retry.pause,
    ) -> None:
        """``stopping``: the run's stop scope; an Event (a caller not yet moved to the
        scope) is followed by a scope of the remover's own during ``session``."""
        self._client = client
        self._limits = limits
        self._followed = stopping if isinstance(stopping, asyncio.Event) else None
        self._stop = stopping if isinstance(stopping, StopScope) else StopScope()
        self._backoff = backoff or retry.Backoff(limits.backoff_base_s, limits.backoff_cap_s)
        self._pause = pause
        self._slots = asyncio.Semaphore(limits.concurrency)
        # Capacity 1: requests are paced 1/rate apart with no burst, so no one-second
        # window ever holds more than ``rate`` (+1 at its edge) DELETEs.
        self._limiter = None
        if limits.rate > 0:
            from aiolimiter import AsyncLimiter  # only when asked for: it costs start-up time

            self._limiter = AsyncLimiter(1, 1.0 / limits.rate)
        self._transport_failures_in_a_row = 0
        self.requests = 0
        self.parallel_repositories: int | None = None

    def no_more_repositories(self) -> None:
        pass

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with self._client:
            await self._client.ping()
            if self._followed is None:
                yield
                return
            async with self._stop.following(self._followed):
                yield

    async def remove_tags(
        self, repository: str, snapshot: RepositorySnapshot, tags: Sequence[tuple[str, Digest]]
    ) -> dict[str, str | None]:
        """Only where the registry deletes single tags (``removes_tags`` is set by
        ``runner.settle_tag_removal``: distribution 3); see ``regcleaner.tagremoval``."""
        from regcleaner.tagremoval import remove_tags_through_api

        del snapshot  # the registry is asked where each tag points now
        return await remove_tags_through_api(
            self._client, repository, tags, stopped=self._stopped_reason
        )

    def _stopped_reason(self) -> str | None:
        return STOPPED_BEFORE_REMOVAL if self._stop.stop_requested else None

    async def remove_wave(
        self,
        repository: str,
        snapshot: RepositorySnapshot,
        wave: Sequence[Decision],
        context: WaveContext,
    ) -> None:
        del snapshot  # the registry finds what to remove itself
        forbidden: list[str] = []
        decisions = iter(wave)  # shared: each worker takes the next undecided digest

        async def worker() -> None:
            for decision in decisions:
                digest = decision.digest
                if forbidden:
                    context.record(Removal(digest, Outcome.FAILED, forbidden[0]))
                    continue
                why = context.skip(digest)
                if why is not None:
                    context.record(Removal(digest, Outcome.KEPT, reason=why))
                    continue
                try:
                    removal = await self.delete(
                        repository, digest, context.last_look, admit=context.admit
                    )
                except asyncio.CancelledError:
                    context.record(
                        Removal(digest, Outcome.FAILED, "abandoned at stop: outcome unknown")
                    )
                    raise
                except PermissionDenied as exc:
                    forbidden.append(str(exc))
                    log.error("repository %s: %s; its other deletions are skipped", repository, exc)
                    removal = Removal(digest, Outcome.FAILED, str(exc))
                except RegistryError as exc:
                    context.fatal(exc)
                    removal = Removal(digest, Outcome.FAILED, str(exc))
                await context.confirm(removal)
                context.record(removal)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._limits.per_repository, len(wave))):
                group.create_task(worker())

    async def _send(
        self, repository: str, digest: Digest, last_look: LastLook | None, admit: LastLook | None
    ) -> RegistryResponse | Reason:
        stop = self._stop
        slot = False
        try:
            try:
                # One interruptible scope for every wait before the request (it is on the
                # path of every DELETE): a slot, the admission until the URL is proven
                # to serve this storage (before the rate limit: a DELETE held back there
                # has not used its turn), the rate limit.
                async with stop.interruptible():
                    await self._slots.acquire()
                    slot = True
                    if admit is not None:
                        verdict = await admit(digest)
                        if verdict is not None:
                            return verdict
                    if self._limiter is not None:
                        await self._limiter.acquire()
            except StopRequested:
                return STOPPED  # waiting when the run stopped: never sent
            if last_look is not None:
                # After every wait, just before the request: the last look at storage.
                verdict = await last_look(digest)
                if verdict is not None:
                    return verdict
            if stop.stop_requested:
                return STOPPED  # the last look took a while, and the run stopped meanwhile
            self.requests += 1
            return await self._client.delete_manifest(repository, digest)
        finally:
            if slot:
                self._slots.release()

    async def delete(
        self,
        repository: str,
        digest: Digest,
        last_look: LastLook | None = None,
        *,
        admit: LastLook | None = None,
    ) -> Removal:
        """Delete one manifest, retrying what can be retried; raise what stops the run.

        ``last_look`` runs right before each request is sent; a reason it returns keeps
        the manifest (or, if it says the manifest is gone after an attempt whose answer
        was lost, that attempt deleted it).
        """
        last = ""
        unanswered = False  # a request went out and no definite answer came back
        no_answer = False  # the last attempt got no HTTP answer at all
        attempts = self._limits.max_attempts
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            auth_error = ""
            before = no_answer  # of the attempt before this one
            if attempt > 1 and self._stop.stop_requested:
                return _stopped_before_retry(digest, last, before, attempt - 1)
            no_answer = False
            try:
                sent = await self._send(repository, digest, last_look, admit)
            except TransportError as exc:
                last, no_answer = str(exc), True
                action = retry.Action.RETRY
            else:
                if isinstance(sent, Reason):
                    if sent.kind is ReasonKind.GONE:
                        if unanswered:
                            return Removal(digest, Outcome.DELETED, ANSWER_LOST, attempts=attempt)
                        return Removal(digest, Outcome.ALREADY_GONE, reason=sent, attempts=attempt)
                    if sent.kind is ReasonKind.STOPPED and attempt > 1:  # stopped while it waited
                        return _stopped_before_retry(digest, last, before, attempt - 1)
                    return Removal(digest, Outcome.KEPT, reason=sent, attempts=attempt)
                self._transport_failures_in_a_row = 0
                last = describe(sent)
                retry_after, auth_error = sent.retry_after_s, sent.auth_error
                action = retry.classify(sent.status)
            if action is retry.Action.DONE:
                return Removal(digest, Outcome.DELETED, attempts=attempt)
            if action is retry.Action.GONE:
                if unanswered:
                    return Removal(digest, Outcome.DELETED, ANSWER_LOST, attempts=attempt)
                return Removal(
                    digest, Outcome.ALREADY_GONE, REGISTRY_404,
                    reason=Reason(ReasonKind.GONE), attempts=attempt,
                )  # fmt: skip
            if action is retry.Action.DISABLED:
                raise DeletionDisabled(
                    f"the registry refuses deletes ({last}): enable storage.delete.enabled "
                    "in its config; a read-only registry or a pull-through cache cannot be "
                    "cleaned through the API",
                    status=405,
                )
            if action is retry.Action.UNAUTHORIZED and auth_error == "insufficient_scope":
                raise PermissionDenied(
                    f"the token server grants no delete in {repository} ({last}, "
                    "insufficient_scope)",
                    status=401,
                )
            if action is retry.Action.UNAUTHORIZED:
                raise AuthenticationError(
                    f"the registry refused the credentials deleting in {repository} ({last})",
                    status=401,
                )
            if action is retry.Action.FORBIDDEN:
                raise PermissionDenied(
                    f"no permission to delete in {repository} ({last})", status=403
                )
            if action is retry.Action.FAIL:
                return Removal(digest, Outcome.FAILED, last, attempts=attempt)
            # RETRY: a 5xx may come after the registry deleted (a proxy timing out), and
            # no answer at all says nothing: either way the manifest may be gone now.
            unanswered = True
            if attempt < attempts:
                delay = self._backoff.delay(attempt, retry_after)
                log.debug("retrying %s@%s in %.2fs after %s", repository, digest, delay, last)
                if not await self._pause(delay, self._stop):
                    return _stopped_before_retry(digest, last, no_answer, attempt)
            if no_answer and attempt == attempts:
                self._transport_failures_in_a_row += 1
        if self._transport_failures_in_a_row >= retry.MAX_CONSECUTIVE_TRANSPORT_FAILURES:
            raise RegistryUnreachable(
                f"the registry stopped answering: {self._transport_failures_in_a_row} "
                f"deletions in a row failed ({last})"
            )
        return Removal(
            digest, Outcome.FAILED, f"gave up after {attempts} attempts: {last}", attempts=attempts
        )
