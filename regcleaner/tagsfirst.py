"""A planned repository on its way through the removal (``RepositoryJob``), and the
tags that go before its manifests.

Where the remover removes tags alone (direct removal; the API on a registry that
deletes single tags), the going tags are removed first, each alone. A tag whose removal
is refused, or that moved since the plan, stays: the repository is planned again with
it present where it points now, and what it reaches is kept, with the signature tags
of every digest kept that way (``tagplan.settle_attached``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.manifests import ManifestInfo
from regcleaner.planner import Decision, Policy, Reason, ReasonKind, RepositoryPlan, narrow, without
from regcleaner.pushwatch import RunState, stop_reason
from regcleaner.removers.base import GONE_BEFORE_REMOVAL, Remover
from regcleaner.reporting.run import RepositoryRecord
from regcleaner.retention import attached_digest
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.tagplan import TagPlan, settle_attached
from regcleaner.view import RegistryView

log = logging.getLogger("regcleaner")

RECHECK_FAILED = Reason(ReasonKind.RECHECK_FAILED)


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
    with_digest: frozenset[str] = frozenset()
    """Going tags left to go with their digest although the remover can remove tags
    alone: through the API, signature and referrers tags, whose subject a push during
    the waves may still rescue (a DELETE by digest of their manifest takes them, and
    only if it happens)."""

    def __post_init__(self) -> None:
        self.reasons = {d.digest: str(d.reason) for d in self.plan.delete}

    @property
    def going_tags(self) -> Mapping[str, str]:
        """The tags the plan counted as absent (for the push watch)."""
        return self.tag_plan.going


class TagRemovalRun(RunState, Protocol):
    """What removing a repository's going tags needs of the run (the engine)."""

    remover: Remover
    view: RegistryView
    policy: Policy
    clock: Callable[[], float]


def keep_all(job: RepositoryJob, decisions: list[Decision], reason: Reason) -> None:
    """Record every one of ``decisions`` as kept, for ``reason``."""
    for decision in decisions:
        job.record.kept[decision.digest] = str(reason)


async def remove_going_tags(
    run: TagRemovalRun, job: RepositoryJob, waves: tuple[tuple[Decision, ...], ...]
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
    if run.remover.watches_pushes:  # see RepositoryJob.with_digest
        job.with_digest = frozenset(t for t in going if attached_digest(t) is not None)
        going = {t: why for t, why in going.items() if t not in job.with_digest}
    signatures = {
        tag: signed for tag in going
        if (signed := attached_digest(tag)) is not None and signed in snapshot.revisions
    }  # fmt: skip
    job.tag_outcomes = {}
    stayed: dict[str, str] = {}
    kept: dict[Digest, Reason] = {}
    live: frozenset[str] = frozenset()
    for batch in (sorted(set(going) - signatures.keys()), sorted(signatures)):
        batch = [tag for tag in batch if tag not in live]
        if not batch:
            continue
        stop = stop_reason(run)
        if stop is not None:  # the rest stays, reported not-attempted
            keep_all(job, list(job.plan.delete), stop)
            return None
        try:
            found = await run.remover.remove_tags(
                name, snapshot, [(tag, snapshot.tags[tag]) for tag in batch]
            )
        except StorageError as exc:
            job.record.error = f"removing tags failed: {exc}"
            log.error("repository %s: %s; nothing else in it is deleted", name,
                      job.record.error)  # fmt: skip
            keep_all(job, list(job.plan.delete), RECHECK_FAILED)
            return None
        job.tag_outcomes.update(found)
        refused = {
            tag: why for tag, why in found.items()
            if why is not None and why != GONE_BEFORE_REMOVAL
        }  # fmt: skip
        if not refused:
            continue
        stayed.update(refused)
        replanned = await keep_for_staying_tags(run, job, stayed, signatures)
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


async def keep_for_staying_tags(
    run: TagRemovalRun, job: RepositoryJob, stayed: dict[str, str], signatures: dict[str, Digest]
) -> tuple[dict[Digest, Reason], frozenset[str]] | None:
    """The plan counted these tags as absent, but they stay (their removal was
    refused, or they moved since the plan): read where they point now, plan again
    with them present there, and keep what they reach, with the signature tags (of
    ``signatures``) of every digest kept that way. Returns what is kept and those
    signature tags; None when that cannot be known (a tag moved to a manifest the
    scan never saw): then nothing in the repository goes, and it counts as failed."""
    record = job.record
    snapshot = job.snapshot
    tags = dict(snapshot.tags)
    names = sorted(stayed)
    try:
        now: list[Digest | StorageError | None] = await run.view.tag_links(record.name, names)
    except StorageError as exc:
        now = [exc] * len(names)
    for tag, found in zip(names, now, strict=True):
        if isinstance(found, str) and found != snapshot.tags[tag]:
            if found not in snapshot.revisions:
                record.error = f"tag {tag} moved to a manifest the scan did not see: {found}"
                log.error("repository %s: %s; nothing in it is deleted", record.name,
                          record.error)  # fmt: skip
                keep_all(job, list(job.plan.delete), RECHECK_FAILED)
                return None
            tags[tag] = found  # moved since the plan: present where it is now
        else:  # refused (or unreadable, or gone since): present where it was
            record.error = record.error or f"tag {tag} could not be removed: {stayed[tag]}"
    fresh = dataclasses.replace(snapshot, tags=tags)
    absent = set(job.tag_plan.going) - stayed.keys()
    now_s = run.clock()

    def replan(live: frozenset[str]) -> tuple[RepositoryPlan, dict[Digest, Reason]]:
        return narrow(list(job.plan.delete), fresh, job.manifests, run.policy, now_s,
                      ignore_tags=absent - live)  # fmt: skip

    # A signature tag comes back with its digest; its manifest may keep more.
    attached = {t: d for t, d in signatures.items() if t not in stayed}
    (plan, rescued), live = settle_attached(attached, replan, lambda found: found[0].keep)
    # Said as the plan says it (tagged:v1, child-of:...): with direct removal the
    # registry cannot write, so nothing was tagged or pushed during the run.
    kept = {digest: plan.keep.get(digest, reason) for digest, reason in rescued.items()}
    for digest, reason in kept.items():
        record.kept[digest] = str(reason)
        log.info("repository %s: keeping %s (%s: a tag stays)", record.name, digest, reason)
    return kept, live
