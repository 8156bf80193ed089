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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.model import RepositorySnapshot
from regcleaner.planner import Decision
from regcleaner.removers.base import Outcome, Removal, WaveContext
from regcleaner.storage.base import ByteStore
from regcleaner.view import RegistryView

log = logging.getLogger(__name__)

MAX_KEYS = 1000


class KeyBatcher:
    """Coalesces deletions from concurrent callers into store requests of up to 1,000
    keys, with a bounded number in flight. ``run`` is owned by the caller's TaskGroup."""

    def __init__(self, store: ByteStore, *, in_flight: int = 8, linger_s: float = 0.005) -> None:
        self._store = store
        self._slots = asyncio.Semaphore(in_flight)
        self._linger_s = linger_s
        self._keys: list[tuple[str, asyncio.Future[str | None]]] = []
        self._directories: list[str] = []
        self._wake = asyncio.Event()
        self._closed = False

    async def delete(self, keys: Sequence[str], directories: Sequence[str]) -> list[str | None]:
        """Delete ``keys`` (then, on a disk, the empty ``directories``); per-key results."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in keys]
        self._keys += zip(keys, futures, strict=True)
        self._directories += directories
        self._wake.set()
        return list(await asyncio.gather(*futures))

    def close(self) -> None:
        """No more deletions: ``run`` ends once everything queued is sent."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Send queued keys until closed."""
        async with asyncio.TaskGroup() as sending:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._keys:
                    if self._closed:
                        return
                    continue
                if len(self._keys) < MAX_KEYS and self._linger_s > 0:
                    await asyncio.sleep(self._linger_s)  # let concurrent waves join this request
                while self._keys:
                    batch, self._keys = self._keys[:MAX_KEYS], self._keys[MAX_KEYS:]
                    directories, self._directories = self._directories, []
                    await self._slots.acquire()
                    sending.create_task(self._send(batch, directories))

    async def _send(
        self, batch: list[tuple[str, asyncio.Future[str | None]]], directories: list[str]
    ) -> None:
        try:
            results = await self._store.delete_many(
                [key for key, _ in batch], directories=directories
            )
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._slots.release()
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class DirectRemover:
    """Removes manifests' links from storage; the registry must not be able to write."""

    name = "direct"
    watches_pushes = False  # the gate proved nothing else writes
    needs_history = True
    removes_tags = True

    def __init__(self, view: RegistryView, gate: Callable[[], Awaitable[None]]) -> None:
        self._view = view
        self._gate = gate
        self._batcher: KeyBatcher | None = None
        self._delete_requests_at_start = 0

    @property
    def requests(self) -> int:
        """Delete requests made to the store since the session began."""
        return self._view.store.stats.delete - self._delete_requests_at_start

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        await self._gate()
        self._delete_requests_at_start = self._view.store.stats.delete
        store = self._view.store
        if store.has_directories:
            yield  # a disk: each wave is one batch of unlinks, nothing to coalesce
            return
        batcher = KeyBatcher(store)
        async with asyncio.TaskGroup() as group:
            group.create_task(batcher.run())
            self._batcher = batcher
            try:
                yield
            finally:
                self._batcher = None
                batcher.close()

    async def remove_tags(
        self, repository: str, snapshot: RepositorySnapshot, tags: Sequence[tuple[str, Digest]]
    ) -> dict[str, str | None]:
        outcome: dict[str, str | None] = {}
        for tag, expected in tags:
            try:
                now = await self._view.tag_link(repository, tag)
            except StorageError as exc:
                outcome[tag] = f"cannot re-read the tag: {exc}"
                continue
            if now != expected:
                outcome[tag] = f"moved-since-plan:{now}" if now else "gone-before-removal"
                continue
            keys = self._view.tag_removal_keys(snapshot, tag)
            results = await self._view.store.delete_many(keys.keys, directories=keys.directories)
            problems = [r for r in results if r is not None]
            outcome[tag] = "; ".join(problems) if problems else None
        return outcome

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
        plans = [(d, self._view.removal_keys(snapshot, [d])) for d in chosen]
        keys = [key for _, plan in plans for key in plan.keys]
        directories = [folder for _, plan in plans for folder in plan.directories]
        try:
            if self._batcher is not None:
                results = await self._batcher.delete(keys, directories)
            else:
                results = await self._view.store.delete_many(keys, directories=directories)
        except asyncio.CancelledError:
            for digest in chosen:
                context.record(
                    Removal(digest, Outcome.FAILED, "abandoned at stop: outcome unknown")
                )
            raise
        except Exception as exc:
            log.error("repository %s: removing a wave failed: %s", repository, exc)
            for digest in chosen:
                context.record(Removal(digest, Outcome.FAILED, str(exc)))
            return
        position = 0
        for digest, plan in plans:
            mine = results[position : position + len(plan.keys)]
            position += len(plan.keys)
            problems = [problem for problem in mine if problem is not None]
            # The revision link is the last key: while it stays, the manifest stays.
            if mine[-1] is not None:
                context.record(Removal(digest, Outcome.FAILED, "; ".join(problems)))
                continue
            if problems:
                log.warning("repository %s: %s removed, but some tag history stayed: %s",
                            repository, digest, "; ".join(problems))  # fmt: skip
            context.record(Removal(digest, Outcome.DELETED))
