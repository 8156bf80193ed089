"""The pipeline: list repositories → scan and plan → re-check → delete → report.

A producer lists repositories into a bounded queue; scan workers snapshot and plan
each one; delete workers take planned repositories from a second bounded queue, re-read
the repository just before deleting, and issue its DELETEs wave by wave with a small
per-repository bound under the Deleter's global bounds. Scanning repository N+1
overlaps deleting in repository N, and memory is bounded by the queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import hashlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from regcleaner import layout
from regcleaner.config import Settings
from regcleaner.deleter import Deleter, Outcome
from regcleaner.digest import Digest
from regcleaner.errors import PermissionDenied, RegcleanerError, StorageError
from regcleaner.manifests import ManifestRefs
from regcleaner.planner import (
    REASON_GONE,
    REASON_PUSHED_DURING_RUN,
    Decision,
    ManifestInfo,
    Policy,
    RepositoryPlan,
    RepositorySnapshot,
    needed_manifests,
    plan_repository,
    recheck_plan,
)
from regcleaner.registry.client import RegistryClient
from regcleaner.report import RepositoryRecord, RunReport
from regcleaner.space import SpaceEstimate
from regcleaner.storage.base import Storage

log = logging.getLogger("regcleaner")

REASON_STOPPED = "stopped-before-delete"


@dataclass(slots=True)
class RepositoryJob:
    """A planned repository waiting for its deletions."""

    snapshot: RepositorySnapshot
    manifests: dict[Digest, ManifestInfo]
    plan: RepositoryPlan
    record: RepositoryRecord


def repository_selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Apply ``--include``/``--exclude`` globs (exclude wins)."""
    if include and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def shard_of(name: str, count: int) -> int:
    """Stable shard of a repository name: the same on every machine and every run."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def _pointed_at(info: ManifestInfo | None) -> tuple[Digest, ...]:
    if not isinstance(info, ManifestRefs):
        return ()
    return info.children + ((info.subject,) if info.subject else ())


class Engine:
    """One run of regcleaner over one storage and one registry."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        report: RunReport,
        client: RegistryClient | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.report = report
        self.client = client
        self.clock = clock
        self.policy = Policy(min_age_s=settings.min_age_s)
        self.stopping = asyncio.Event()
        self.deleter: Deleter | None = None
        self.space: SpaceEstimate | None = None
        limits = settings.limits
        self.delete_workers = max(2, 2 * math.ceil(limits.concurrency / limits.per_repository))

    def request_stop(self, why: str) -> None:
        """Stop listing and starting deletions; in-flight requests finish."""
        if not self.stopping.is_set():
            log.warning("%s: finishing in-flight deletions, starting no new ones", why)
            self.report.stopped_by = why
            self.stopping.set()

    async def run(self) -> None:
        """Run the whole pipeline; raise the first error that stops the run."""
        await self.storage.check()
        log.info(
            "scanning %s; registry %s%s",
            self.storage.describe(),
            self.settings.registry_url,
            " (dry run: nothing will be deleted)" if self.settings.dry_run else "",
        )
        if not self.settings.dry_run:
            if self.client is None:
                raise RuntimeError("a real run needs a registry client")
            await self.client.ping()
            self.deleter = Deleter(self.client, self.settings.limits)
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signal support
        if self.settings.estimate_space:
            self.space = SpaceEstimate()
        pipeline = asyncio.ensure_future(self._pipeline())
        try:
            await self._finish(pipeline)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if self.deleter is not None:
                self.report.requests = self.deleter.requests
            if self.space is not None:
                self.report.reclaimable = self.space.settle()
                self.space.close()
            stats = getattr(self.storage, "stats", None)
            if stats is not None:
                self.report.storage_requests = {
                    "list": stats.list_requests,
                    "get": stats.get_requests,
                }

    async def _finish(self, pipeline: asyncio.Future[None]) -> None:
        """Wait for the pipeline; once a stop is asked, give in-flight work a bounded time."""
        stopped: asyncio.Future[None] = asyncio.ensure_future(self._stopped())
        try:
            await asyncio.wait({pipeline, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not pipeline.done():
                done, _ = await asyncio.wait({pipeline}, timeout=self.settings.stop_grace_s)
                if not done:
                    log.warning(
                        "in-flight deletions did not finish within %.0fs; abandoning them "
                        "(their outcome is reported as unknown)",
                        self.settings.stop_grace_s,
                    )
                    pipeline.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pipeline
                    return
            await pipeline
        finally:
            stopped.cancel()

    async def _stopped(self) -> None:
        await self.stopping.wait()

    async def _pipeline(self) -> None:
        scan_workers = self.settings.limits.scan_workers
        names: asyncio.Queue[str | None] = asyncio.Queue(maxsize=scan_workers * 4)
        jobs: asyncio.Queue[RepositoryJob | None] = asyncio.Queue(maxsize=self.delete_workers)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._produce(names, scan_workers))
            scanners = [group.create_task(self._scan(names, jobs)) for _ in range(scan_workers)]
            for _ in range(self.delete_workers):
                group.create_task(self._delete(jobs))
            for scanner in scanners:
                await scanner
            for _ in range(self.delete_workers):
                await jobs.put(None)

    async def _produce(self, names: asyncio.Queue[str | None], consumers: int) -> None:
        async for name in self.storage.list_repositories():
            if self.stopping.is_set():
                break
            if not repository_selected(name, self.settings.include, self.settings.exclude):
                self.report.counters.repositories_skipped += 1
                continue
            shard = self.settings.shard
            if shard is not None and shard_of(name, shard[1]) != shard[0]:
                self.report.counters.repositories_skipped += 1
                continue
            if not layout.is_valid_repository_name(name):
                record = RepositoryRecord(name)
                record.error = "not a valid repository name; skipped, nothing deleted"
                log.warning("repository %r: %s", name, record.error)
                self.report.add(record)
                continue
            await names.put(name)
        # Only on a normal end: after a failure the TaskGroup cancels the scanners, and
        # waiting here for room in a queue nobody drains would hang the run.
        for _ in range(consumers):
            await names.put(None)

    async def _scan(
        self, names: asyncio.Queue[str | None], jobs: asyncio.Queue[RepositoryJob | None]
    ) -> None:
        while (name := await names.get()) is not None:
            if self.stopping.is_set():
                continue
            job = await self._plan(name)
            if job is None:
                continue
            if self.settings.dry_run or not job.plan.waves:
                job.record.would_delete = (
                    [(d.digest, d.reason) for d in job.plan.delete] if self.settings.dry_run else []
                )
                self._account_space(job)
                self.report.add(job.record)
            else:
                self.report.planned(len(job.plan.delete))
                await jobs.put(job)

    async def _plan(self, name: str) -> RepositoryJob | None:
        record = RepositoryRecord(name)
        try:
            snapshot = await self.storage.snapshot(name)
            manifests = await self.storage.read_manifests(needed_manifests(snapshot))
        except StorageError as exc:
            record.error = str(exc)
            log.error("repository %s: %s; nothing in it is deleted", name, exc)
            self.report.add(record)
            return None
        plan = plan_repository(snapshot, manifests, self.policy, self.clock())
        self.report.counters.scanned_repositories += 1
        self.report.counters.scanned_manifests += len(snapshot.revisions)
        record.manifests = len(snapshot.revisions)
        record.tags = len(snapshot.tags) + len(snapshot.broken_tags)
        record.tagged = len(plan.tagged)
        record.kept = dict(plan.keep)
        record.warnings = list(plan.warnings)
        for warning in plan.warnings:
            log.warning("repository %s: %s", name, warning)
        if plan.blocked:
            log.warning(
                "repository %s: something in it could not be read; nothing in it is deleted", name
            )
        return RepositoryJob(snapshot, manifests, plan, record)

    async def _delete(self, jobs: asyncio.Queue[RepositoryJob | None]) -> None:
        while (job := await jobs.get()) is not None:
            try:
                await self._delete_repository(job)
            finally:
                self._account_space(job)
                self.report.add(job.record)

    def _account_space(self, job: RepositoryJob) -> None:
        """Feed the reclaimable-space estimate with what this repository deleted and kept."""
        if self.space is None:
            return
        record = job.record
        gone = {d for d, _ in record.deleted} | {d for d, _ in record.would_delete}
        gone |= {d for d, _ in record.already_gone}
        kept = [d for d in job.snapshot.revisions if d not in gone]
        self.space.add_repository(record.name, gone, kept, job.manifests)

    async def _delete_repository(self, job: RepositoryJob) -> None:
        name, record = job.record.name, job.record
        if self.stopping.is_set():
            for decision in job.plan.delete:
                record.kept[decision.digest] = REASON_STOPPED
            return
        try:
            fresh = await self.storage.snapshot(name)
            missing = needed_manifests(fresh) - job.manifests.keys()
            if missing:
                job.manifests.update(await self.storage.read_manifests(missing))
        except StorageError as exc:
            record.error = f"re-check before deleting failed: {exc}"
            log.error("repository %s: %s; nothing in it is deleted", name, record.error)
            for decision in job.plan.delete:
                record.kept[decision.digest] = "recheck-failed"
            return
        plan, rescued = recheck_plan(job.plan, fresh, job.manifests, self.policy, self.clock())
        for digest, reason in sorted(rescued.items()):
            if reason == REASON_GONE:
                record.already_gone.append((digest, reason))
            else:
                record.kept[digest] = reason
                log.info("repository %s: keeping %s (%s)", name, digest, reason)
        await self._delete_waves(name, plan, job.manifests, fresh.revisions, record)

    async def _last_look(self, name: str, digest: Digest, expected: float | None) -> str | None:
        """Right before a DELETE is sent: a push (a re-tag included) since the re-check
        rewrote the revision link, so a changed mtime keeps the manifest."""
        try:
            now_mtime = await self.storage.revision_mtime(name, digest)
        except StorageError as exc:
            log.warning("repository %s: cannot re-check %s: %s", name, digest, exc)
            return "recheck-failed"
        if now_mtime is None:
            return REASON_GONE
        if now_mtime != expected:
            return REASON_PUSHED_DURING_RUN
        return None

    async def _delete_waves(
        self,
        name: str,
        plan: RepositoryPlan,
        manifests: Mapping[Digest, ManifestInfo],
        mtimes: Mapping[Digest, float],
        record: RepositoryRecord,
    ) -> None:
        assert self.deleter is not None
        deleter = self.deleter
        protected: dict[Digest, Digest] = {}  # digest -> the surviving manifest pointing at it
        forbidden: list[str] = []

        def protect_targets(digest: Digest) -> None:
            for target in _pointed_at(manifests.get(digest)):
                protected.setdefault(target, digest)

        async def worker(decisions: Iterator[Decision]) -> None:
            for decision in decisions:
                digest = decision.digest
                if forbidden:
                    record.failed.append((digest, decision.reason, forbidden[0]))
                    protect_targets(digest)
                    continue
                if self.stopping.is_set():
                    record.kept[digest] = REASON_STOPPED
                    protect_targets(digest)
                    continue
                if digest in protected:
                    record.kept[digest] = f"parent-not-deleted:{protected[digest]}"
                    protect_targets(digest)
                    continue
                try:
                    guard = functools.partial(self._last_look, name, digest, mtimes.get(digest))
                    result = await deleter.delete(name, digest, guard)
                except asyncio.CancelledError:
                    record.failed.append(
                        (digest, decision.reason, "abandoned at stop: outcome unknown")
                    )
                    raise
                except PermissionDenied as exc:
                    forbidden.append(str(exc))
                    log.error("repository %s: %s; its other deletions are skipped", name, exc)
                    record.failed.append((digest, decision.reason, str(exc)))
                    protect_targets(digest)
                    continue
                if result.outcome is Outcome.SKIPPED and result.detail == REASON_GONE:
                    record.already_gone.append((digest, REASON_GONE))
                    continue
                if result.outcome is Outcome.SKIPPED:
                    record.kept[digest] = result.detail
                    log.info("repository %s: keeping %s (%s)", name, digest, result.detail)
                    protect_targets(digest)
                    continue
                if result.outcome is Outcome.DELETED:
                    record.deleted.append((digest, decision.reason))
                    self.report.deleted_one()
                elif result.outcome is Outcome.ALREADY_GONE:
                    record.already_gone.append((digest, decision.reason))
                else:
                    record.failed.append((digest, decision.reason, result.detail))
                    log.warning(
                        "repository %s: deleting %s failed: %s", name, digest, result.detail
                    )
                    protect_targets(digest)

        width = self.settings.limits.per_repository
        for wave in plan.waves:
            decisions = iter(wave)  # shared: each worker takes the next undecided digest
            async with asyncio.TaskGroup() as group:
                for _ in range(min(width, len(wave))):
                    group.create_task(worker(decisions))


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a TaskGroup failure: ours first, then anything else."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for error in leaves:
        if isinstance(error, RegcleanerError):
            return error
    for error in leaves:
        if not isinstance(error, asyncio.CancelledError):
            return error
    return leaves[0] if leaves else RuntimeError("pipeline failed")
