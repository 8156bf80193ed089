"""Pure: a repository's plan with tag retention and orphaned signatures.

Expired tags count as absent for the planner; the usual rules then decide which
manifests go. A cosign-style signature tag (``sha256-<hex>.sig``, ``.att``, ``.sbom``)
lives as long as the digest it signs: it counts as present only while that digest is
a revision of the repository that the plan keeps; otherwise it is an orphan, treated
like an expired tag. Without a policy and without ``prune_orphan_signatures``,
signature tags are ordinary tags, as the registry sees them.

What happens to a tag that does not survive depends on how the plan is carried out:
through the API a tag can only go with its digest (distribution 2.8 has no DELETE by
tag, and a DELETE by digest removes every tag on it), so a digest is deleted only when
every tag on it expired and nothing kept needs it, and an expired tag whose digest stays
stays too, with the reason; directly in storage the tag's own folder is removed, and
sibling tags are untouched.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from regcleaner.digest import Digest
from regcleaner.manifests import ManifestInfo
from regcleaner.model import RepositorySnapshot
from regcleaner.planner import Policy, Reason, RepositoryPlan, plan_repository
from regcleaner.retention import RepositoryPolicy, decide_tags, signed_digest


@dataclass(frozen=True, slots=True)
class TagPlan:
    """Every tag's fate before carrying out: kept (with reason) or going."""

    kept: Mapping[str, str] = field(default_factory=dict)
    going: Mapping[str, str] = field(default_factory=dict)
    """Expired or orphaned tags, with why (they may still stay: see ``stays``)."""

    @property
    def ignored(self) -> frozenset[str]:
        """The tags the planner treats as absent."""
        return frozenset(self.going)


def plan_with_tags(
    snapshot: RepositorySnapshot,
    manifests: Mapping[Digest, ManifestInfo],
    policy: Policy,
    now: float,
    *,
    tag_policy: RepositoryPolicy | None,
    prune_orphan_signatures: bool,
    pinned: Mapping[Digest, Reason] | None = None,
) -> tuple[RepositoryPlan, TagPlan]:
    """The repository's plan, and what happens to its tags."""
    if tag_policy is None and not prune_orphan_signatures:
        plan = plan_repository(snapshot, manifests, policy, now, pinned=pinned)
        return plan, TagPlan({t: "no-policy" for t in snapshot.tags}, {})
    times = {t: snapshot.tag_times.get(t, now) for t in snapshot.tags}
    verdicts = decide_tags(tag_policy, times, now)
    expired = {t: v.reason for t, v in verdicts.items() if not v.keep}
    signatures = {t: d for t in snapshot.tags if (d := signed_digest(t)) is not None}
    # A signature's manifest goes after the digest it signs, and stays if that stays.
    order = [(Digest(d), snapshot.tags[t]) for t, d in signatures.items()]
    live: set[str] = set()
    while True:  # a signature's manifest, once kept, can keep another signed digest
        ignored = set(expired) | (set(signatures) - live)
        plan = plan_repository(snapshot, manifests, policy, now, pinned=pinned,
                               ignore_tags=ignored, order=order)  # fmt: skip
        now_live = {t for t, d in signatures.items()
                    if d in snapshot.revisions and Digest(d) in plan.keep}  # fmt: skip
        if now_live == live:
            break
        live = now_live
    kept = {t: v.reason for t, v in verdicts.items() if v.keep}
    kept.update({t: f"signature-of-kept:{signatures[t]}" for t in live})
    going = dict(expired)
    for tag, digest in signatures.items():
        if tag not in live:
            where = "deleted" if digest in snapshot.revisions else "gone"
            going[tag] = f"orphan-signature:{digest}-{where}"
    return plan, TagPlan(kept, going)


def stays(
    tag: str,
    snapshot: RepositorySnapshot,
    tag_plan: TagPlan,
    plan: RepositoryPlan,
    deleted: Collection[Digest],
) -> str | None:
    """Through the API, why a going tag stays after the run (None: it went with its
    digest): another surviving tag shares its digest, or the digest is in use."""
    digest = snapshot.tags[tag]
    if digest in deleted:
        return None
    sharing = sorted(t for t, d in snapshot.tags.items() if d == digest and t in tag_plan.kept)
    if sharing:
        return f"shares-digest-with:{sharing[0]}"
    reason = plan.keep.get(digest)
    if reason is not None:
        return f"digest-in-use:{reason}"
    if digest not in snapshot.revisions:
        return "digest-not-a-revision"
    return "digest-not-deleted"
