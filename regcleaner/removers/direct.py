"""Direct removal in a maintenance window: remove the links from storage.

For each deleted digest the revision folder (``_manifests/revisions/sha256/<hex>/``)
and the digest's entry in every tag's history (``_manifests/tags/<tag>/index/sha256/
<hex>/``) go, as ``garbage-collect --delete-untagged`` removes them, but with
regcleaner's plan. Waves still go in order, so a run stopped half-way never leaves a
kept index missing a child. On a disk: unlink and rmdir. On S3: DeleteObjects of up to
1,000 keys; the keys of waves from many repositories share requests (``KeyBatcher``),
several requests in flight.

Nothing is written until the gate has proved the registry cannot write (it answers
writes as read-only mode does), or the operator said it is stopped.

After a stop (the run's ``StopScope``) no wave starts: keys of a wave not yet under
way are not sent, and that wave stays, reported as stopped. A wave under way (its first
request sent) is finished, as a request in flight is: a stopped run then leaves whole
manifests removed or kept, never half of one; all of it within the grace the engine
gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

from regcleaner.concurrency import StopRequested, StopScope
from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.planner import Decision, Reason, ReasonKind
from regcleaner.removers.base import (
    GONE_BEFORE_REMOVAL,
    MOVED_SINCE_PLAN,
    Outcome,
    Removal,
    WaveContext,
)
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.storage.base import ByteStore
from regcleaner.view import RegistryView, RemovalKeys

log = logging.getLogger(__name__)

MAX_KEYS = 1000
ABANDONED = "abandoned at stop: outcome unknown"
STOPPED = Reason(ReasonKind.STOPPED)
STOPPED_BEFORE_REMOVAL = "stopped before removal: the tag stays"


class _Call:
    """One caller's keys: its results, how many are still to come, and whether the stop
    may keep them back (not once some went, nor for a wave that is under way)."""

    __slots__ = ("done", "pending", "results", "under_way")

    def __init__(self, size: int, done: asyncio.Future[list[str | None]], under_way: bool) -> None:
        self.results: list[str | None] = [None] * size
        self.pending = size
        self.done = done
        self.under_way = under_way


class KeyBatcher:
    """Gathers the keys of many repositories' waves into store requests of up to 1,000
    keys, with a bounded number in flight. ``run`` is owned by the caller's TaskGroup.

    Callers take part (``participant``) for as long as they remove something. A request
    goes out when 1,000 keys are queued, or when every participant has keys queued and
    none can join soon: no more repositories will come, all places are taken, or none
    came for ``idle_s``. Nothing waits longer than ``max_hold_s``. A participant whose
    keys are in flight is waited for: it will queue its next wave as soon as they are
    answered. So on an object store a wave costs a share of a request, not a request;
    waves of one repository still go one after the other (each waits for its own
    keys). After a stop of ``stop`` no new work is sent: callers whose keys are not
    under way get ``StopRequested``; keys under way go at once.
    """

    def __init__(
        self,
        store: ByteStore,
        *,
        places: int,
        in_flight: int = 8,
        idle_s: float = 0.1,
        max_hold_s: float = 1.0,
        stop: StopScope | None = None,
    ) -> None:
        self._store = store
        self._stop = stop
        self._places = places
        self._slots = asyncio.Semaphore(in_flight)
        self._idle_s = idle_s
        self._max_hold_s = max_hold_s
        self._queue: list[tuple[str, _Call, int]] = []
        self._directories: list[str] = []
        self._participants = 0
        self._queued_calls = 0
        self._last_arrival = 0.0
        self._oldest = 0.0
        self._feed_done = False
        self._wake = asyncio.Event()
        self._closed = False

    @contextlib.contextmanager
    def participant(self) -> Iterator[None]:
        """While inside, the batcher expects this caller's keys before it sends."""
        self._participants += 1
        self._last_arrival = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            self._participants -= 1
            self._wake.set()

    def no_more_participants(self) -> None:
        """Nobody new will come: send as soon as everyone present is waiting."""
        self._feed_done = True
        self._wake.set()

    async def delete(
        self, keys: Sequence[str], directories: Sequence[str], *, under_way: bool = False
    ) -> list[str | None]:
        """Delete ``keys`` (then, on a disk, the empty ``directories``); per-key results.
        ``under_way``: the rest of work that already sent requests, which a stop does
        not keep back; other keys raise StopRequested after a stop."""
        if not keys:
            return []
        if self._stopped() and not under_way:
            raise StopRequested("run stopped: not sent")
        loop = asyncio.get_running_loop()
        call = _Call(len(keys), loop.create_future(), under_way)
        if not self._queue:
            self._oldest = loop.time()
        self._queue += ((key, call, i) for i, key in enumerate(keys))
        self._directories += directories
        self._queued_calls += 1
        self._wake.set()
        return await call.done

    def close(self) -> None:
        """No more deletions: ``run`` ends once everything queued is sent."""
        self._closed = True
        self._wake.set()

    def _due_in(self, now: float) -> float | None:
        """Seconds until the queue should go (0: now), or None: wait for a change."""
        if not self._queue:
            return None
        if self._closed or len(self._queue) >= MAX_KEYS or self._stopped():
            return 0.0  # after a stop only work under way is queued: it goes now
        hold = self._oldest + self._max_hold_s - now
        if self._queued_calls < self._participants:
            return max(hold, 0.0)  # someone is about to add keys, or has keys in flight
        if self._feed_done or self._participants >= self._places:
            return 0.0
        return max(min(hold, self._last_arrival + self._idle_s - now), 0.0)

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.stop_requested

    def _until_stopped(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A wait that the stop ends (none once stopped: nothing is left to wait for)."""
        if self._stop is None or self._stop.stop_requested:
            return contextlib.nullcontext()
        return self._stop.interruptible()

    def _refuse_queued(self) -> None:
        """After a stop: the keys of work not under way stay, and their callers hear
        so. The queued directories go with the next request anyway (a disk removes
        only empty ones)."""
        kept: list[tuple[str, _Call, int]] = []
        for entry in self._queue:
            call = entry[1]
            if call.under_way:
                kept.append(entry)
            elif not call.done.done():
                call.done.set_exception(StopRequested("run stopped: not sent"))
        self._queue = kept
        self._queued_calls = len({id(call) for _, call, _ in kept})

    async def run(self) -> None:
        """Send queued keys until closed."""
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as sending:
            while True:
                if self._queue and self._stopped():
                    self._refuse_queued()
                due = self._due_in(loop.time())
                if due is None and self._closed:
                    return
                if due is None or due > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError, StopRequested):
                        async with self._until_stopped(), asyncio.timeout(due):
                            await self._wake.wait()
                    continue
                while self._queue:
                    try:
                        async with self._until_stopped():
                            await self._slots.acquire()
                    except StopRequested:
                        break  # back to the top: what is not under way is refused
                    if self._stopped():
                        self._refuse_queued()  # checked again with the slot in hand
                    # A caller cancelled meanwhile (a stop's deadline) reported its
                    # digests as abandoned: its keys are not sent.
                    live = [entry for entry in self._queue if not entry[1].done.done()]
                    batch, self._queue = live[:MAX_KEYS], live[MAX_KEYS:]
                    directories, self._directories = self._directories, []
                    if not batch:
                        self._slots.release()
                        break
                    for _, call, _ in batch:
                        call.under_way = True  # some of its keys went: the rest follow
                    sending.create_task(self._send(batch, directories))
                self._queued_calls = len({id(call) for _, call, _ in self._queue})

    async def _send(self, batch: list[tuple[str, _Call, int]], directories: list[str]) -> None:
        try:
            results: list[str | None] | None = await self._store.delete_many(
                [key for key, _, _ in batch], directories=directories
            )
            failure: BaseException | None = None
        except StorageError as exc:
            results, failure = None, exc
        except Exception as exc:  # a bug or an unexpected answer: still the store's failure
            results, failure = None, StorageError(f"deleting keys failed: {exc}")
        finally:
            self._slots.release()
        for position, (_, call, index) in enumerate(batch):
            if call.done.done():
                continue
            if failure is not None:
                call.done.set_exception(failure)
                continue
            assert results is not None
            call.results[index] = results[position]
            call.pending -= 1
            if call.pending == 0:
                call.done.set_result(call.results)
        self._wake.set()


class DirectRemover:
    """Removes manifests' links from storage; the registry must not be able to write."""

    name = "direct"
    watches_pushes = False  # the gate proved nothing else writes
    needs_history = True
    removes_tags = True

    def __init__(
        self,
        view: RegistryView,
        gate: Callable[[], Awaitable[None]],
        *,
        places: int = 64,
        stop: StopScope | None = None,
    ) -> None:
        """``stop``: the run's stop scope; after a stop no removal request starts."""
        self._view = view
        self._gate = gate
        self._stop = stop
        self._batcher: KeyBatcher | None = None
        self._delete_requests_at_start = 0
        # On an object store many repositories are in removal at once, so that their
        # waves share DeleteObjects requests; on a disk the engine's default applies.
        self.parallel_repositories: int | None = None if view.store.has_directories else places

    @property
    def requests(self) -> int:
        """Delete requests made to the store since the session began."""
        return self._view.store.stats.delete - self._delete_requests_at_start

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        await self._gate()
        self._delete_requests_at_start = self._view.store.stats.delete
        store = self._view.store
        if self.parallel_repositories is None:
            yield  # a disk: each wave is one batch of unlinks, nothing to coalesce
            return
        batcher = KeyBatcher(store, places=self.parallel_repositories, stop=self._stop)
        async with asyncio.TaskGroup() as group:
            group.create_task(batcher.run())
            self._batcher = batcher
            try:
                yield
            finally:
                self._batcher = None
                batcher.close()

    def no_more_repositories(self) -> None:
        if self._batcher is not None:
            self._batcher.no_more_participants()

    async def remove_tags(
        self, repository: str, snapshot: RepositorySnapshot, tags: Sequence[tuple[str, Digest]]
    ) -> dict[str, str | None]:
        with self._taking_part():
            outcome: dict[str, str | None] = {}
            now = await self._view.tag_links(repository, [tag for tag, _ in tags])
            going: list[str] = []
            for (tag, expected), found in zip(tags, now, strict=True):
                if isinstance(found, StorageError):
                    outcome[tag] = f"cannot re-read the tag: {found}"
                elif found != expected:
                    outcome[tag] = f"{MOVED_SINCE_PLAN}{found}" if found else GONE_BEFORE_REMOVAL
                else:
                    going.append(tag)
            plans = [(tag, self._view.tag_removal_keys(snapshot, tag)) for tag in going]
            try:
                results = await self._delete(
                    [key for _, plan in plans for key in plan.keys],
                    [folder for _, plan in plans for folder in plan.directories],
                )
            except StopRequested:
                outcome.update(dict.fromkeys(going, STOPPED_BEFORE_REMOVAL))
                return outcome
            position = 0
            for tag, plan in plans:
                mine = results[position : position + len(plan.keys)]
                position += len(plan.keys)
                problems = [r for r in mine if r is not None]
                outcome[tag] = "; ".join(problems) if problems else None
            return outcome

    def _taking_part(self) -> contextlib.AbstractContextManager[None]:
        batcher = self._batcher
        return batcher.participant() if batcher is not None else contextlib.nullcontext()

    async def remove_wave(
        self,
        repository: str,
        snapshot: RepositorySnapshot,
        wave: Sequence[Decision],
        context: WaveContext,
    ) -> None:
        chosen: list[Digest] = []
        for decision in wave:
            why = context.skip(decision.digest)
            if why is not None:
                context.record(Removal(decision.digest, Outcome.KEPT, reason=why))
            else:
                chosen.append(decision.digest)
        if not chosen:
            return
        with self._taking_part():
            await self._remove_chosen(repository, snapshot, chosen, context)

    async def _remove_chosen(
        self,
        repository: str,
        snapshot: RepositorySnapshot,
        chosen: list[Digest],
        context: WaveContext,
    ) -> None:
        plans = [(d, self._view.removal_keys(snapshot, [d])) for d in chosen]
        # Two steps: first each manifest's tag-history entries (and other files in its
        # revision folder), then, for the manifests whose first step fully succeeded,
        # the revision link itself. A manifest whose history could not go keeps its
        # revision link, so it is reported failed and a rerun plans it again. A stop
        # before a step keeps the manifests of that step (their revision links stay).
        second: list[tuple[Digest, RemovalKeys]] = []
        failed_first: dict[Digest, list[str]] = {}
        step = "first"
        try:
            first = [key for _, plan in plans for key in plan.keys[:-1]]
            if first:
                results = await self._delete(first, [])
                position = 0
                for digest, plan in plans:
                    mine = results[position : position + len(plan.keys) - 1]
                    position += len(plan.keys) - 1
                    problems = [p for p in mine if p is not None]
                    if problems:
                        failed_first[digest] = problems
            second = [(d, plan) for d, plan in plans if d not in failed_first]
            step = "second"
            results = await self._delete(
                [plan.keys[-1] for _, plan in second],
                [folder for _, plan in second for folder in plan.directories],
                under_way=bool(first),  # the wave began: a stop lets it finish
            )
        except StopRequested:
            stays = chosen if step == "first" else [digest for digest, _ in second]
            for digest, problems in failed_first.items():
                context.record(Removal(digest, Outcome.FAILED, "; ".join(problems)))
            for digest in stays:
                context.record(Removal(digest, Outcome.KEPT, reason=STOPPED))
            return
        except asyncio.CancelledError:
            for digest in chosen:
                context.record(Removal(digest, Outcome.FAILED, ABANDONED))
            raise
        except Exception as exc:
            log.error("repository %s: removing a wave failed: %s", repository, exc)
            for digest in chosen:
                context.record(Removal(digest, Outcome.FAILED, str(exc)))
            return
        for digest, problems in failed_first.items():
            context.record(Removal(digest, Outcome.FAILED, "; ".join(problems)))
        for (digest, _), problem in zip(second, results, strict=True):
            if problem is None:
                context.record(Removal(digest, Outcome.DELETED))
            else:
                context.record(Removal(digest, Outcome.FAILED, problem))

    async def _delete(
        self, keys: list[str], directories: list[str], *, under_way: bool = False
    ) -> list[str | None]:
        """Delete through the batcher (an object store) or at once (a disk); after a
        stop, raise StopRequested instead of starting work not ``under_way``."""
        if not keys:
            return []
        if self._stop is not None and self._stop.stop_requested and not under_way:
            raise StopRequested("run stopped: not sent")
        if self._batcher is not None:
            return await self._batcher.delete(keys, directories, under_way=under_way)
        return await self._view.store.delete_many(keys, directories=directories)
