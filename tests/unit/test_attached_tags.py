"""Attached-artifact tags (signatures, the OCI 1.1 referrers tag schema) whose digest
is not a revision of their own repository, and the fixpoint that decides which attached
tags live: ``tagplan.Elsewhere``, ``RegistryRevisions``, ``settle_attached``."""

from __future__ import annotations

from regcleaner.digest import Digest
from regcleaner.keyset import blob_key
from regcleaner.manifests import ManifestInfo
from regcleaner.planner import Policy
from regcleaner.tagplan import (
    Elsewhere,
    RegistryRevisions,
    StayKind,
    TagStay,
    plan_with_tags,
    settle_attached,
)
from tests.unit.test_retention import NOW, image, one_policy, sig, snapshot


def d(n: int) -> Digest:
    """A digest whose first 16 hex digits (its ``blob_key``) differ from d(m)'s."""
    return Digest("sha256:" + f"{n:016x}" * 4)


def deletions_and_tags(elsewhere: Elsewhere) -> tuple[set[Digest], dict[str, str], set[str]]:
    """A signature repository: one signature of a digest of another repository, one
    referrers index of it, and an ordinary image."""
    signed = d(1)
    signature, referrers, app = d(11), d(12), d(13)
    manifests: dict[Digest, ManifestInfo] = {signature: image(), referrers: image(), app: image()}
    tags = {sig(signed): signature, sig(signed, ""): referrers, "v1": app}
    plan, tag_plan = plan_with_tags(snapshot(manifests, tags), manifests, Policy(), NOW,
                                    tag_policy=one_policy({"tags": ["^v"]}),
                                    prune_orphan_signatures=False, elsewhere=elsewhere)  # fmt: skip
    deleted = {decision.digest for decision in plan.delete}
    return deleted, dict(tag_plan.kept), set(tag_plan.undecided)


def test_attached_tags_of_another_repository_are_kept_while_unknown() -> None:
    deleted, kept, undecided = deletions_and_tags(Elsewhere(None, "not read yet"))
    assert deleted == set()
    assert undecided == {sig(d(1)), sig(d(1), "")}
    assert kept[sig(d(1))] == f"signature-of-unknown:{d(1)}: not read yet"


def test_attached_tags_of_a_revision_elsewhere_are_kept() -> None:
    deleted, kept, undecided = deletions_and_tags(Elsewhere(frozenset({blob_key(d(1))})))
    assert (deleted, undecided) == (set(), set())
    assert kept[sig(d(1), "")] == f"signature-of-elsewhere:{d(1)}"


def test_attached_tags_of_a_digest_no_repository_has_go() -> None:
    deleted, kept, undecided = deletions_and_tags(Elsewhere(frozenset({blob_key(d(2))})))
    assert deleted == {d(11), d(12)}
    assert set(kept) == {"v1"}
    assert undecided == set()


def test_registry_revisions_know_only_after_every_repository_was_read() -> None:
    revisions = RegistryRevisions()
    revisions.add([d(1), d(2)])
    revisions.want([d(2), d(3)])
    known = revisions.elsewhere()
    assert (known.holds(d(2)), known.holds(d(3))) == (True, False)
    assert known.holds(d(1)) is False, "only the wanted keys are kept"
    revisions.unknown("broken")
    unknown = revisions.elsewhere()
    assert unknown.holds(d(3)) is None
    assert "broken" in unknown.unknown


def test_blob_keys_fit_a_signed_64_bit_array() -> None:
    for digest in (d(0), Digest("sha256:" + "f" * 64), Digest("sha512:" + "0" * 128)):
        assert -(1 << 63) <= blob_key(digest) < 1 << 63


def test_settle_attached_is_the_least_fixpoint() -> None:
    """A chain: tag a names x (kept by an ordinary tag), whose presence keeps y, named
    by tag b, which keeps z, named by tag c; tag e names w, which nothing keeps."""
    attached = {"a": d(1), "b": d(2), "c": d(3), "e": d(9)}
    keeps = {frozenset(): {d(1)}, frozenset({"a"}): {d(1), d(2)},
             frozenset({"a", "b"}): {d(1), d(2), d(3)}}  # fmt: skip
    calls: list[frozenset[str]] = []

    def plan_with(live: frozenset[str]) -> set[Digest]:
        calls.append(live)
        return keeps.get(live, {d(1), d(2), d(3)})

    result, live = settle_attached(attached, plan_with, lambda kept: kept)
    assert live == {"a", "b", "c"}
    assert result == {d(1), d(2), d(3)}
    assert calls == [frozenset(), {"a"}, {"a", "b"}, {"a", "b", "c"}]


def test_tag_stays_are_spelled_as_before() -> None:
    assert str(TagStay(StayKind.SHARES_DIGEST, "latest")) == "shares-digest-with:latest"
    assert str(TagStay(StayKind.DIGEST_NOT_DELETED)) == "digest-not-deleted"
    assert str(TagStay(StayKind.UNREADABLE_AFTER_RUN, "EIO")) == "cannot re-read the tag: EIO"
