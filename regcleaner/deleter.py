"""Deletes one manifest at a time under the global limits, and decides every retry.

All retry decisions live in ``classify``: 202 done; 404 already gone; 405 stops the
run; 401 stops the run; 403 fails the repository; 429, 5xx and transport errors back
off with full jitter, never shorter than the registry's Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from regcleaner.config import Limits
from regcleaner.digest import Digest
from regcleaner.errors import (
    AuthenticationError,
    DeletionDisabled,
    PermissionDenied,
    RegistryUnreachable,
)
from regcleaner.registry.client import RegistryClient, RegistryResponse, TransportError

log = logging.getLogger(__name__)

Guard = Callable[[], Awaitable[str | None]]

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# After this many digests in a row failed with no HTTP answer at all, the registry is
# taken to be down and the run stops instead of failing every remaining digest slowly.
MAX_CONSECUTIVE_TRANSPORT_FAILURES = 25


class Outcome(Enum):
    """How one deletion ended."""

    DELETED = "deleted"
    ALREADY_GONE = "already_gone"
    FAILED = "failed"
    SKIPPED = "skipped"  # the guard said no at the last moment: kept, with its reason


class Action(Enum):
    """What to do with a registry answer."""

    DONE = "done"
    GONE = "gone"
    RETRY = "retry"
    FAIL = "fail"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The outcome of deleting one digest, after any retries."""

    digest: Digest
    outcome: Outcome
    detail: str = ""
    attempts: int = 1


def classify(status: int) -> Action:
    """Map an HTTP status of a manifest DELETE to what regcleaner does next."""
    if status in (200, 202, 204):
        return Action.DONE
    if status == 404:
        return Action.GONE
    if status == 405:
        return Action.DISABLED
    if status == 401:
        return Action.UNAUTHORIZED
    if status == 403:
        return Action.FORBIDDEN
    if status in RETRYABLE_STATUSES or status >= 500:
        return Action.RETRY
    return Action.FAIL


def describe(response: RegistryResponse) -> str:
    """Status and registry error code for messages."""
    text = f"HTTP {response.status}"
    if response.error_code:
        text += f" {response.error_code}"
    if response.message:
        text += f": {response.message}"
    return text


class Deleter:
    """Issues DELETEs under one global concurrency bound and one global rate."""

    def __init__(
        self,
        client: RegistryClient,
        limits: Limits,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.concurrency)
        # Capacity 1: requests are paced 1/rate apart with no burst, so no one-second
        # window ever holds more than ``rate`` (+1 at its edge) DELETEs.
        self._limiter = None
        if limits.rate > 0:
            from aiolimiter import AsyncLimiter  # only when asked for: it costs start-up time

            self._limiter = AsyncLimiter(1, 1.0 / limits.rate)
        self._sleep = sleep
        self._jitter = jitter
        self._transport_failures_in_a_row = 0
        self.requests = 0

    def backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Full-jitter exponential backoff, never below the registry's Retry-After."""
        ceiling = min(
            self._limits.backoff_cap_s, self._limits.backoff_base_s * 2.0 ** (attempt - 1)
        )
        delay: float = ceiling * self._jitter()
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay

    async def _send(
        self, repository: str, digest: Digest, guard: Guard | None
    ) -> RegistryResponse | str:
        async with self._slots:
            if self._limiter is not None:
                await self._limiter.acquire()
            if guard is not None:
                # After every wait, just before the request: the last look at storage.
                verdict = await guard()
                if verdict is not None:
                    return verdict
            self.requests += 1
            return await self._client.delete_manifest(repository, digest)

    async def delete(
        self, repository: str, digest: Digest, guard: Guard | None = None
    ) -> DeleteResult:
        """Delete one manifest, retrying what can be retried; raise what stops the run.

        ``guard`` runs right before each request is sent; a string it returns is a
        reason not to send (the outcome is SKIPPED with that reason).
        """
        last = ""
        no_answer = False
        attempts = self._limits.max_attempts
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            auth_error = ""
            try:
                sent = await self._send(repository, digest, guard)
            except TransportError as exc:
                last, no_answer = str(exc), True
                action = Action.RETRY
            else:
                if isinstance(sent, str):
                    return DeleteResult(digest, Outcome.SKIPPED, sent, attempt)
                self._transport_failures_in_a_row = 0
                last, no_answer = describe(sent), False
                retry_after, auth_error = sent.retry_after_s, sent.auth_error
                action = classify(sent.status)
            if action is Action.DONE:
                return DeleteResult(digest, Outcome.DELETED, attempts=attempt)
            if action is Action.GONE:
                return DeleteResult(digest, Outcome.ALREADY_GONE, last, attempt)
            if action is Action.DISABLED:
                raise DeletionDisabled(
                    f"the registry refuses deletes ({last}): enable storage.delete.enabled "
                    "in its config; a read-only registry or a pull-through cache cannot be "
                    "cleaned",
                    status=405,
                )
            if action is Action.UNAUTHORIZED and auth_error == "insufficient_scope":
                raise PermissionDenied(
                    f"the token server grants no delete in {repository} ({last}, "
                    "insufficient_scope)",
                    status=401,
                )
            if action is Action.UNAUTHORIZED:
                raise AuthenticationError(
                    f"the registry refused the credentials deleting in {repository} ({last})",
                    status=401,
                )
            if action is Action.FORBIDDEN:
                raise PermissionDenied(
                    f"no permission to delete in {repository} ({last})", status=403
                )
            if action is Action.FAIL:
                return DeleteResult(digest, Outcome.FAILED, last, attempt)
            if attempt < attempts:
                delay = self.backoff(attempt, retry_after)
                log.debug("retrying %s@%s in %.2fs after %s", repository, digest, delay, last)
                await self._sleep(delay)
        if no_answer:
            self._transport_failures_in_a_row += 1
            if self._transport_failures_in_a_row >= MAX_CONSECUTIVE_TRANSPORT_FAILURES:
                raise RegistryUnreachable(
                    f"the registry stopped answering: {self._transport_failures_in_a_row} "
                    f"deletions in a row failed ({last})"
                )
        detail = f"gave up after {attempts} attempts: {last}"
        return DeleteResult(digest, Outcome.FAILED, detail, attempts)
