"""Pure: which manifests of one repository are in use, and which can be deleted.

No I/O and no clock: the caller passes the snapshot, the parsed manifests and "now".
Every decision carries a reason. When anything in a repository cannot be understood
(a corrupt manifest, a tag link with garbage in it) nothing in that repository is
deleted: an unreadable index could be protecting any manifest beside it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from regcleaner.digest import Digest
from regcleaner.manifests import ManifestRefs

REASON_UNTAGGED = "untagged"
REASON_YOUNG = "younger-than-grace"
REASON_TAGGED_DURING_RUN = "tagged-during-run"
REASON_PUSHED_DURING_RUN = "pushed-during-run"
REASON_GONE = "gone-before-delete"


@dataclass(frozen=True, slots=True)
class RepositorySnapshot:
    """What storage says about one repository at one moment."""

    name: str
    revisions: Mapping[Digest, float]
    """Every manifest of the repository, with its revision link's mtime (epoch seconds)."""
    tags: Mapping[str, Digest]
    """Each tag's ``current/link`` digest."""
    broken_tags: Mapping[str, str] = field(default_factory=dict)
    """Tags whose current link could not be read or parsed, with the problem."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A manifest whose bytes could not be read or understood."""

    problem: str


ManifestInfo = ManifestRefs | Unreadable


@dataclass(frozen=True, slots=True)
class Policy:
    """What the operator asked to keep beyond what is in use."""

    min_age_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """One digest and why it is deleted or kept."""

    digest: Digest
    reason: str


@dataclass(frozen=True, slots=True)
class RepositoryPlan:
    """The outcome of planning one repository."""

    repository: str
    keep: Mapping[Digest, str]
    """Every revision kept, with the first reason found for keeping it."""
    waves: tuple[tuple[Decision, ...], ...]
    """Deletions in order: a wave's manifests are referenced by no manifest of a later
    wave, so indexes and referrers go before what they point at, and a run stopped
    half-way never leaves a surviving index with missing children."""
    tagged: frozenset[Digest]
    warnings: tuple[str, ...] = ()

    @property
    def delete(self) -> tuple[Decision, ...]:
        """All deletions, wave by wave."""
        return tuple(decision for wave in self.waves for decision in wave)

    @property
    def blocked(self) -> bool:
        """True if uncertainty kept every candidate of the repository."""
        return any(reason.startswith("blocked:") for reason in self.keep.values())


def needed_manifests(snapshot: RepositorySnapshot) -> set[Digest]:
    """Digests whose manifest JSON the planner needs: every revision and tag target."""
    return set(snapshot.revisions) | set(snapshot.tags.values())


def plan_repository(
    snapshot: RepositorySnapshot,
    manifests: Mapping[Digest, ManifestInfo],
    policy: Policy,
    now: float,
) -> RepositoryPlan:
    """Decide, for every revision of ``snapshot``, keep (with reason) or delete."""
    reasons: dict[Digest, str] = {}
    pending: deque[Digest] = deque()
    warnings: list[str] = []

    def keep(digest: Digest, reason: str) -> None:
        if digest not in reasons:
            reasons[digest] = reason
            pending.append(digest)

    for tag in sorted(snapshot.tags):
        keep(snapshot.tags[tag], f"tagged:{tag}")
    tagged = frozenset(d for d in snapshot.tags.values() if d in snapshot.revisions)

    if policy.min_age_s > 0:
        for digest, mtime in snapshot.revisions.items():
            if now - mtime < policy.min_age_s:
                keep(digest, REASON_YOUNG)

    referrers: dict[Digest, list[Digest]] = {}
    for digest, info in manifests.items():
        if isinstance(info, ManifestRefs) and info.subject is not None:
            referrers.setdefault(info.subject, []).append(digest)

    while pending:
        digest = pending.popleft()
        refs = manifests.get(digest)
        if isinstance(refs, ManifestRefs):
            for child in refs.children:
                keep(child, f"child-of:{digest}")
        for referrer in sorted(referrers.get(digest, ())):
            keep(referrer, f"referrer-of:{digest}")

    blockers: list[str] = []
    for tag, problem in sorted(snapshot.broken_tags.items()):
        warnings.append(f"tag {tag!r}: {problem}")
        blockers.append(f"tag:{tag}")
    for digest in sorted(snapshot.revisions.keys() | snapshot.tags.values()):
        found = manifests.get(digest, Unreadable("manifest not read"))
        if isinstance(found, Unreadable):
            if digest in snapshot.revisions:
                reasons.setdefault(digest, f"unreadable:{found.problem}")
            warnings.append(f"manifest {digest}: {found.problem}")
            blockers.append(digest)

    candidates = [d for d in snapshot.revisions if d not in reasons]
    if blockers:
        blocked_reason = f"blocked:{blockers[0]}"
        for digest in candidates:
            reasons[digest] = blocked_reason
        candidates = []

    kept = {d: r for d, r in reasons.items() if d in snapshot.revisions}
    waves = _deletion_waves(sorted(candidates), manifests)
    return RepositoryPlan(snapshot.name, kept, waves, tagged, tuple(warnings))


def _deletion_waves(
    candidates: Iterable[Digest], manifests: Mapping[Digest, ManifestInfo]
) -> tuple[tuple[Decision, ...], ...]:
    """Order candidates so that what points (index, referrer) goes before what it points at."""
    members = list(candidates)
    member_set = set(members)
    targets: dict[Digest, list[Digest]] = {d: [] for d in members}
    indegree: dict[Digest, int] = dict.fromkeys(members, 0)
    for digest in members:
        info = manifests.get(digest)
        if not isinstance(info, ManifestRefs):
            continue
        pointed = [*info.children, *([info.subject] if info.subject else [])]
        for target in dict.fromkeys(pointed):
            if target in member_set and target != digest:
                targets[digest].append(target)
                indegree[target] += 1
    waves: list[tuple[Decision, ...]] = []
    current = [d for d in members if indegree[d] == 0]
    placed = 0
    while current:
        waves.append(tuple(Decision(d, REASON_UNTAGGED) for d in current))
        placed += len(current)
        following: list[Digest] = []
        for digest in current:
            for target in targets[digest]:
                indegree[target] -= 1
                if indegree[target] == 0:
                    following.append(target)
        current = sorted(following)
    if placed != len(members):  # a cycle cannot exist with content addressing; be safe
        done = {d.digest for wave in waves for d in wave}
        waves.append(tuple(Decision(d, REASON_UNTAGGED) for d in members if d not in done))
    return tuple(waves)


def recheck_plan(
    plan: RepositoryPlan,
    fresh_snapshot: RepositorySnapshot,
    manifests: Mapping[Digest, ManifestInfo],
    policy: Policy,
    now: float,
) -> tuple[RepositoryPlan, dict[Digest, str]]:
    """Re-plan just before deleting; return the narrowed plan and what it newly keeps.

    Only digests that both the first plan and the fresh one delete are deleted:
    the check can never add a deletion. ``manifests`` must cover the fresh snapshot.
    """
    fresh = plan_repository(fresh_snapshot, manifests, policy, now)
    fresh_delete = {d.digest for d in fresh.delete}
    rescued: dict[Digest, str] = {}
    for decision in plan.delete:
        digest = decision.digest
        if digest in fresh_delete:
            continue
        fresh_reason = fresh.keep.get(digest, "")
        if digest not in fresh_snapshot.revisions:
            rescued[digest] = REASON_GONE
        elif fresh_reason.startswith(("blocked:", "unreadable:")):
            rescued[digest] = fresh_reason
        elif fresh_reason == REASON_YOUNG:
            rescued[digest] = REASON_PUSHED_DURING_RUN
        else:
            rescued[digest] = REASON_TAGGED_DURING_RUN
    if not rescued:
        return plan, rescued
    keep = dict(plan.keep)
    keep.update({d: r for d, r in rescued.items() if r != REASON_GONE})
    waves = tuple(
        kept_wave
        for wave in plan.waves
        if (kept_wave := tuple(d for d in wave if d.digest not in rescued))
    )
    warnings = plan.warnings + tuple(w for w in fresh.warnings if w not in plan.warnings)
    return RepositoryPlan(plan.repository, keep, waves, plan.tagged, warnings), rescued
