"""Pure: a repository's plan with tag retention and attached-artifact tags.

Expired tags count as absent for the planner; the usual rules then decide which
manifests go. An attached-artifact tag (cosign's ``sha256-<hex>.sig``, ``.att``,
``.sbom``, and the OCI 1.1 referrers tag schema ``sha256-<hex>``) lives as long as the
digest it names:

- when that digest is a revision of the same repository, the tag counts as present
  only while the plan keeps the digest; otherwise it is an orphan, treated like an
  expired tag (``settle_attached`` finds the tags that live);
- when it is not, the tag may belong to an image of another repository (cosign's
  ``COSIGN_REPOSITORY`` keeps signatures apart from images): it is an orphan only when
  the digest is a revision of no repository of the registry, which only a run that read
  the whole registry knows (``Elsewhere``); until then it is kept.

Without a policy and without ``prune_orphan_signatures``, these tags are ordinary tags,
as the registry sees them.

What happens to a tag that does not survive depends on how the plan is carried out:
through the API a tag can only go with its digest (distribution 2.8 has no DELETE by
tag, and a DELETE by digest removes every tag on it), so a digest is deleted only when
every tag on it expired and nothing kept needs it, and an expired tag whose digest stays
stays too, with the reason; directly in storage the tag's own folder is removed, and
sibling tags are untouched.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Collection, Container, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple, TypeVar

from regcleaner.digest import Digest
from regcleaner.keyset import blob_key
from regcleaner.manifests import ManifestInfo
from regcleaner.planner import Policy, Reason, RepositoryPlan, plan_repository
from regcleaner.retention import RepositoryPolicy, RepositoryPulls, attached_digest, decide_tags
from regcleaner.snapshots import RepositorySnapshot

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """What the run knows about the other repositories of the registry: the keys
    (``keyset.blob_key``, 8 bytes a revision: two digests sharing a key can only make an
    orphan look alive, the safe side) of every revision that stays in any of them, or
    None with why that is not known (the registry not read yet, or only part of it
    read)."""

    revisions: Container[int] | None = None
    unknown: str = "the other repositories are not read yet"

    def holds(self, digest: Digest) -> bool | None:
        """True if ``digest`` stays a revision of some repository, False if of none,
        None if the run cannot know."""
        if self.revisions is None:
            return None
        return blob_key(digest) in self.revisions


NOT_KNOWN_ELSEWHERE = Elsewhere()


class RegistryRevisions:
    """The revisions that stay in the registry, gathered as a run finishes its
    repositories, to decide at its end the attached tags whose digest is not a revision
    of their own repository. Memory: 8 bytes a revision (an ``array`` of keys), plus a
    set of the keys those tags name."""

    def __init__(self) -> None:
        self._keys = array("q")
        self._wanted: set[int] = set()
        self._unknown: str | None = None

    def add(self, digests: Iterable[Digest]) -> None:
        """These revisions stay (or may stay) in some repository."""
        self._keys.extend(blob_key(digest) for digest in digests)

    def want(self, digests: Iterable[Digest]) -> None:
        """Digests that undecided attached tags name: the only keys ``elsewhere`` keeps."""
        self._wanted.update(blob_key(digest) for digest in digests)

    def unknown(self, repository: str) -> None:
        """A repository whose revisions the run could not read: nothing can be called
        a revision of no repository."""
        if self._unknown is None:
            self._unknown = repository

    def elsewhere(self) -> Elsewhere:
        """What the run knows, once every repository was read."""
        if self._unknown is not None:
            return Elsewhere(None, f"repository {self._unknown} could not be read, so "
                             "whether it belongs to an image there is not known")  # fmt: skip
        wanted = self._wanted
        return Elsewhere(frozenset(key for key in self._keys if key in wanted))


@dataclass(frozen=True, slots=True)
class TagPlan:
    """Every tag's fate before carrying out: kept (with reason) or going."""

    kept: Mapping[str, str] = field(default_factory=dict)
    going: Mapping[str, str] = field(default_factory=dict)
    """Expired or orphaned tags, with why (they may still stay: see ``stays``)."""
    undecided: Mapping[str, Digest] = field(default_factory=dict)
    """Attached tags kept because the digest they name is not a revision of this
    repository and the run cannot know yet whether it is one of another (a subset of
    ``kept``): a run that reads the whole registry decides them at its end."""

    @property
    def ignored(self) -> frozenset[str]:
        """The tags the planner treats as absent."""
        return frozenset(self.going)


def settle_attached(
    attached: Mapping[str, Digest],
    plan_with: Callable[[frozenset[str]], T],
    kept: Callable[[T], Container[Digest]],
) -> tuple[T, frozenset[str]]:
    """The attached tags that live, and the plan made with them: ``plan_with(live)``
    plans with every tag of ``attached`` absent except ``live``; a tag lives when that
    plan keeps the digest it names. An attached tag's manifest, once kept, can keep
    another named digest, so plan again until no more tags come to life (the least
    fixpoint: it starts with none, and each round only adds)."""
    live: frozenset[str] = frozenset()
    while True:
        result = plan_with(live)
        keeps = kept(result)
        now_live = frozenset(tag for tag, digest in attached.items() if digest in keeps)
        if now_live <= live:
            return result, live
        live |= now_live


def plan_with_tags(
    snapshot: RepositorySnapshot,
    manifests: Mapping[Digest, ManifestInfo],
    policy: Policy,
    now: float,
    *,
    tag_policy: RepositoryPolicy | None,
    prune_orphan_signatures: bool,
    pinned: Mapping[Digest, Reason] | None = None,
    elsewhere: Elsewhere = NOT_KNOWN_ELSEWHERE,
    pulls: RepositoryPulls | None = None,
) -> tuple[RepositoryPlan, TagPlan]:
    """The repository's plan, and what happens to its tags. ``pulls``: what the pull
    record says about this repository, for ``pulled_within`` rules (None: no record, and
    no tag expires on pull grounds)."""
    if tag_policy is None and not prune_orphan_signatures:
        plan = plan_repository(snapshot, manifests, policy, now, pinned=pinned)
        return plan, TagPlan({t: "no-policy" for t in snapshot.tags}, {})
    times = {t: snapshot.tag_times.get(t, now) for t in snapshot.tags}
    verdicts = decide_tags(tag_policy, times, now, tag_digests=snapshot.tags, pulls=pulls)
    expired = {t: v.reason for t, v in verdicts.items() if not v.keep}
    attached = {t: d for t in snapshot.tags if (d := attached_digest(t)) is not None}
    here = {t: d for t, d in attached.items() if d in snapshot.revisions}
    kept = {t: v.reason for t, v in verdicts.items() if v.keep}
    going = dict(expired)
    undecided: dict[str, Digest] = {}
    for tag, digest in attached.items():
        if tag in here:
            continue
        found = elsewhere.holds(digest)
        if found is None:
            kept[tag] = f"signature-of-unknown:{digest}: {elsewhere.unknown}"
            undecided[tag] = digest
        elif found:
            kept[tag] = f"signature-of-elsewhere:{digest}"
        else:
            going[tag] = f"orphan-signature:{digest}-gone"
    absent = frozenset(going)
    # An attached tag's manifest goes after the digest it names, and stays if that stays.
    order = [(digest, snapshot.tags[tag]) for tag, digest in here.items()]

    def plan_with(live: frozenset[str]) -> RepositoryPlan:
        return plan_repository(snapshot, manifests, policy, now, pinned=pinned,
                               ignore_tags=absent | (here.keys() - live), order=order)  # fmt: skip

    plan, live = settle_attached(here, plan_with, lambda plan: plan.keep)
    kept.update({t: f"signature-of-kept:{here[t]}" for t in live})
    for tag, digest in here.items():
        if tag not in live:
            going[tag] = f"orphan-signature:{digest}-deleted"
    return plan, TagPlan(kept, going, undecided)


class StayKind(Enum):
    """Why a tag that was to go stays after the run. The value is how reports spell it."""

    SHARES_DIGEST = "shares-digest-with"
    DIGEST_IN_USE = "digest-in-use"
    DIGEST_NOT_A_REVISION = "digest-not-a-revision"
    DIGEST_NOT_DELETED = "digest-not-deleted"
    MOVED_DURING_RUN = "moved-during-run"
    PUSHED_AGAIN_DURING_RUN = "pushed-again-during-run"
    UNREADABLE_AFTER_RUN = "cannot re-read the tag"


class TagStay(NamedTuple):
    """A typed reason for a tag that stays: ``shares-digest-with:latest``."""

    kind: StayKind
    detail: str = ""

    def __str__(self) -> str:
        if not self.detail:
            return self.kind.value
        separator = ": " if self.kind is StayKind.UNREADABLE_AFTER_RUN else ":"
        return f"{self.kind.value}{separator}{self.detail}"


def stays(
    tag: str,
    snapshot: RepositorySnapshot,
    tag_plan: TagPlan,
    plan: RepositoryPlan,
    deleted: Collection[Digest],
) -> TagStay | None:
    """Through the API, why a going tag stays after the run (None: it went with its
    digest): another surviving tag shares its digest, or the digest is in use."""
    digest = snapshot.tags[tag]
    if digest in deleted:
        return None
    sharing = sorted(t for t, d in snapshot.tags.items() if d == digest and t in tag_plan.kept)
    if sharing:
        return TagStay(StayKind.SHARES_DIGEST, sharing[0])
    reason = plan.keep.get(digest)
    if reason is not None:
        return TagStay(StayKind.DIGEST_IN_USE, str(reason))
    if digest not in snapshot.revisions:
        return TagStay(StayKind.DIGEST_NOT_A_REVISION)
    return TagStay(StayKind.DIGEST_NOT_DELETED)


_NOT_DELETED = frozenset({StayKind.DIGEST_NOT_A_REVISION, StayKind.DIGEST_NOT_DELETED})


def settle_tags(
    snapshot: RepositorySnapshot,
    tag_plan: TagPlan,
    plan: RepositoryPlan,
    *,
    deleted: Collection[Digest],
    kept: Mapping[Digest, str],
    alone: Mapping[str, str | None],
    removes_tags: bool,
    after: Mapping[str, Digest | Exception | None],
    with_digest: Collection[str] = frozenset(),
) -> tuple[list[tuple[str, Digest, str]], list[tuple[str, Digest, str, str]]]:
    """Where each tag that was to go ended up, once the repository's deletions are
    done: ``(tag, digest, why)`` for each removed (alone, or with its digest), and
    ``(tag, digest, why, why it stays)`` for each that stays. ``deleted``: the digests
    deleted (or that would be); ``kept``: the manifests kept, with the reason;
    ``alone``: the tags a remover removed alone (None) or not (why); ``after``: through
    the API, where going tags whose digest was deleted point after the run;
    ``with_digest``: tags left to go with their digest where tags could go alone."""
    removed: list[tuple[str, Digest, str]] = []
    staying: list[tuple[str, Digest, str, str]] = []
    for tag, why in sorted(tag_plan.going.items()):
        digest = snapshot.tags[tag]
        if tag in alone:
            outcome = alone[tag]
            if outcome is None:
                removed.append((tag, digest, why))
            else:
                staying.append((tag, digest, why, outcome))
            continue
        if removes_tags and tag not in with_digest:  # not attempted (a stop, a failure)
            staying.append((tag, digest, why, "not-attempted"))
            continue
        stay = stays(tag, snapshot, tag_plan, plan, deleted)
        if stay is None and tag in after:
            stay = _tag_after_run(after[tag], digest)
        if stay is None:
            removed.append((tag, digest, f"{why}; with its digest"))
            continue
        if digest in kept and stay.kind in _NOT_DELETED:
            stay = TagStay(StayKind.DIGEST_IN_USE, kept[digest])
        staying.append((tag, digest, why, str(stay)))
    return removed, staying


def _tag_after_run(now: Digest | Exception | None, planned: Digest) -> TagStay | None:
    """Why a tag whose digest this run deleted still stays (None: it went with it)."""
    if now is None:
        return None
    if isinstance(now, Exception):
        return TagStay(StayKind.UNREADABLE_AFTER_RUN, str(now))
    if now != planned:
        return TagStay(StayKind.MOVED_DURING_RUN, now)
    return TagStay(StayKind.PUSHED_AGAIN_DURING_RUN, now)
