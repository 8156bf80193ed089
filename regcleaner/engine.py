"""The clean pipeline: list repositories → snapshot and plan → carry out the waves → report.

A producer lists repositories into a bounded channel; scan workers snapshot and plan
each one; removal workers take planned repositories from a second bounded channel and
hand their waves, in order, to the remover (API, direct or dry run: the engine does not
know which). Scanning repository N+1 overlaps removal in repository N, and memory is
bounded by the channels.

When the registry may be written during the run (API mode), a ``PushWatch`` guards each
repository's deletions: the repository is read again before its first wave, its
revisions are listed again before every later wave and at least every
``recheck_interval_s`` within one, and right before each DELETE the manifest's own
revision link, the revision links of the deleted manifests it depends on, and
(on a disk) the revisions folder are looked at. Any change re-plans the repository
with the new manifests read; a re-plan can only keep more.

Every task is owned by a TaskGroup. A stop (SIGTERM, SIGINT, or a fatal registry
answer) lets in-flight requests finish for ``stop_grace_s``, then abandons them; no new
deletion or retry starts after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from regcleaner import layout
from regcleaner.concurrency import Channel, first_error, stop_signals
from regcleaner.config import Settings
from regcleaner.digest import Digest
from regcleaner.errors import RegcleanerError, RegistryMismatch, StorageError
from regcleaner.globs import repository_selected
from regcleaner.manifests import ManifestInfo
from regcleaner.model import RepositorySnapshot
from regcleaner.planner import (
    GONE,
    PUSHED_DURING_RUN,
    Decision,
    Policy,
    Reason,
    ReasonKind,
    RepositoryPlan,
    narrow,
    needed_manifests,
    without,
)
from regcleaner.removers.base import (
    GONE_BEFORE_REMOVAL,
    MOVED_SINCE_PLAN,
    Outcome,
    Removal,
    Remover,
)
from regcleaner.report import Progress, RepositoryRecord, RunReport
from regcleaner.retention import signed_digest
from regcleaner.space import SpaceEstimate
from regcleaner.tagplan import TagPlan, plan_with_tags, stays
from regcleaner.view import RegistryView

log = logging.getLogger("regcleaner")

STOPPED = Reason(ReasonKind.STOPPED)
RECHECK_FAILED = Reason(ReasonKind.RECHECK_FAILED)
# 404s whose revision link stays, before the URL and the storage are taken to be
# different registries (one 202 whose link stays is enough).
MISMATCH_EVIDENCE = 3
# A listing that fits in one S3 page replaces the per-DELETE HEAD: same request count,
# and it sees every push in the repository, not just one manifest's.
ONE_PAGE = 1000


def shard_of(name: str, count: int) -> int:
    """Stable shard of a repository name: the same on every machine and every run."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


@dataclass(slots=True)
class RepositoryJob:
    """A planned repository waiting for its deletions."""

    snapshot: RepositorySnapshot
    manifests: dict[Digest, ManifestInfo]
    plan: RepositoryPlan
    record: RepositoryRecord
    scanned_at: float = 0.0
    """time.monotonic() just before the snapshot was taken."""
    tag_plan: TagPlan = field(default_factory=TagPlan)
    tag_outcomes: dict[str, str | None] = field(default_factory=dict)
    """Tags a remover removed alone: None when removed, else why each stays."""
    tags_after: dict[str, Digest | StorageError | None] | None = None
    """Through the API: where the going tags whose digest was deleted point after the
    repository's deletions (None: gone), read once; None when not read."""
    reasons: dict[Digest, str] = field(default_factory=dict)
    """Each planned deletion's reason, as reported."""

    def __post_init__(self) -> None:
        self.reasons = {d.digest: str(d.reason) for d in self.plan.delete}


class _StopWalk(Exception):
    """Raised into the repository walk to end it early on a stop."""


@dataclass(slots=True)
class MismatchDetector:
    """Proof that the registry at the URL uses the storage being read, before deleting
    at full speed: until one DELETE answered 202 and this storage's revision link went
    with it, DELETEs go one at a time. A 202 whose link stays, or three 404s whose links
    stay, stop the run (the URL serves another registry's storage), with at most those
    few DELETEs sent."""

    registry_url: str
    storage: str
    engine: Engine
    proven: bool = False
    probe: tuple[str, Digest, float | None] | None = None
    evidence: list[str] = field(default_factory=list)
    waiting: int = 0
    _changed: asyncio.Condition | None = None

    async def _wait(self, changed: asyncio.Condition) -> None:
        self.waiting += 1
        try:
            await changed.wait()
        finally:
            self.waiting -= 1

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def admit(self, repository: str, digest: Digest, before: float | None) -> bool:
        """Before a DELETE: True to send it (as the probe while unproven), False if the
        run stopped meanwhile."""
        changed = self._condition()
        async with changed:
            if self.probe is not None and self.probe[:2] == (repository, digest):
                # The probe again: its last answer said nothing (a retryable status, no
                # answer at all). Let another DELETE probe while this one backs off, so
                # that a storm of errors does not fall on one manifest.
                if self.waiting:
                    self.probe = None
                    changed.notify_all()
                    await self._wait(changed)
                else:
                    return True
            while not self.proven:
                if self.engine.fatal_error is not None or self.engine.stopping.is_set():
                    return False
                if self.probe is None:
                    self.probe = (repository, digest, before)
                    return True
                await self._wait(changed)
        return True

    async def release(self, digest: Digest) -> None:
        """The probe was not sent after all: let the next DELETE be the probe."""
        if self.probe is not None and self.probe[1] == digest:
            async with self._condition():
                self.probe = None
                self._condition().notify_all()

    async def confirm(self, view: RegistryView, removal: Removal) -> None:
        """After the probe's answer: did this storage's link go with it?"""
        if self.probe is None or self.probe[1] != removal.digest or self.proven:
            return
        repository, digest, before = self.probe
        try:
            registry_404 = removal.outcome is Outcome.ALREADY_GONE and bool(removal.detail)
            if removal.outcome is Outcome.DELETED or registry_404:
                now = await view.revision_mtime(repository, digest)
                if now is None or now != before:
                    if removal.outcome is Outcome.DELETED:
                        self.proven = True  # gone (or pushed again since): same storage
                else:
                    answer = "answered 202" if removal.outcome is Outcome.DELETED else "said 404"
                    self.evidence.append(
                        f"it {answer} for {repository}@{digest}, whose revision link is still there"
                    )
                    if (
                        removal.outcome is Outcome.DELETED
                        or len(self.evidence) >= MISMATCH_EVIDENCE
                    ):
                        self.engine.fatal(self.error())
        finally:
            async with self._condition():
                self.probe = None
                self._condition().notify_all()

    def error(self) -> RegistryMismatch:
        return RegistryMismatch(
            f"the registry at {self.registry_url} and the storage {self.storage} are not the "
            f"same registry: {'; '.join(self.evidence[:3])}. Point --registry-url and the "
            "storage options at the same registry"
        )


class PushWatch:
    """Watches one repository for pushes while its deletions run (API mode).

    What it looks at, and when:

    - before the first wave, the whole repository again (``recheck``);
    - right before each DELETE of X: X's revision link (gone? rewritten by a push?),
      the revision links of the manifests this run deleted that X depends on (pushed
      again, they need X), and on a disk the revisions folder's mtime, which changes
      when a revision folder is added (a new manifest);
    - on S3, where no folder mtime exists: a listing of the revisions instead of the
      HEAD, while they fit in one page (same request count, and it sees every push);
    - in any case a listing of the revisions at least every ``recheck_interval_s``, and
      before each wave of a repository too big for one listing page.

    Any change found reads the repository again and narrows the plan: what was pushed
    since the scan is kept, whatever its age, with everything it points at.
    """

    def __init__(
        self,
        engine: Engine,
        job: RepositoryJob,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.view = engine.view
        self.job = job
        self.name = job.record.name
        self.clock = clock
        self.monotonic = monotonic
        self.interval = engine.settings.recheck_interval_s
        self.known: dict[Digest, float] = dict(job.snapshot.revisions)
        self.deleted: set[Digest] = set()
        self.parents: dict[Digest, list[Digest]] = {}
        """For each manifest, the deleted manifests it depends on (its index, its
        subject, the digest its signature tag signs): pushed again, they need it."""
        self.rescued: dict[Digest, Reason] = {}
        self.remaining: list[Decision] = list(job.plan.delete)
        self.stamp: float | None = job.snapshot.stamp
        self.listed_at = job.scanned_at
        self.lock = asyncio.Lock()
        self.rechecks = 0
        self.listings = 0

    # -- full re-check --------------------------------------------------------------

    async def recheck(self) -> None:
        """Read the repository again, read new manifests, and narrow the plan."""
        self.rechecks += 1
        self.stamp = await self.view.revisions_stamp(self.name)
        fresh = await self.view.snapshot(self.name)
        self.listed_at = self.monotonic()
        manifests = self.job.manifests
        missing = needed_manifests(fresh) - manifests.keys()
        if missing:
            manifests.update(await self.view.read_manifests(missing))
        self.known = dict(fresh.revisions)
        done = self.rescued.keys() | self.deleted
        undecided = [d for d in self.remaining if d.digest not in done]
        scanned = self.job.snapshot
        # A tag that was to go still counts as absent only while it is as the scan saw it.
        ignore = {
            tag for tag in self.job.tag_plan.going
            if fresh.tags.get(tag) == scanned.tags.get(tag)
            and fresh.tag_times.get(tag) == scanned.tag_times.get(tag)
        }  # fmt: skip
        # A signature tag that was to go with its digest stays when the digest is kept
        # now (tagged again during the run), and keeps its signature manifest.
        signatures = {
            tag: Digest(signed) for tag in ignore
            if (signed := signed_digest(tag)) is not None
        }  # fmt: skip
        live: set[str] = set()
        while True:
            plan, rescued = narrow(
                undecided, fresh, manifests, self.engine.policy, self.clock(),
                scanned=scanned.revisions, ignore_tags=ignore - live,
            )  # fmt: skip
            now_live = {tag for tag, digest in signatures.items() if digest in plan.keep}
            if now_live <= live:
                break
            live |= now_live
        for digest, reason in rescued.items():
            direct = plan.keep.get(digest)
            if direct is not None and direct.kind is ReasonKind.TAGGED and direct.detail in live:
                # its signature tag is as it was: the digest it signs was tagged
                signed = signatures[direct.detail]
                reason = Reason(ReasonKind.TAGGED_DURING_RUN, f"signature-of:{signed}")
            self.rescued[digest] = reason
            if reason.kind is not ReasonKind.GONE:
                log.info("repository %s: keeping %s (%s)", self.name, digest, reason)

    async def _list_and_recheck(self) -> None:
        """List the revisions; if anything is new, back, or rewritten, re-check."""
        self.listings += 1
        listed, doubts = await self.view.revision_listing(self.name)
        self.listed_at = self.monotonic()
        known = self.known
        if doubts or any(known.get(digest) != mtime for digest, mtime in listed.items()):
            await self.recheck()

    def _one_page(self) -> bool:
        return len(self.known) <= ONE_PAGE

    async def start(self) -> None:
        """Before the first wave. The scan's snapshot stands while the looks can tell
        what changed since: the revisions folder's mtime was read with it (a disk), or
        each DELETE lists the revisions (S3, one page). Otherwise, or once the scan is
        older than the interval, list the revisions now and re-check on any change."""
        store = self.view.store
        due = self.monotonic() - self.listed_at >= self.interval
        if due or (not store.has_directories and not self._one_page()):
            async with self.lock:
                await self._list_and_recheck()

    async def before_wave(self) -> None:
        """Before a later wave: list the revisions when the per-DELETE looks do not
        cover the repository (S3, more than one page) or the interval has passed."""
        async with self.lock:
            store = self.view.store
            due = self.monotonic() - self.listed_at >= self.interval
            if due or (not store.has_directories and not self._one_page()):
                await self._list_and_recheck()

    # -- right before one DELETE ----------------------------------------------------

    async def last_look(self, digest: Digest) -> Reason | None:
        """A reason to keep ``digest`` after all, looked up right before its DELETE."""
        store = self.view.store
        if (not store.has_directories and self._one_page()) or (
            self.monotonic() - self.listed_at >= self.interval
        ):
            return await self._look_everywhere(digest, None)
        # The cheap look needs no lock: it changes nothing, and ``known`` is replaced,
        # never changed in place, by a re-check that may run meanwhile.
        known = self.known
        expected = known.get(digest)
        parents = self.parents.get(digest, ())
        mtime, parent_back, stamp = await self.view.look(self.name, digest, parents)
        if digest in self.rescued:
            return self.rescued[digest]
        if parent_back or (store.has_directories and stamp != self.stamp):
            # A revision folder was added, or a manifest this run deleted that pointed
            # at this one was pushed again: look at everything.
            return await self._look_everywhere(digest, stamp)
        if mtime is None:
            return GONE
        if mtime != expected:
            # Pushed (or tagged) again since the scan: re-check for the full reason;
            # the re-check keeps whatever was pushed during the run.
            return await self._look_everywhere(digest, None) or PUSHED_DURING_RUN
        return None

    async def _look_everywhere(self, digest: Digest, stamp: float | None) -> Reason | None:
        """Under the lock: verify pending deletions, list the revisions, re-check if
        anything changed, then answer for ``digest``."""
        async with self.lock:
            if stamp is not None:
                self.stamp = stamp  # a re-check, if one follows, reads it anew
            if digest not in self.rescued:
                await self._list_and_recheck()
            if digest in self.rescued:
                return self.rescued[digest]
            return None if digest in self.known else GONE

    # -- bookkeeping ----------------------------------------------------------------

    def removed(self, removal: Removal) -> None:
        """Note an outcome: deleted manifests leave ``known`` and become the parents of
        what depends on them; the first few are verified to have left this storage."""
        digest = removal.digest
        if removal.outcome is Outcome.DELETED:
            self.deleted.add(digest)
            self.known.pop(digest, None)
            for target in self.job.plan.dependents.get(digest, ()):
                self.parents.setdefault(target, []).append(digest)
        elif removal.outcome is Outcome.ALREADY_GONE:
            self.known.pop(digest, None)


class _Wave:
    """The engine's side of one wave: the remover's WaveContext."""

    def __init__(
        self,
        engine: Engine,
        job: RepositoryJob,
        protected: dict[Digest, Digest],
        watch: PushWatch | None,
    ) -> None:
        self.engine = engine
        self.job = job
        self.protected = protected
        self.watch = watch
        self.failed: Reason | None = None

    def skip(self, digest: Digest) -> Reason | None:
        engine = self.engine
        if engine.fatal_error is not None:
            return Reason(ReasonKind.NOT_ATTEMPTED, str(engine.fatal_error))
        if engine.stopping.is_set():
            return STOPPED
        if self.failed is not None:
            return self.failed
        if digest in self.protected:
            return Reason(ReasonKind.PARENT_NOT_DELETED, self.protected[digest])
        if self.watch is not None and digest in self.watch.rescued:
            return self.watch.rescued[digest]
        return None

    async def admit(self, digest: Digest) -> Reason | None:
        """Before the rate limit and the last look: until the URL is proven to serve this
        storage, DELETEs go one at a time (MismatchDetector)."""
        detector = self.engine.mismatch
        if detector is None or detector.proven or self.watch is None:
            return None
        expected = self.watch.known.get(digest)
        if not await detector.admit(self.job.record.name, digest, expected):
            error = self.engine.fatal_error
            return Reason(ReasonKind.NOT_ATTEMPTED, str(error)) if error else STOPPED
        return None

    async def last_look(self, digest: Digest) -> Reason | None:
        watch = self.watch
        if watch is None:
            return None
        if self.failed is not None:
            return self.failed
        detector = self.engine.mismatch
        probe = detector is not None and not detector.proven
        try:
            reason = await watch.last_look(digest)
        except StorageError as exc:
            # The storage cannot answer for this repository: nothing more is deleted in
            # it, and it counts as failed; the run goes on with the others.
            record = self.job.record
            record.error = record.error or f"cannot look at storage before deleting: {exc}"
            log.error("repository %s: %s; its other deletions are skipped", record.name, exc)
            self.failed = Reason(ReasonKind.RECHECK_FAILED, str(exc))
            reason = self.failed
        if reason is not None and probe and detector is not None:
            await detector.release(digest)  # not sent: the next DELETE is the probe
        return reason

    async def confirm(self, removal: Removal) -> None:
        if self.engine.mismatch is not None and not self.engine.mismatch.proven:
            await self.engine.mismatch.confirm(self.engine.view, removal)

    def fatal(self, error: BaseException) -> None:
        self.engine.fatal(error)

    def record(self, removal: Removal) -> None:
        self.engine.record(self.job, removal, self.protected, self.watch)


class Engine:
    """One run of regcleaner over one storage, carrying out plans with one remover."""

    def __init__(
        self,
        settings: Settings,
        view: RegistryView,
        remover: Remover,
        report: RunReport,
        *,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.time,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.view = view
        self.remover = remover
        self.report = report
        self.progress = progress
        self.clock = clock
        self.policy = Policy(min_age_s=settings.min_age_s)
        self.stopping = stopping if stopping is not None else asyncio.Event()
        self.fatal_error: BaseException | None = None
        self.space: SpaceEstimate | None = None
        self.mismatch: MismatchDetector | None = None
        if remover.watches_pushes:
            self.mismatch = MismatchDetector(settings.registry_url or "", view.describe(), self)
        self._deadline: asyncio.Timeout | None = None
        self._signalled = False
        limits = settings.limits
        self.removal_workers = remover.parallel_repositories or max(
            2, 2 * math.ceil(limits.concurrency / limits.per_repository)
        )

    # -- stopping -------------------------------------------------------------------

    def _begin_stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._deadline is not None:
            loop = asyncio.get_running_loop()
            self._deadline.reschedule(loop.time() + self.settings.stop_grace_s)

    def request_stop(self, why: str) -> None:
        """Stop listing and starting deletions; in-flight requests get the grace period.
        A second signal abandons them at once (a stop for a fatal error is not one)."""
        if not self._signalled:
            self._signalled = True
            log.warning("%s: finishing in-flight deletions, starting no new ones", why)
            self.report.stopped_by = self.report.stopped_by or why
            self._begin_stop()
            return
        if self._deadline is not None:
            log.warning("%s again: abandoning in-flight deletions now", why)
            self._deadline.reschedule(asyncio.get_running_loop().time())

    def fatal(self, error: BaseException) -> None:
        """An error that ends the run: record it once, stop, report the rest."""
        if self.fatal_error is None:
            self.fatal_error = error
            log.error("%s; no new deletions start", error)
        self._begin_stop()

    # -- the run --------------------------------------------------------------------

    async def run(self) -> None:
        """Run the whole pipeline; raise the error that ended the run, if any."""
        await self.view.check()
        log.info(
            "scanning %s%s; carrying out with %s",
            self.view.describe(),
            f", registry {self.settings.registry_url}" if self.settings.registry_url else "",
            self.remover.name,
        )
        with stop_signals(self.request_stop):
            try:
                await self._run_bounded()
            except BaseExceptionGroup as group:
                raise first_error(group, RegcleanerError, "pipeline failed") from None
            finally:
                self.report.requests = self.remover.requests
                if self.space is not None:
                    self.report.reclaimable = self.space.settle()
                    self.space.close()
                self.report.storage_requests = self.view.store.stats.as_dict()
        if self.fatal_error is not None:
            raise self.fatal_error

    async def _run_bounded(self) -> None:
        """The remover's session and the pipeline under a deadline that a stop sets to
        now + the grace period (so work the remover owns, such as requests that carry
        many repositories' keys, is abandoned at the deadline too)."""
        try:
            async with asyncio.timeout(None) as deadline:
                self._deadline = deadline
                if self.stopping.is_set():  # stopped before the deadline existed
                    deadline.reschedule(asyncio.get_running_loop().time())
                async with self.remover.session():
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
        except TimeoutError:
            if not self.stopping.is_set():
                raise
            log.warning(
                "in-flight deletions did not finish within %.0fs; abandoning them "
                "(their outcome is reported as unknown)",
                self.settings.stop_grace_s,
            )
        finally:
            self._deadline = None

    async def _pipeline(self) -> None:
        scan_workers = self.settings.limits.scan_workers
        names: Channel[str] = Channel(scan_workers * 4)
        jobs: Channel[RepositoryJob] = Channel(self.removal_workers)
        async with asyncio.TaskGroup() as removing:
            for _ in range(self.removal_workers):
                removing.create_task(self._remove(jobs))
            try:
                async with asyncio.TaskGroup() as scanning:
                    scanning.create_task(self._produce(names))
                    for _ in range(scan_workers):
                        scanning.create_task(self._scan(names, jobs))
            finally:
                await jobs.close()
                self.remover.no_more_repositories()

    async def _produce(self, names: Channel[str]) -> None:
        try:
            await self.view.repositories(lambda name: self._offer(name, names))
            if not self.stopping.is_set():
                self.report.scan_complete = True
        except* _StopWalk:
            pass  # a stop ended the walk (on S3, from inside its listers' TaskGroup)
        finally:
            await names.close()

    async def _offer(self, name: str, names: Channel[str]) -> None:
        if self.stopping.is_set():
            raise _StopWalk
        settings = self.settings
        if not repository_selected(name, settings.include, settings.exclude):
            self.report.counters.repositories_skipped += 1
            return
        if settings.shard is not None and shard_of(name, settings.shard[1]) != settings.shard[0]:
            self.report.counters.repositories_skipped += 1
            return
        if not layout.is_valid_repository_name(name):
            record = RepositoryRecord(name)
            record.error = "not a valid repository name; skipped, nothing deleted"
            log.warning("repository %r: %s", name, record.error)
            self.report.add(record)
            return
        await names.put(name)

    async def _scan(self, names: Channel[str], jobs: Channel[RepositoryJob]) -> None:
        while (name := await names.get()) is not None:
            if self.stopping.is_set():
                self.report.scan_complete = False  # listed, never planned: not reported
                continue
            job = await self._plan(name)
            if job is None:
                continue
            removes_tags = (
                self.remover.removes_tags and job.tag_plan.going and not job.plan.blocked
            )  # a repository blocked by doubt keeps its tags too
            if not job.plan.waves and not removes_tags:
                self._finish_repository(job)
            else:
                self.report.planned(len(job.plan.delete))
                await jobs.put(job)

    async def _plan(self, name: str) -> RepositoryJob | None:
        record = RepositoryRecord(name)
        scanned_at = time.monotonic()
        try:
            snapshot = await self.view.snapshot(name, history=self.remover.needs_history)
            manifests = await self.view.read_manifests(needed_manifests(snapshot))
            tag_policy = None
            if self.settings.retention is not None:
                tag_policy = self.settings.retention.for_repository(name)
            plan, tag_plan = plan_with_tags(
                snapshot, manifests, self.policy, self.clock(), tag_policy=tag_policy,
                prune_orphan_signatures=self.settings.prune_orphan_signatures,
            )  # fmt: skip
        except StorageError as exc:
            record.error = str(exc)
            log.error("repository %s: %s; nothing in it is deleted", name, exc)
            self.report.add(record)
            return None
        except Exception as exc:  # a bug in reading one repository stays in it
            log.exception("repository %s: internal error while planning; nothing in it is "
                          "deleted", name)  # fmt: skip
            record.error = f"internal error while planning: {type(exc).__name__}: {exc}"
            self.report.add(record)
            return None
        self.report.counters.scanned_repositories += 1
        self.report.counters.scanned_manifests += len(snapshot.revisions)
        record.manifests = len(snapshot.revisions)
        record.tags = len(snapshot.tags) + len(snapshot.broken_tags)
        record.tagged = len(plan.tagged)
        record.kept = {d: str(r) for d, r in plan.keep.items()}
        record.warnings = list(plan.warnings)
        if tag_plan.going or self.settings.retention is not None:
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
        self._settle_tags(job)
        self._account_space(job)
        self.report.add(job.record)

    async def _reread_going_tags(self, job: RepositoryJob) -> None:
        """Through the API, after the repository's deletions: read once where each going
        tag whose digest was deleted points now. The DELETE removed the tag with its
        digest, unless the tag was pushed again during the run (to another manifest, or
        to the same one pushed back): the report must not call such a tag removed."""
        if not self.remover.watches_pushes or self.remover.removes_tags:
            return
        deleted = {d for d, _ in job.record.deleted}
        tags = sorted(t for t in job.tag_plan.going if job.snapshot.tags[t] in deleted)
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
        """Record where each tag that was to go ended up: removed (alone, or with its
        digest), or staying, with the reason."""
        record = job.record
        snapshot = job.snapshot
        deleted = {d for d, _ in record.deleted} | {d for d, _ in record.would_delete}
        after = job.tags_after or {}
        for tag, why in sorted(job.tag_plan.going.items()):
            digest = snapshot.tags[tag]
            if tag in job.tag_outcomes:
                outcome = job.tag_outcomes[tag]
                if outcome is None:
                    record.tags_removed.append((tag, digest, why))
                else:
                    record.tags_expired.append((tag, digest, why, outcome))
                continue
            if self.remover.removes_tags:
                # Not attempted (a stop, a failed repository): it stays.
                record.tags_expired.append((tag, digest, why, "not-attempted"))
                continue
            stay = stays(tag, snapshot, job.tag_plan, job.plan, deleted)
            if stay is None and tag in after:
                stay = _tag_after_run(after[tag], digest)
            if stay is None:
                record.tags_removed.append((tag, digest, f"{why}; with its digest"))
            else:
                if digest in record.kept and stay.startswith("digest-not"):
                    stay = f"digest-in-use:{record.kept[digest]}"
                record.tags_expired.append((tag, digest, why, stay))

    def _account_space(self, job: RepositoryJob) -> None:
        """Feed the reclaimable-space estimate with what this repository deleted and kept."""
        if self.space is None:
            return
        record = job.record
        gone = {d for d, _ in record.deleted} | {d for d, _ in record.would_delete}
        gone |= {d for d, _ in record.already_gone}
        kept = [d for d in job.snapshot.revisions if d not in gone]
        self.space.add_repository(record.name, gone, kept, job.manifests)

    def _keep_all(self, job: RepositoryJob, decisions: list[Decision], reason: Reason) -> None:
        for decision in decisions:
            job.record.kept[decision.digest] = str(reason)

    async def _carry_out(self, job: RepositoryJob) -> None:
        record = job.record
        name = record.name
        if self.fatal_error is not None:
            reason = Reason(ReasonKind.NOT_ATTEMPTED, str(self.fatal_error))
            self._keep_all(job, list(job.plan.delete), reason)
            return
        if self.stopping.is_set():
            self._keep_all(job, list(job.plan.delete), STOPPED)
            return
        watch: PushWatch | None = None
        waves = job.plan.waves
        if self.remover.watches_pushes:
            watch = PushWatch(self, job, clock=self.clock)
            try:
                await watch.start()
            except StorageError as exc:
                record.error = f"re-check before deleting failed: {exc}"
                log.error("repository %s: %s; nothing in it is deleted", name, record.error)
                self._keep_all(job, list(job.plan.delete), RECHECK_FAILED)
                return
            self._settle_rescued(job, watch)
            waves = without(waves, watch.rescued)
        if self.remover.removes_tags and job.tag_plan.going and not job.plan.blocked:
            after_tags = await self._remove_going_tags(job, waves)
            if after_tags is None:
                return
            waves = after_tags
        protected: dict[Digest, Digest] = {}
        wave = _Wave(self, job, protected, watch)
        for number, decisions in enumerate(waves):
            if watch is not None and number > 0:
                try:
                    await watch.before_wave()
                except StorageError as exc:
                    record.error = f"re-check between waves failed: {exc}"
                    log.error("repository %s: %s; its other deletions are skipped",
                              name, record.error)  # fmt: skip
                    remaining = [d for w in waves[number:] for d in w]
                    self._keep_all(job, remaining, RECHECK_FAILED)
                    return
                self._settle_rescued(job, watch, waves[number:])
                decisions = tuple(d for d in decisions if d.digest not in watch.rescued)
                if not decisions:
                    continue
            await self.remover.remove_wave(name, job.snapshot, decisions, wave)

    async def _remove_going_tags(
        self, job: RepositoryJob, waves: tuple[tuple[Decision, ...], ...]
    ) -> tuple[tuple[Decision, ...], ...] | None:
        """Remove the tags that go, each alone (direct removal), before any manifest.

        Signature tags of digests this run is to delete go last: a tag that stays (its
        removal refused, or moved) can keep such a digest, and its signature tag must
        then stay with it, so they are removed only for the digests still going once
        every other tag's fate is known. Returns the waves without what the staying
        tags keep; None when nothing more in the repository may go."""
        name = job.record.name
        snapshot = job.snapshot
        going = job.tag_plan.going
        signatures = {
            tag: Digest(signed) for tag in going
            if (signed := signed_digest(tag)) is not None and signed in snapshot.revisions
        }  # fmt: skip
        job.tag_outcomes = {}
        stayed: dict[str, str] = {}
        kept: dict[Digest, Reason] = {}
        live: frozenset[str] = frozenset()
        for batch in (sorted(set(going) - signatures.keys()), sorted(signatures)):
            batch = [tag for tag in batch if tag not in live]
            if not batch:
                continue
            stop = self._stop_reason()
            if stop is not None:  # the rest stays, reported not-attempted
                self._keep_all(job, list(job.plan.delete), stop)
                return None
            try:
                found = await self.remover.remove_tags(
                    name, snapshot, [(tag, snapshot.tags[tag]) for tag in batch]
                )
            except StorageError as exc:
                job.record.error = f"removing tags failed: {exc}"
                log.error("repository %s: %s; nothing else in it is deleted", name,
                          job.record.error)  # fmt: skip
                self._keep_all(job, list(job.plan.delete), RECHECK_FAILED)
                return None
            job.tag_outcomes.update(found)
            refused = {
                tag: why for tag, why in found.items()
                if why is not None and why != GONE_BEFORE_REMOVAL
            }  # fmt: skip
            if not refused:
                continue
            stayed.update(refused)
            replanned = self._keep_for_staying_tags(job, stayed, signatures)
            if replanned is None:
                return None
            kept, live = replanned
            for tag in live:
                if job.tag_outcomes.get(tag, "") is None:  # removed before this was known
                    warning = (f"signature tag {tag} was removed, but {signatures[tag]} "
                               "stays: another tag's removal was refused")  # fmt: skip
                    job.record.warnings.append(warning)
                    log.warning("repository %s: %s", name, warning)
                    continue
                job.tag_outcomes[tag] = f"signature-of-kept:{signatures[tag]}"
        return without(waves, kept)

    def _stop_reason(self) -> Reason | None:
        """Why nothing new may start now (a fatal error, a stop), or None."""
        if self.fatal_error is not None:
            return Reason(ReasonKind.NOT_ATTEMPTED, str(self.fatal_error))
        if self.stopping.is_set():
            return STOPPED
        return None

    def _keep_for_staying_tags(
        self, job: RepositoryJob, stayed: dict[str, str], signatures: dict[str, Digest]
    ) -> tuple[dict[Digest, Reason], frozenset[str]] | None:
        """The plan counted these tags as absent, but they stay (their removal was
        refused, or they moved since the plan): plan again with them present, where
        they point now, and keep what they reach, with the signature tags (of
        ``signatures``) of every digest kept that way. Returns what is kept and those
        signature tags; None when that cannot be known (a tag moved to a manifest the
        scan never saw): then nothing in the repository goes, and it counts as failed."""
        record = job.record
        snapshot = job.snapshot
        tags = dict(snapshot.tags)
        for tag, why in stayed.items():
            moved_to = why.removeprefix(MOVED_SINCE_PLAN)
            if moved_to != why:
                if moved_to not in snapshot.revisions:
                    record.error = f"tag {tag} moved to a manifest the scan did not see: {why}"
                    log.error("repository %s: %s; nothing in it is deleted", record.name,
                              record.error)  # fmt: skip
                    self._keep_all(job, list(job.plan.delete), RECHECK_FAILED)
                    return None
                tags[tag] = Digest(moved_to)
            else:
                record.error = record.error or f"tag {tag} could not be removed: {why}"
        fresh = dataclasses.replace(snapshot, tags=tags)
        live: frozenset[str] = frozenset()
        while True:  # a signature tag comes back with its digest; its manifest may keep more
            plan, rescued = narrow(
                list(job.plan.delete), fresh, job.manifests, self.policy, self.clock(),
                ignore_tags=set(job.tag_plan.going) - stayed.keys() - live,
            )  # fmt: skip
            now_live = frozenset(t for t, d in signatures.items() if d in plan.keep) - stayed.keys()
            if now_live <= live:
                break
            live |= now_live
        # Said as the plan says it (tagged:v1, child-of:...): with direct removal the
        # registry cannot write, so nothing was tagged or pushed during the run.
        kept = {digest: plan.keep.get(digest, reason) for digest, reason in rescued.items()}
        for digest, reason in kept.items():
            record.kept[digest] = str(reason)
            log.info("repository %s: keeping %s (%s: a tag stays)", record.name, digest, reason)
        return kept, live

    def _settle_rescued(
        self,
        job: RepositoryJob,
        watch: PushWatch,
        waves: tuple[tuple[Decision, ...], ...] | None = None,
    ) -> None:
        """Record what a re-check rescued from the waves still to come."""
        pending = job.plan.delete if waves is None else [d for w in waves for d in w]
        for decision in pending:
            reason = watch.rescued.get(decision.digest)
            if reason is None or decision.digest in job.record.kept:
                continue
            if reason.kind is ReasonKind.GONE:
                if decision.digest not in {d for d, _ in job.record.already_gone}:
                    job.record.already_gone.append((decision.digest, str(reason)))
            else:
                job.record.kept[decision.digest] = str(reason)

    def record(
        self,
        job: RepositoryJob,
        removal: Removal,
        protected: dict[Digest, Digest],
        watch: PushWatch | None,
    ) -> None:
        """Account for one outcome; protect what depends on a surviving manifest."""
        record = job.record
        digest = removal.digest
        reason = job.reasons.get(digest) or str(Reason(ReasonKind.UNTAGGED))
        outcome = removal.outcome
        if watch is not None:
            watch.removed(removal)
        if outcome is Outcome.DELETED:
            record.deleted.append((digest, reason))
            self.report.deleted_one()
            if removal.detail:
                log.info("repository %s: %s: %s", record.name, digest, removal.detail)
            return
        if outcome is Outcome.WOULD_DELETE:
            record.would_delete.append((digest, reason))
            self.report.would_delete_one()
            return
        if outcome is Outcome.ALREADY_GONE or (
            outcome is Outcome.KEPT and removal.reason is not None
            and removal.reason.kind is ReasonKind.GONE
        ):  # fmt: skip
            # The registry's 404 keeps the planned reason; a last look that found the
            # link gone says so.
            said_404 = outcome is Outcome.ALREADY_GONE and bool(removal.detail)
            record.already_gone.append((digest, reason if said_404 else str(GONE)))
            return
        for target in job.plan.dependents.get(digest, ()):
            protected.setdefault(target, digest)
        if outcome is Outcome.KEPT:
            why = removal.reason or STOPPED
            record.kept[digest] = str(why)
            if why.kind not in (ReasonKind.STOPPED, ReasonKind.NOT_ATTEMPTED):
                log.info("repository %s: keeping %s (%s)", record.name, digest, why)
            return
        record.failed.append((digest, reason, removal.detail))
        log.warning("repository %s: deleting %s failed: %s", record.name, digest, removal.detail)


def _tag_after_run(now: Digest | StorageError | None, planned: Digest) -> str | None:
    """Why a tag whose digest this run deleted still stays (None: it went with it)."""
    if now is None:
        return None
    if isinstance(now, StorageError):
        return f"cannot re-read the tag: {now}"
    if now != planned:
        return f"moved-during-run:{now}"
    return f"pushed-again-during-run:{now}"
