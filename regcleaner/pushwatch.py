"""Watching a repository while its deletions run through the API, and proving that the
URL serves the storage being read.

``PushWatch`` guards each repository's deletions when the registry may be written during
the run: the repository is read again before its first wave, its revisions are listed
again before every later wave and at least every ``recheck_interval_s`` within one, and
right before each DELETE the manifest's own revision link, the revision links of the
deleted manifests it depends on, and (on a disk) the revisions folder are looked at. Any
change re-plans the repository with the new manifests read; a re-plan can only keep
more. ``MismatchDetector`` lets DELETEs go one at a time until one proved that this
storage's link went with it. ``RepositoryWaveContext`` is what a remover is lent for a
repository's waves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from regcleaner.concurrency import StopScope
from regcleaner.digest import Digest
from regcleaner.errors import RegistryMismatch, StorageError
from regcleaner.manifests import ManifestInfo
from regcleaner.planner import (
    GONE,
    PUSHED_DURING_RUN,
    RUN_STOPPED,
    UNTAGGED,
    Decision,
    Policy,
    Reason,
    ReasonKind,
    RepositoryPlan,
    narrow,
    needed_manifests,
)
from regcleaner.removers.base import Outcome, Removal
from regcleaner.reporting.run import RepositoryRecord, RunReport
from regcleaner.retention import attached_digest
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.storage.base import page_size
from regcleaner.tagplan import settle_attached
from regcleaner.view import RegistryView

log = logging.getLogger("regcleaner")

# 404s whose revision link stays, before the URL and the storage are taken to be
# different registries (one 202 whose link stays is enough).
MISMATCH_EVIDENCE = 3


class RunState(Protocol):
    """What the watch and the wave context need of the run: whether it is stopping."""

    fatal_error: BaseException | None
    stop: StopScope

    def fatal(self, error: BaseException) -> None:
        """An error that ends the run: stop, report the rest."""
        ...


class WatchedRepository(Protocol):
    """The planned repository a ``PushWatch`` guards."""

    snapshot: RepositorySnapshot
    manifests: dict[Digest, ManifestInfo]
    plan: RepositoryPlan
    scanned_at: float

    @property
    def going_tags(self) -> Mapping[str, str]:
        """The tags the plan counted as absent."""
        ...


def stop_reason(run: RunState) -> Reason | None:
    """Why nothing new may start now (a fatal error, a stop), or None."""
    if run.fatal_error is not None:
        return Reason(ReasonKind.NOT_ATTEMPTED, str(run.fatal_error))
    if run.stop.stop_requested:
        return RUN_STOPPED
    return None


@dataclass(slots=True)
class MismatchDetector:
    """Proof that the registry at the URL uses the storage being read, before deleting
    at full speed: until one DELETE answered 202 and this storage's revision link went
    with it, DELETEs go one at a time. A 202 whose link stays, or three 404s whose links
    stay, stop the run (the URL serves another registry's storage), with at most those
    few DELETEs sent."""

    registry_url: str
    storage: str
    run: RunState
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
                if self.run.fatal_error is not None or self.run.stop.stop_requested:
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
                        self.run.fatal(self.error())
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
        view: RegistryView,
        policy: Policy,
        repository: WatchedRepository,
        *,
        interval_s: float,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.policy = policy
        self.job = repository
        self.name = repository.snapshot.name
        self.clock = clock
        self.monotonic = monotonic
        self.interval = interval_s
        self.known: dict[Digest, float] = dict(repository.snapshot.revisions)
        self.deleted: set[Digest] = set()
        self.parents: dict[Digest, list[Digest]] = {}
        """For each manifest, the deleted manifests it depends on (its index, its
        subject, the digest its signature tag signs): pushed again, they need it."""
        self.rescued: dict[Digest, Reason] = {}
        self.remaining: list[Decision] = list(repository.plan.delete)
        self.stamp: float | None = repository.snapshot.stamp
        self.listed_at = repository.scanned_at
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
            tag for tag in self.job.going_tags
            if fresh.tags.get(tag) == scanned.tags.get(tag)
            and fresh.tag_times.get(tag) == scanned.tag_times.get(tag)
        }  # fmt: skip
        # An attached tag that was to go with its digest stays when the digest is kept
        # now (tagged again during the run), and keeps its manifest.
        attached = {tag: signed for tag in ignore if (signed := attached_digest(tag)) is not None}
        now = self.clock()

        def replan(live: frozenset[str]) -> tuple[RepositoryPlan, dict[Digest, Reason]]:
            return narrow(undecided, fresh, manifests, self.policy, now,
                          scanned=scanned.revisions, ignore_tags=ignore - live)  # fmt: skip

        (plan, rescued), live = settle_attached(attached, replan, lambda found: found[0].keep)
        for digest, reason in rescued.items():
            direct = plan.keep.get(digest)
            if direct is not None and direct.kind is ReasonKind.TAGGED and direct.detail in live:
                # its signature tag is as it was: the digest it signs was tagged
                signed = attached[direct.detail]
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
        """A listing that fits in one page of the store replaces the per-DELETE HEAD:
        same request count, and it sees every push in the repository, not just one
        manifest's."""
        return len(self.known) <= page_size(self.view.store)

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
        mtime, parent_back, stamp = await self.view.recheck_before_delete(
            self.name, digest, parents
        )
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

    def settle_rescued(self, record: RepositoryRecord, pending: Iterable[Decision]) -> None:
        """Record what a re-check rescued from the deletions still to come: kept with
        the reason, or already gone."""
        for decision in pending:
            reason = self.rescued.get(decision.digest)
            if reason is None or decision.digest in record.kept:
                continue
            if reason.kind is ReasonKind.GONE:
                if decision.digest not in {d for d, _ in record.already_gone}:
                    record.already_gone.append((decision.digest, str(reason)))
            else:
                record.kept[decision.digest] = str(reason)

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


class RepositoryWaveContext:
    """The remover's ``WaveContext`` for one repository's waves: what to skip (a stop, a
    failed look, a parent kept), one DELETE at a time until the URL is proven to serve
    this storage, the last look before each request, and each outcome recorded."""

    def __init__(
        self,
        run: RunState,
        report: RunReport,
        record: RepositoryRecord,
        reasons: Mapping[Digest, str],
        dependents: Mapping[Digest, tuple[Digest, ...]],
        *,
        watch: PushWatch | None,
        mismatch: MismatchDetector | None,
    ) -> None:
        self.run = run
        self.report = report
        self.repository = record
        self.reasons = reasons
        """Each planned deletion's reason, as reported."""
        self.dependents = dependents
        self.watch = watch
        self.mismatch = mismatch
        self.protected: dict[Digest, Digest] = {}
        """Manifests that must stay because one they depend on stayed."""
        self.failed: Reason | None = None

    def skip(self, digest: Digest) -> Reason | None:
        stop = stop_reason(self.run)
        if stop is not None:
            return stop
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
        detector = self.mismatch
        if detector is None or detector.proven or self.watch is None:
            return None
        expected = self.watch.known.get(digest)
        if not await detector.admit(self.repository.name, digest, expected):
            return stop_reason(self.run) or RUN_STOPPED
        return None

    async def last_look(self, digest: Digest) -> Reason | None:
        watch = self.watch
        if watch is None:
            return None
        if self.failed is not None:
            return self.failed
        detector = self.mismatch
        probe = detector is not None and not detector.proven
        try:
            reason = await watch.last_look(digest)
        except StorageError as exc:
            # The storage cannot answer for this repository: nothing more is deleted in
            # it, and it counts as failed; the run goes on with the others.
            record = self.repository
            record.error = record.error or f"cannot look at storage before deleting: {exc}"
            log.error("repository %s: %s; its other deletions are skipped", record.name, exc)
            self.failed = Reason(ReasonKind.RECHECK_FAILED, str(exc))
            reason = self.failed
        if reason is not None and probe and detector is not None:
            await detector.release(digest)  # not sent: the next DELETE is the probe
        return reason

    async def confirm(self, removal: Removal) -> None:
        if self.mismatch is not None and not self.mismatch.proven and self.watch is not None:
            await self.mismatch.confirm(self.watch.view, removal)

    def fatal(self, error: BaseException) -> None:
        self.run.fatal(error)

    def record(self, removal: Removal) -> None:
        """Account for one outcome; protect what depends on a surviving manifest."""
        record = self.repository
        digest = removal.digest
        reason = self.reasons.get(digest) or str(UNTAGGED)
        outcome = removal.outcome
        if self.watch is not None:
            self.watch.removed(removal)
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
        for target in self.dependents.get(digest, ()):
            self.protected.setdefault(target, digest)
        if outcome is Outcome.KEPT:
            why = removal.reason or stop_reason(self.run) or RUN_STOPPED
            if why.kind is ReasonKind.STOPPED:  # a remover's stop: never attempted, and why
                why = stop_reason(self.run) or RUN_STOPPED
            record.kept[digest] = str(why)
            if why.kind is not ReasonKind.NOT_ATTEMPTED:
                log.info("repository %s: keeping %s (%s)", record.name, digest, why)
            return
        record.failed.append((digest, reason, removal.detail))
        log.warning("repository %s: deleting %s failed: %s", record.name, digest, removal.detail)
