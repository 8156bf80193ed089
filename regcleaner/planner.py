"""Pure: which manifests of one repository are in use, and which can be deleted.

No I/O and no clock: the caller passes the snapshot, the parsed manifests and "now".
Every decision carries a typed reason. When anything in a repository cannot be
understood (a corrupt manifest, a tag link with garbage in it, a symbolic link the
registry would follow) nothing in that repository is deleted: an unreadable index could
be protecting any manifest beside it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from regcleaner.digest import Digest
from regcleaner.manifests import ManifestInfo, ManifestRefs, Unreadable
from regcleaner.snapshots import RepositorySnapshot


class ReasonKind(Enum):
    """Why a manifest is kept or deleted. The value is how reports spell it."""

    # kept because in use
    TAGGED = "tagged"
    CHILD_OF = "child-of"
    REFERRER_OF = "referrer-of"
    YOUNG = "younger-than-grace"
    # kept because of doubt
    UNREADABLE = "unreadable"
    BLOCKED = "blocked"
    # kept at the last moment, while carrying out the plan
    TAGGED_DURING_RUN = "tagged-during-run"
    PUSHED_DURING_RUN = "pushed-during-run"
    PARENT_NOT_DELETED = "parent-not-deleted"
    RECHECK_FAILED = "recheck-failed"
    STOPPED = "stopped-before-delete"
    """A remover's answer for a deletion it did not send because the run stopped; the
    engine reports it as ``RUN_STOPPED`` (not attempted)."""
    NOT_ATTEMPTED = "not-attempted"
    # gone before its deletion
    GONE = "gone-before-delete"
    # deleted
    UNTAGGED = "untagged"
    CHILD_OF_DELETED = "child-of-deleted"
    REFERRER_OF_DELETED = "referrer-of-deleted"


class Reason(NamedTuple):
    """A reason kind with its detail: ``tagged:v1``, ``child-of:sha256:...``. (A named
    tuple: one is made per manifest planned, and a frozen dataclass costs more.)"""

    kind: ReasonKind
    detail: str = ""

    def __str__(self) -> str:
        spelled = _SPELLING[self.kind]  # an Enum's .value is a property: slow on hot paths
        return f"{spelled}:{self.detail}" if self.detail else spelled


_SPELLING = {kind: kind.value for kind in ReasonKind}
UNTAGGED = Reason(ReasonKind.UNTAGGED)
YOUNG = Reason(ReasonKind.YOUNG)
GONE = Reason(ReasonKind.GONE)
TAGGED_DURING_RUN = Reason(ReasonKind.TAGGED_DURING_RUN)
PUSHED_DURING_RUN = Reason(ReasonKind.PUSHED_DURING_RUN)
RUN_STOPPED = Reason(ReasonKind.NOT_ATTEMPTED, "run stopped")
"""A planned deletion a stop prevented: not attempted, not kept for a reason."""
DOUBT_KINDS = frozenset({ReasonKind.UNREADABLE, ReasonKind.BLOCKED})


@dataclass(frozen=True, slots=True)
class Policy:
    """What the operator asked to keep beyond what is in use."""

    min_age_s: float = 0.0


class Decision(NamedTuple):
    """One digest to delete, and why."""

    digest: Digest
    reason: Reason


@dataclass(frozen=True, slots=True)
class RepositoryPlan:
    """The outcome of planning one repository."""

    repository: str
    keep: Mapping[Digest, Reason]
    """Every revision kept, with the first reason found for keeping it."""
    waves: tuple[tuple[Decision, ...], ...]
    """Deletions in order: whatever needs another manifest to survive goes after it. An
    index goes before its children (a run stopped half-way never leaves a surviving
    index with missing children), a subject before its referrers and a signed digest
    before the manifest of its signature tag (a subject kept at the last moment, tagged
    during the run or not deleted, keeps its SBOMs and signatures)."""
    tagged: frozenset[Digest]
    warnings: tuple[str, ...] = ()
    dependents: Mapping[Digest, tuple[Digest, ...]] = field(default_factory=dict)
    """For each manifest to delete, those of later waves that must stay if it stays."""

    @property
    def delete(self) -> tuple[Decision, ...]:
        """All deletions, wave by wave."""
        return tuple(decision for wave in self.waves for decision in wave)

    @property
    def blocked(self) -> bool:
        """True if doubt kept every candidate of the repository."""
        return any(reason.kind is ReasonKind.BLOCKED for reason in self.keep.values())


def needed_manifests(snapshot: RepositorySnapshot) -> set[Digest]:
    """Digests whose manifest JSON the planner needs: every revision and tag target."""
    return set(snapshot.revisions) | set(snapshot.tags.values())


def plan_repository(
    snapshot: RepositorySnapshot,
    manifests: Mapping[Digest, ManifestInfo],
    policy: Policy,
    now: float,
    *,
    pinned: Mapping[Digest, Reason] | None = None,
    ignore_tags: Collection[str] = (),
    order: Iterable[tuple[Digest, Digest]] = (),
) -> RepositoryPlan:
    """Decide, for every revision of ``snapshot``, keep (with reason) or delete.

    ``pinned`` manifests are kept like tagged ones, with the reason given (a re-plan
    during the run pins what was pushed since the scan). Tags in ``ignore_tags``
    (expired by a retention policy, orphaned signatures) count as absent. ``order``
    adds pairs (first, then) to the deletion order: ``then`` goes after ``first``, and
    stays if ``first`` stays.
    """
    reasons: dict[Digest, Reason] = {}
    pending: deque[Digest] = deque()
    warnings: list[str] = []

    def keep(digest: Digest, reason: Reason) -> None:
        if digest not in reasons:
            reasons[digest] = reason
            pending.append(digest)

    for tag in sorted(snapshot.tags):
        if tag not in ignore_tags:
            keep(snapshot.tags[tag], Reason(ReasonKind.TAGGED, tag))
    for digest, reason in sorted((pinned or {}).items()):
        keep(digest, reason)
    tagged = frozenset(
        d for t, d in snapshot.tags.items() if d in snapshot.revisions and t not in ignore_tags
    )

    if policy.min_age_s > 0:
        for digest, mtime in snapshot.revisions.items():
            if now - mtime < policy.min_age_s:
                keep(digest, YOUNG)

    referrers: dict[Digest, list[Digest]] = {}
    for digest, info in manifests.items():
        if isinstance(info, ManifestRefs) and info.subject is not None:
            referrers.setdefault(info.subject, []).append(digest)

    while pending:
        digest = pending.popleft()
        refs = manifests.get(digest)
        if isinstance(refs, ManifestRefs):
            for child in refs.children:
                keep(child, Reason(ReasonKind.CHILD_OF, digest))
        for referrer in sorted(referrers.get(digest, ())):
            keep(referrer, Reason(ReasonKind.REFERRER_OF, digest))

    blockers: list[str] = []
    for where, problem in sorted(snapshot.doubts.items()):
        warnings.append(f"{where}: {problem}")
        blockers.append(where)
    for tag, problem in sorted(snapshot.broken_tags.items()):
        warnings.append(f"tag {tag!r}: {problem}")
        blockers.append(f"tag:{tag}")
    for digest in sorted(snapshot.revisions.keys() | snapshot.tags.values()):
        found = manifests.get(digest, Unreadable("manifest not read"))
        if isinstance(found, Unreadable):
            if digest in snapshot.revisions:
                reasons.setdefault(digest, Reason(ReasonKind.UNREADABLE, found.problem))
            warnings.append(f"manifest {digest}: {found.problem}")
            blockers.append(digest)

    candidates = [d for d in snapshot.revisions if d not in reasons]
    if blockers:
        blocked_reason = Reason(ReasonKind.BLOCKED, blockers[0])
        for digest in candidates:
            reasons[digest] = blocked_reason
        candidates = []

    kept = {d: r for d, r in reasons.items() if d in snapshot.revisions}
    waves, dependents = _deletion_waves(sorted(candidates), manifests, order)
    return RepositoryPlan(snapshot.name, kept, waves, tagged, tuple(warnings), dependents)


def _deletion_waves(
    candidates: Iterable[Digest],
    manifests: Mapping[Digest, ManifestInfo],
    order: Iterable[tuple[Digest, Digest]] = (),
) -> tuple[tuple[tuple[Decision, ...], ...], dict[Digest, tuple[Digest, ...]]]:
    """Order candidates so that what needs another to survive goes after it (an index's
    children after it, a subject's referrers after it, and the pairs of ``order``), and
    name each deletion's cause: untagged, or the deleted index or subject. Also return,
    for each candidate, the candidates that go after it because of it.

    Index-to-child edges can form no cycle (content addressing), but a subject or an
    ``order`` pair can close one (an index whose subject is its own child): the edges of
    that kind between manifests caught in a cycle are then dropped, never a child edge.
    """
    members = list(candidates)
    member_set = set(members)
    cause: dict[Digest, Reason] = {}
    hard: list[tuple[Digest, Digest]] = []
    soft: list[tuple[Digest, Digest]] = []
    for digest in members:
        info = manifests.get(digest)
        if not isinstance(info, ManifestRefs):
            continue
        for child in info.children:
            if child in member_set and child != digest:
                cause.setdefault(child, Reason(ReasonKind.CHILD_OF_DELETED, digest))
                hard.append((digest, child))
        if info.subject is not None and info.subject in member_set:
            cause.setdefault(digest, Reason(ReasonKind.REFERRER_OF_DELETED, info.subject))
            soft.append((info.subject, digest))
    soft += [(a, b) for a, b in order if a in member_set and b in member_set]

    layers, targets, stuck = _layers(members, hard + soft)
    if stuck:
        caught = set(stuck)
        kept_soft = [(a, b) for a, b in soft if not (a in caught and b in caught)]
        layers, targets, stuck = _layers(members, hard + kept_soft)
        if stuck:  # cannot happen with content addressing; be safe
            layers.append(stuck)
    waves = tuple(tuple(Decision(d, cause.get(d, UNTAGGED)) for d in layer) for layer in layers)
    return waves, {d: tuple(t) for d, t in targets.items() if t}


def _layers(
    members: list[Digest], pairs: Iterable[tuple[Digest, Digest]]
) -> tuple[list[list[Digest]], dict[Digest, list[Digest]], list[Digest]]:
    """Kahn's layering of ``members`` by ``pairs`` (first, then); the members left over
    (in or after a cycle) come last."""
    targets: dict[Digest, list[Digest]] = {d: [] for d in members}
    indegree: dict[Digest, int] = dict.fromkeys(members, 0)
    for first, then in dict.fromkeys(pairs):
        if first != then:
            targets[first].append(then)
            indegree[then] += 1
    layers: list[list[Digest]] = []
    current = [d for d in members if indegree[d] == 0]
    placed = 0
    while current:
        layers.append(current)
        placed += len(current)
        following: list[Digest] = []
        for digest in current:
            for target in targets[digest]:
                indegree[target] -= 1
                if indegree[target] == 0:
                    following.append(target)
        current = sorted(following)
    stuck = [d for d in members if indegree[d] > 0] if placed != len(members) else []
    return layers, targets, stuck


_ROOT_KINDS = {
    ReasonKind.TAGGED: ReasonKind.TAGGED_DURING_RUN,
    ReasonKind.YOUNG: ReasonKind.PUSHED_DURING_RUN,
    ReasonKind.PUSHED_DURING_RUN: ReasonKind.PUSHED_DURING_RUN,
}
_CHAIN_KINDS = frozenset({ReasonKind.CHILD_OF, ReasonKind.REFERRER_OF})


def rescue_reason(
    digest: Digest, fresh: RepositoryPlan, fresh_snapshot: RepositorySnapshot
) -> Reason:
    """Why a fresh plan no longer deletes ``digest`` that an earlier plan deleted:
    gone, a doubt, or kept because of a tag or a push that came during the run (found
    by following the chain of reasons to its root; the detail is the direct reason)."""
    if digest not in fresh_snapshot.revisions:
        return GONE
    direct = fresh.keep.get(digest)
    if direct is None:
        return TAGGED_DURING_RUN
    if direct.kind in DOUBT_KINDS:
        return direct
    reason, seen = direct, {digest}
    while reason.kind in _CHAIN_KINDS:
        parent = Digest(reason.detail)
        found = fresh.keep.get(parent)
        if found is None or parent in seen:
            break
        seen.add(parent)
        reason = found
    kind = _ROOT_KINDS.get(reason.kind, ReasonKind.TAGGED_DURING_RUN)
    detail = "" if direct.kind in (ReasonKind.YOUNG, ReasonKind.PUSHED_DURING_RUN) else str(direct)
    return Reason(kind, detail)


def narrow(
    remaining: Sequence[Decision],
    fresh_snapshot: RepositorySnapshot,
    manifests: Mapping[Digest, ManifestInfo],
    policy: Policy,
    now: float,
    *,
    scanned: Mapping[Digest, float] | None = None,
    ignore_tags: Collection[str] = (),
) -> tuple[RepositoryPlan, dict[Digest, Reason]]:
    """Re-plan on a fresh snapshot; of ``remaining``, return what the fresh plan no
    longer deletes, with the reason. The check can never add a deletion: only digests
    that both plans delete stay. ``manifests`` must cover the fresh snapshot.

    With ``scanned`` (the revisions and mtimes the first plan saw), every revision new
    or rewritten since is pinned as pushed during the run, whatever its age: a push in
    progress (children first, then the index) keeps what it needs.
    """
    pinned: dict[Digest, Reason] = {}
    if scanned is not None:
        pinned = {
            digest: PUSHED_DURING_RUN
            for digest, mtime in fresh_snapshot.revisions.items()
            if scanned.get(digest) != mtime
        }
    fresh = plan_repository(
        fresh_snapshot, manifests, policy, now, pinned=pinned, ignore_tags=ignore_tags
    )
    fresh_delete = {d.digest for d in fresh.delete}
    rescued = {
        decision.digest: rescue_reason(decision.digest, fresh, fresh_snapshot)
        for decision in remaining
        if decision.digest not in fresh_delete
    }
    return fresh, rescued


def without(
    waves: Sequence[Sequence[Decision]], dropped: Mapping[Digest, object]
) -> tuple[tuple[Decision, ...], ...]:
    """The waves minus the dropped digests (empty waves removed)."""
    return tuple(
        kept for wave in waves if (kept := tuple(d for d in wave if d.digest not in dropped))
    )
