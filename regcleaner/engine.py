"""The clean pipeline: list repositories → snapshot and plan → carry out the waves → report.

A producer lists repositories into a bounded channel; scan workers snapshot and plan
each one; removal workers take planned repositories from a second bounded channel and
hand their waves, in order, to the remover (API, direct or dry run: the engine does not
know which). Scanning repository N+1 overlaps removal in repository N, and memory is
bounded by the channels.

When the registry may be written during the run (API mode), a ``PushWatch``
(``pushwatch``) guards each repository's deletions.

Attached tags (signatures, referrers indexes) whose digest is not a revision of their
own repository may belong to an image of another one: a run that reads the whole
registry plans such repositories in a second pass, when it knows every revision that
stays (``tagplan.RegistryRevisions``).

With ``--pulls-db``, the pull record is opened once per run, and each repository whose
policy has ``pulled_within`` rules gets its pulls read (one query per table, off the
event loop) and passed to the pure tag decision.

Every task is owned by a TaskGroup. A stop (SIGTERM, SIGINT, or a fatal registry
answer) lets in-flight requests finish for ``stop_grace_s``, then abandons them; no new
deletion or retry starts after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from regcleaner import layout
from regcleaner.concurrency import Channel, StopScope, first_error, stop_signals
from regcleaner.config import Settings
from regcleaner.digest import Digest
from regcleaner.errors import RegcleanerError, StorageError
from regcleaner.events.decision import format_time
from regcleaner.events.store import PullHistory, PullStoreError
from regcleaner.globs import repository_in_view
from regcleaner.planner import (
    Policy,
    needed_manifests,
    without,
)
from regcleaner.pushwatch import (
    MismatchDetector,
    PushWatch,
    RepositoryWaveContext,
    stop_reason,
)
from regcleaner.removers.base import Remover
from regcleaner.reporting.progress import RunProgress
from regcleaner.reporting.run import RepositoryRecord, RunReport
from regcleaner.retention import RepositoryPolicy, RepositoryPulls
from regcleaner.space import SpaceEstimate
from regcleaner.tagplan import (
    Elsewhere,
    RegistryRevisions,
    plan_with_tags,
    settle_tags,
)
from regcleaner.tagsfirst import RECHECK_FAILED, RepositoryJob, keep_all, remove_going_tags
from regcleaner.view import ManifestKeys, RegistryView

__all__ = ["Engine", "PushWatch"]

log = logging.getLogger("regcleaner")

PARTIAL_VIEW = (
    "only part of the registry is read (--include, --exclude or --shard), so whether "
    "it belongs to an image of another repository is not known"
)


Listed = tuple[str, ManifestKeys | None]
"""A repository to plan, with its ``_manifests/`` keys when the listing gave them."""


class _StopWalk(Exception):
    """Raised into the repository walk to end it early on a stop."""


class Engine:
    """One run of regcleaner over one storage, carrying out plans with one remover."""

    def __init__(
        self,
        settings: Settings,
        view: RegistryView,
        remover: Remover,
        report: RunReport,
        *,
        progress: RunProgress | None = None,
        clock: Callable[[], float] = time.time,
        stop: StopScope | None = None,
    ) -> None:
        self.settings = settings
        self.view = view
        self.remover = remover
        self.report = report
        self.progress = progress
        self.clock = clock
        self.policy = Policy(min_age_s=settings.min_age_s)
        self.stop = stop if stop is not None else StopScope(settings.stop_grace_s)
        self.fatal_error: BaseException | None = None
        self.space: SpaceEstimate | None = None
        self.mismatch: MismatchDetector | None = None
        if remover.watches_pushes:
            self.mismatch = MismatchDetector(settings.registry_url or "", view.describe(), self)
        partial = bool(settings.include or settings.exclude or settings.shard)
        follows = settings.retention is not None or settings.prune_orphan_signatures
        self.elsewhere = Elsewhere(
            None, PARTIAL_VIEW if partial else "decided at the end of the run"
        )
        self.revisions = RegistryRevisions() if follows and not partial else None
        """Every revision that stays, while the first pass runs (None: not needed)."""
        self.deferred: list[str] = []
        """Repositories with attached tags to decide once every revision is known."""
        self.pull_history: PullHistory | None = None
        """The pull record (``--pulls-db``), open while the run lasts."""
        self._pull_reads = asyncio.Lock()
        limits = settings.limits
        self.removal_workers = remover.parallel_repositories or max(
            2, 2 * math.ceil(limits.concurrency / limits.per_repository)
        )

    # -- stopping -------------------------------------------------------------------

    def request_stop(self, why: str) -> None:
        """Stop listing and starting deletions; in-flight requests get the grace period.
        A second signal abandons them at once (a stop for a fatal error is not one)."""
        if self.stop.signal(why):
            log.warning("%s: finishing in-flight deletions, starting no new ones", why)
            self.report.stopped_by = self.report.stopped_by or why
        else:
            log.warning("%s again: abandoning in-flight deletions now", why)

    def fatal(self, error: BaseException) -> None:
        """An error that ends the run: record it once, stop, report the rest."""
        if self.fatal_error is None:
            self.fatal_error = error
            log.error("%s; no new deletions start", error)
        self.stop.request_stop()

    # -- the run --------------------------------------------------------------------

    async def run(self) -> None:
        """Run the whole pipeline; raise the error that ended the run, if any."""
        await self.view.check()
        url = self.settings.registry_url
        how = {
            "api": "deleting through the registry API",
            "direct": "removing from storage (maintenance window)",
            "dry-run": "dry run: deleting nothing",
        }.get(self.remover.name, self.remover.name)
        log.info("scanning %s%s; %s", self.view.describe(),
                 f", registry {url}" if url else "", how)  # fmt: skip
        self._open_pull_record()
        with stop_signals(self.request_stop):
            try:
                await self._run_bounded()
            except BaseExceptionGroup as group:
                raise first_error(group, RegcleanerError, "pipeline failed") from None
            finally:
                if self.pull_history is not None:
                    self.pull_history.close()
                self.report.requests = self.remover.requests
                if self.space is not None:
                    self.report.reclaimable = self.space.settle()
                    self.space.close()
                self.report.storage_requests = self.view.store.stats.as_dict()
                self.report.scan_cache = self.view.cache.counts() if self.view.cache else None
        if self.fatal_error is not None:
            raise self.fatal_error

    def _open_pull_record(self) -> None:
        """Open ``--pulls-db`` (PullStoreError, exit 2, if it is not a pull record), and
        warn when recording is younger than some ``pulled_within`` period: until it
        covers it, no tag expires on pull grounds under that rule."""
        path = self.settings.pulls_db
        if path is None:
            return
        self.pull_history = PullHistory(path)
        since = self.pull_history.covered_since
        log.info("pull record %s: %s", path, "recording never started" if since is None
                 else f"recording since {format_time(since)}")  # fmt: skip
        retention = self.settings.retention
        longest = None if retention is None else retention.longest_pulled_within
        if longest is not None and (since is None or since > self.clock() - longest):
            log.warning(
                "pull recording covers less than the longest pulled_within period: tags "
                "with no pull on record are kept (pulled-within-unknown) until it does%s",
                "" if since is None else f", from {format_time(since + longest)}",
            )

    async def _repository_pulls(
        self, name: str, tag_policy: RepositoryPolicy | None
    ) -> RepositoryPulls | None:
        """What the pull record says about ``name``, for a policy with ``pulled_within``
        rules (None otherwise). Read in a thread, one repository at a time (the run
        shares one SQLite connection)."""
        history = self.pull_history
        if history is None or tag_policy is None or not tag_policy.uses_pulls:
            return None

        def read() -> RepositoryPulls:
            by_digest, by_tag = history.repository_pulls(name), history.repository_tag_pulls(name)
            return RepositoryPulls(by_digest, by_tag, history.covered_since)

        async with self._pull_reads:
            return await asyncio.to_thread(read)

    async def _run_bounded(self) -> None:
        """The remover's session and the pipeline inside the run's stop scope: a stop
        gives them the grace period, then abandons them (so work the remover owns, such
        as requests that carry many repositories' keys, is abandoned at the deadline
        too)."""
        async with self.stop, self.remover.session():
            if self.settings.estimate_space:
                self.space = SpaceEstimate()
            async with asyncio.TaskGroup() as group:
                reporter = None
                if self.progress is not None:
                    reporter = group.create_task(self.progress.run())
                try:
                    await self._pipeline()
                finally:
                    if reporter is not None:
                        reporter.cancel()
        if self.stop.abandoned:
            when = (
                "at the second signal"
                if self.stop.cut_short
                else f"after {self.settings.stop_grace_s:.0f}s without finishing"
            )
            if self.report.dry_run:
                log.warning("in-flight reads abandoned %s (a dry run: nothing was being "
                            "deleted)", when)  # fmt: skip
            else:
                log.warning("in-flight deletions abandoned %s (their outcome is reported as "
                            "unknown; a rerun finishes them)", when)  # fmt: skip

    async def _pipeline(self) -> None:
        """Every repository; then those whose attached tags waited for the whole
        registry, planned again now that it is known."""
        await self._pass(self._produce)
        if not self.deferred:
            return
        if self.stop.stop_requested or self.revisions is None:
            self.report.scan_complete = False  # deferred, never reported
            return
        self.elsewhere = self.revisions.elsewhere()
        self.revisions = None
        names, self.deferred = self.deferred, []
        log.info("planning %d repositories again: their signature or referrers tags name "
                 "digests of other repositories, known now", len(names))  # fmt: skip

        async def produce(channel: Channel[Listed]) -> None:
            # after a stop, _scan marks the scan incomplete
            await channel.feed((name, None) for name in names)

        await self._pass(produce)

    async def _pass(self, produce: Callable[[Channel[Listed]], Coroutine[Any, Any, None]]) -> None:
        """One pass of the pipeline over the repositories ``produce`` puts."""
        scan_workers = self.settings.limits.scan_workers
        names: Channel[Listed] = Channel(scan_workers * 4)
        jobs: Channel[RepositoryJob] = Channel(self.removal_workers)
        async with asyncio.TaskGroup() as removing:
            for _ in range(self.removal_workers):
                removing.create_task(self._remove(jobs))
            try:
                async with asyncio.TaskGroup() as scanning:
                    scanning.create_task(produce(names))
                    for _ in range(scan_workers):
                        scanning.create_task(self._scan(names, jobs))
            finally:
                await jobs.close()
                self.remover.no_more_repositories()

    async def _produce(self, names: Channel[Listed]) -> None:
        try:
            settings = self.settings
            await self.view.repository_listings(
                lambda name, keys: self._offer(name, keys, names),
                lambda name: repository_in_view(
                    name, settings.include, settings.exclude, settings.shard
                ),
            )
            if not self.stop.stop_requested:
                self.report.scan_complete = True
        except* _StopWalk:
            pass  # a stop ended the walk (on S3, from inside its listers' TaskGroup)
        finally:
            await names.close()

    async def _offer(self, name: str, keys: ManifestKeys | None, names: Channel[Listed]) -> None:
        if self.stop.stop_requested:
            raise _StopWalk
        settings = self.settings
        if not repository_in_view(name, settings.include, settings.exclude, settings.shard):
            self.report.counters.repositories_skipped += 1
            return
        if not layout.is_valid_repository_name(name):
            record = RepositoryRecord(name)
            record.error = "not a valid repository name; skipped, nothing deleted"
            if self.revisions is not None:
                self.revisions.unknown(name)
            log.warning("repository %r: %s", name, record.error)
            self.report.add(record)
            return
        await names.put((name, keys))

    async def _scan(self, names: Channel[Listed], jobs: Channel[RepositoryJob]) -> None:
        while (listed := await names.get()) is not None:
            if self.stop.stop_requested:
                self.report.scan_complete = False  # listed, never planned: not reported
                continue
            job = await self._plan(*listed)
            if job is None:
                continue
            if job.tag_plan.undecided and self.revisions is not None:
                self._defer(job)
                continue
            removes_tags = (
                self.remover.removes_tags and job.tag_plan.going and not job.plan.blocked
            )  # a repository blocked by doubt keeps its tags too
            if not job.plan.waves and not removes_tags:
                self._finish_repository(job)
            else:
                self.report.planned(len(job.plan.delete))
                await jobs.put(job)

    def _defer(self, job: RepositoryJob) -> None:
        """Leave a repository with undecided attached tags to the second pass; until
        then all its revisions count as staying."""
        assert self.revisions is not None
        self.revisions.add(job.snapshot.revisions)
        self.revisions.want(job.tag_plan.undecided.values())
        self.deferred.append(job.record.name)
        self.report.counters.scanned_repositories -= 1  # scanned again in the second pass
        self.report.counters.scanned_manifests -= len(job.snapshot.revisions)

    async def _plan(self, name: str, keys: ManifestKeys | None) -> RepositoryJob | None:
        record = RepositoryRecord(name)
        # the push watch takes the snapshot to be as old as the listing it is made from
        scanned_at = time.monotonic() if keys is None else keys.listed_at
        try:
            snapshot = await self.view.snapshot(
                name, history=self.remover.needs_history, prelisted=keys
            )
            manifests = await self.view.read_manifests(needed_manifests(snapshot))
            tag_policy = None
            if self.settings.retention is not None:
                tag_policy = self.settings.retention.for_repository(name)
            pulls = await self._repository_pulls(name, tag_policy)
            plan, tag_plan = plan_with_tags(
                snapshot, manifests, self.policy, self.clock(), tag_policy=tag_policy,
                prune_orphan_signatures=self.settings.prune_orphan_signatures,
                elsewhere=self.elsewhere, pulls=pulls,
            )  # fmt: skip
        except PullStoreError as exc:  # the record broke mid-run: stop, exit 2
            if self.revisions is not None:
                self.revisions.unknown(name)
            record.error = f"cannot read the pull record: {exc}"
            self.report.add(record)
            self.fatal(exc)
            return None
        except StorageError as exc:
            if self.revisions is not None:
                self.revisions.unknown(name)
            record.error = str(exc)
            log.error("repository %s: %s; nothing in it is deleted", name, exc)
            self.report.add(record)
            return None
        except Exception as exc:  # a bug in reading one repository stays in it
            log.exception("repository %s: internal error while planning; nothing in it is "
                          "deleted", name)  # fmt: skip
            record.error = f"internal error while planning: {type(exc).__name__}: {exc}"
            if self.revisions is not None:
                self.revisions.unknown(name)
            self.report.add(record)
            return None
        self.report.counters.scanned_repositories += 1
        self.report.counters.scanned_manifests += len(snapshot.revisions)
        record.manifests = len(snapshot.revisions)
        record.tags = len(snapshot.tags) + len(snapshot.broken_tags)
        record.tagged = len(plan.tagged)
        record.kept = {d: str(r) for d, r in plan.keep.items()}
        record.warnings = list(plan.warnings)
        if tag_plan.going or tag_plan.undecided or self.settings.retention is not None:
            record.tags_kept = sorted(tag_plan.kept.items())
        for warning in plan.warnings:
            log.warning("repository %s: %s", name, warning)
        if plan.blocked:
            log.warning(
                "repository %s: something in it could not be read; nothing in it is deleted", name
            )
        return RepositoryJob(snapshot, manifests, plan, record, scanned_at, tag_plan)

    async def _remove(self, jobs: Channel[RepositoryJob]) -> None:
        while (job := await jobs.get()) is not None:
            try:
                await self._carry_out(job)
                await self._reread_going_tags(job)
            finally:
                self._finish_repository(job)

    def _finish_repository(self, job: RepositoryJob) -> None:
        """Settle its tags, account for what stays (space estimate, registry
        revisions), and report it."""
        self._settle_tags(job)
        record = job.record
        if self.space is not None or self.revisions is not None:
            gone = {d for d, _ in record.deleted} | {d for d, _ in record.would_delete}
            gone |= {d for d, _ in record.already_gone}
            staying = [d for d in job.snapshot.revisions if d not in gone]
            if self.space is not None:
                self.space.add_repository(record.name, gone, staying, job.manifests)
            if self.revisions is not None:
                self.revisions.add(staying)
        self.report.add(record)

    async def _reread_going_tags(self, job: RepositoryJob) -> None:
        """Through the API, after the repository's deletions: read once where each going
        tag whose digest was deleted points now. The DELETE removed the tag with its
        digest, unless the tag was pushed again during the run (to another manifest, or
        to the same one pushed back): the report must not call such a tag removed."""
        if not self.remover.watches_pushes:
            return
        watched = job.with_digest if self.remover.removes_tags else job.tag_plan.going
        deleted = {d for d, _ in job.record.deleted}
        tags = sorted(t for t in watched if job.snapshot.tags[t] in deleted)
        if not tags:
            return
        name = job.record.name
        try:
            found: list[Digest | StorageError | None] = await self.view.tag_links(name, tags)
        except StorageError as exc:
            log.warning("repository %s: cannot re-read expired tags after deleting: %s",
                        name, exc)  # fmt: skip
            found = [exc] * len(tags)
        job.tags_after = dict(zip(tags, found, strict=True))

    def _settle_tags(self, job: RepositoryJob) -> None:
        """Record where each tag that was to go ended up (see ``tagplan.settle_tags``)."""
        record = job.record
        deleted = {d for d, _ in record.deleted} | {d for d, _ in record.would_delete}
        removed, staying = settle_tags(
            job.snapshot, job.tag_plan, job.plan, deleted=deleted, kept=record.kept,
            alone=job.tag_outcomes, removes_tags=self.remover.removes_tags,
            with_digest=job.with_digest,
            after=job.tags_after or {},
        )  # fmt: skip
        record.tags_removed += removed
        record.tags_expired += staying

    async def _carry_out(self, job: RepositoryJob) -> None:
        record = job.record
        name = record.name
        stop = stop_reason(self)
        if stop is not None:
            keep_all(job, list(job.plan.delete), stop)
            return
        watch: PushWatch | None = None
        waves = job.plan.waves
        if self.remover.watches_pushes:
            interval = self.settings.recheck_interval_s
            watch = PushWatch(self.view, self.policy, job, interval_s=interval, clock=self.clock)
            try:
                await watch.start()
            except StorageError as exc:
                record.error = f"re-check before deleting failed: {exc}"
                log.error("repository %s: %s; nothing in it is deleted", name, record.error)
                keep_all(job, list(job.plan.delete), RECHECK_FAILED)
                return
            watch.settle_rescued(record, job.plan.delete)
            waves = without(waves, watch.rescued)
        if self.remover.removes_tags and job.tag_plan.going and not job.plan.blocked:
            after_tags = await remove_going_tags(self, job, waves)
            if after_tags is None:
                return
            waves = after_tags
        wave = RepositoryWaveContext(self, self.report, record, job.reasons, job.plan.dependents,
                                     watch=watch, mismatch=self.mismatch)  # fmt: skip
        for number, decisions in enumerate(waves):
            if watch is not None and number > 0:
                try:
                    await watch.before_wave()
                except StorageError as exc:
                    record.error = f"re-check between waves failed: {exc}"
                    log.error("repository %s: %s; its other deletions are skipped",
                              name, record.error)  # fmt: skip
                    remaining = [d for w in waves[number:] for d in w]
                    keep_all(job, remaining, RECHECK_FAILED)
                    return
                watch.settle_rescued(record, [d for w in waves[number:] for d in w])
                decisions = tuple(d for d in decisions if d.digest not in watch.rescued)
                if not decisions:
                    continue
            await self.remover.remove_wave(name, job.snapshot, decisions, wave)
