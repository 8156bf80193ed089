"""The planner against a naive reference model, over randomly generated repositories."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner import mediatypes
from regcleaner.digest import Digest
from regcleaner.manifests import ManifestInfo, ManifestKind, ManifestRefs, Unreadable
from regcleaner.planner import (
    GONE,
    PUSHED_DURING_RUN,
    Policy,
    Reason,
    ReasonKind,
    narrow,
    plan_repository,
)
from regcleaner.snapshots import RepositorySnapshot

NOW = 1_000_000.0


def d(n: int) -> Digest:
    return Digest("sha256:" + f"{n:064x}")


def image(subject: Digest | None = None) -> ManifestRefs:
    return ManifestRefs(ManifestKind.IMAGE, mediatypes.OCI_MANIFEST, (), subject)


def index(*children: Digest, subject: Digest | None = None) -> ManifestRefs:
    return ManifestRefs(ManifestKind.INDEX, mediatypes.OCI_INDEX, children, subject)


@dataclass
class Repo:
    snapshot: RepositorySnapshot
    manifests: dict[Digest, ManifestInfo]


@st.composite
def repositories(draw: st.DrawFn, allow_unreadable: bool = False) -> Repo:
    """A random DAG of images, indexes (nested) and referrers, with tags and ages."""
    count = draw(st.integers(1, 25))
    manifests: dict[Digest, ManifestInfo] = {}
    revisions: dict[Digest, float] = {}
    for n in range(count):
        digest = d(n + 1)
        earlier = [d(i + 1) for i in range(n)]
        kind = draw(st.sampled_from(["image", "index", "referrer"] if earlier else ["image"]))
        if kind == "index":
            children = tuple(draw(st.lists(st.sampled_from(earlier), max_size=4, unique=True)))
            manifests[digest] = index(*children)
        elif kind == "referrer":
            manifests[digest] = image(subject=draw(st.sampled_from(earlier)))
        else:
            manifests[digest] = image()
        if allow_unreadable and draw(st.integers(0, 30)) == 0:
            manifests[digest] = Unreadable("corrupt")
        revisions[digest] = NOW - draw(st.sampled_from([0, 10, 100, 10_000]))
    # Some references point outside the repository (other repositories, deleted).
    tags = {
        f"t{i}": draw(st.sampled_from(sorted(revisions))) for i in range(draw(st.integers(0, 4)))
    }
    snapshot = RepositorySnapshot("repo", revisions, tags)
    return Repo(snapshot, manifests)


def _children(repo: Repo, digest: Digest) -> tuple[Digest, ...]:
    info = repo.manifests.get(digest)
    return info.children if isinstance(info, ManifestRefs) else ()


def reference_keep(repo: Repo, min_age: float) -> set[Digest]:
    """The in-use set by brute-force fixpoint: the specification, not the algorithm."""
    keep = set(repo.snapshot.tags.values())
    keep |= {x for x, mtime in repo.snapshot.revisions.items() if NOW - mtime < min_age}
    while True:
        grown = set(keep)
        for digest, info in repo.manifests.items():
            if not isinstance(info, ManifestRefs):
                continue
            if digest in keep:
                grown.update(info.children)
            if info.subject is not None and info.subject in keep:
                grown.add(digest)
        if grown == keep:
            return keep & set(repo.snapshot.revisions)
        keep = grown


@settings(max_examples=400)
@given(repositories(), st.sampled_from([0.0, 50.0, 5000.0]))
def test_plan_keeps_exactly_the_reachable_set(repo: Repo, min_age: float) -> None:
    plan = plan_repository(repo.snapshot, repo.manifests, Policy(min_age), NOW)
    expected_keep = reference_keep(repo, min_age)
    assert set(plan.keep) == expected_keep
    deleted = [x.digest for x in plan.delete]
    assert len(deleted) == len(set(deleted))
    assert set(deleted) == set(repo.snapshot.revisions) - expected_keep
    assert plan.tagged == frozenset(repo.snapshot.tags.values() & repo.snapshot.revisions.keys())
    # The cause of each deletion: a deleted index that lists it, a deleted subject, or
    # nothing at all (plain untagged history).
    deleted_set = set(deleted)
    for decision in plan.delete:
        kind, detail = decision.reason.kind, decision.reason.detail
        info = repo.manifests.get(decision.digest)
        if kind is ReasonKind.CHILD_OF_DELETED:
            parent = repo.manifests[Digest(detail)]
            assert isinstance(parent, ManifestRefs)
            assert decision.digest in parent.children
            assert Digest(detail) in deleted_set
        elif kind is ReasonKind.REFERRER_OF_DELETED:
            assert isinstance(info, ManifestRefs)
            assert info.subject == detail
            assert Digest(detail) in deleted_set
        else:
            assert kind is ReasonKind.UNTAGGED
            parents = [x for x in deleted_set if decision.digest in _children(repo, x)]
            assert parents == []
            assert not (isinstance(info, ManifestRefs) and info.subject in deleted_set)


@settings(max_examples=300)
@given(repositories())
def test_waves_delete_an_index_before_its_children_and_a_subject_before_its_referrers(
    repo: Repo,
) -> None:
    plan = plan_repository(repo.snapshot, repo.manifests, Policy(), NOW)
    wave_of = {x.digest: i for i, wave in enumerate(plan.waves) for x in wave}
    for digest, info in repo.manifests.items():
        if digest not in wave_of or not isinstance(info, ManifestRefs):
            continue
        for child in info.children:
            if child in wave_of and child != digest:
                assert wave_of[digest] < wave_of[child]
                assert child in plan.dependents[digest]
        if info.subject in wave_of and info.subject != digest:
            assert wave_of[info.subject] < wave_of[digest]
            assert digest in plan.dependents[info.subject]
    for digest, dependents in plan.dependents.items():
        assert all(wave_of[digest] < wave_of[x] for x in dependents)


def test_a_subject_cycle_never_breaks_index_before_children() -> None:
    """An index whose subject is one of its own descendants (legal content) makes the
    subject-first rule a cycle: the order then keeps every index before its children."""
    outer, child, inner, grandchild, lone = d(1), d(2), d(3), d(4), d(5)
    manifests: dict[Digest, ManifestInfo] = {
        outer: index(child, inner, subject=child),
        child: image(),
        inner: index(grandchild),
        grandchild: image(),
        lone: image(),
    }
    snapshot = RepositorySnapshot("r", dict.fromkeys(manifests, NOW - 100), {})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    wave_of = {x.digest: i for i, wave in enumerate(plan.waves) for x in wave}
    assert set(wave_of) == set(manifests)
    assert wave_of[outer] < wave_of[child]
    assert wave_of[outer] < wave_of[inner] < wave_of[grandchild]
    for digest, dependents in plan.dependents.items():
        assert all(wave_of[digest] < wave_of[x] for x in dependents)


def test_order_pairs_put_a_signature_after_the_digest_it_signs() -> None:
    signed, signature, lone = d(1), d(2), d(3)
    manifests: dict[Digest, ManifestInfo] = {signed: image(), signature: image(), lone: image()}
    snapshot = RepositorySnapshot("r", dict.fromkeys(manifests, NOW - 100), {})
    plain = plan_repository(snapshot, manifests, Policy(), NOW)
    assert [[x.digest for x in wave] for wave in plain.waves] == [[signed, signature, lone]]
    plan = plan_repository(snapshot, manifests, Policy(), NOW, order=[(signed, signature)])
    assert [[x.digest for x in wave] for wave in plan.waves] == [[signed, lone], [signature]]
    assert plan.dependents == {signed: (signature,)}


@settings(max_examples=300)
@given(repositories(allow_unreadable=True))
def test_anything_unreadable_blocks_every_deletion(repo: Repo) -> None:
    plan = plan_repository(repo.snapshot, repo.manifests, Policy(), NOW)
    unreadable = [x for x, info in repo.manifests.items() if isinstance(info, Unreadable)]
    if unreadable:
        assert plan.delete == ()
        assert set(plan.keep) == set(repo.snapshot.revisions)
        assert plan.warnings
    else:
        assert set(plan.keep) == reference_keep(repo, 0.0)


def test_reasons_name_the_cause() -> None:
    kid, idx, sbom, sig = d(1), d(2), d(3), d(4)
    manifests: dict[Digest, ManifestInfo] = {
        kid: image(),
        idx: index(kid),
        sbom: image(subject=kid),
        sig: image(subject=sbom),
        d(5): image(),
    }
    snapshot = RepositorySnapshot("r", dict.fromkeys(manifests, NOW - 100), {"v1": idx})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    assert {digest: str(reason) for digest, reason in plan.keep.items()} == {
        idx: "tagged:v1",
        kid: f"child-of:{idx}",
        sbom: f"referrer-of:{kid}",
        sig: f"referrer-of:{sbom}",
    }
    assert [x.digest for x in plan.delete] == [d(5)]


def test_deletion_reasons_say_untagged_child_or_referrer_of_a_deleted_manifest() -> None:
    kid, idx, sbom, lone = d(1), d(2), d(3), d(4)
    manifests: dict[Digest, ManifestInfo] = {
        kid: image(), idx: index(kid), sbom: image(subject=idx), lone: image(),
    }  # fmt: skip
    snapshot = RepositorySnapshot("r", dict.fromkeys(manifests, NOW - 100), {})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    assert {x.digest: str(x.reason) for x in plan.delete} == {
        lone: "untagged",
        idx: "untagged",
        sbom: f"referrer-of-deleted:{idx}",
        kid: f"child-of-deleted:{idx}",
    }
    assert [[x.digest for x in wave] for wave in plan.waves] == [[idx, lone], [kid, sbom]]
    assert plan.dependents == {idx: (kid, sbom)}


def test_tag_pointing_outside_revisions_still_protects_children() -> None:
    kid, dangling = d(1), d(2)
    manifests: dict[Digest, ManifestInfo] = {kid: image(), dangling: index(kid)}
    snapshot = RepositorySnapshot("r", {kid: NOW}, {"v": dangling})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    assert plan.keep == {kid: Reason(ReasonKind.CHILD_OF, dangling)}
    assert plan.tagged == frozenset()


def test_broken_tag_link_blocks_the_repository() -> None:
    manifests: dict[Digest, ManifestInfo] = {d(1): image()}
    snapshot = RepositorySnapshot("r", {d(1): NOW}, {}, {"v1": "garbage"})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    assert plan.delete == ()
    assert {x: str(r) for x, r in plan.keep.items()} == {d(1): "blocked:tag:v1"}
    assert plan.blocked


def test_a_symbolic_link_the_registry_would_follow_blocks_the_repository() -> None:
    manifests: dict[Digest, ManifestInfo] = {d(1): image()}
    snapshot = RepositorySnapshot("r", {d(1): NOW - 100}, {}, doubts={"tag:v1": "a symbolic link"})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    assert plan.delete == ()
    assert str(plan.keep[d(1)]) == "blocked:tag:v1"


def test_recheck_never_adds_and_explains_what_it_rescues() -> None:
    a, b, c, e, kid = d(1), d(2), d(3), d(4), d(5)
    manifests: dict[Digest, ManifestInfo] = {
        a: image(),
        b: image(),
        c: image(),
        e: index(kid),
        kid: image(),
    }
    revisions = dict.fromkeys(manifests, NOW - 1000)
    first = plan_repository(RepositorySnapshot("r", revisions, {}), manifests, Policy(60), NOW)
    assert {x.digest for x in first.delete} == set(manifests)

    new_index = d(9)
    fresh_revisions = dict(revisions)
    del fresh_revisions[c]  # someone else deleted it
    fresh_revisions[b] = NOW  # re-pushed by digest just now
    fresh_revisions[new_index] = NOW
    fresh_revisions[d(10)] = NOW - 1000  # a revision the first scan never saw
    fresh_manifests = {**manifests, new_index: index(kid), d(10): image()}
    fresh = RepositorySnapshot("r", fresh_revisions, {"v1": a, "v2": new_index})
    _, rescued = narrow(first.delete, fresh, fresh_manifests, Policy(60), NOW)
    assert rescued == {
        a: Reason(ReasonKind.TAGGED_DURING_RUN, "tagged:v1"),
        b: PUSHED_DURING_RUN,
        c: GONE,
        kid: Reason(ReasonKind.TAGGED_DURING_RUN, f"child-of:{new_index}"),
    }
    assert {x.digest for x in first.delete} - rescued.keys() == {e}


def test_anything_pushed_since_the_scan_is_kept_with_what_it_needs_whatever_its_age() -> None:
    """A push in progress (children first, the index last, no tag yet) with --min-age 0:
    the re-check pins what was written since the scan, and its children with it."""
    kid, other, old_index = d(1), d(2), d(3)
    manifests: dict[Digest, ManifestInfo] = {kid: image(), other: image(), old_index: index(kid)}
    scanned = {kid: NOW - 1000, other: NOW - 1000}
    first = plan_repository(RepositorySnapshot("r", scanned, {}), manifests, Policy(), NOW)
    assert {x.digest for x in first.delete} == {kid, other}
    # The index (untagged, old content pushed again) arrives after the scan.
    fresh = RepositorySnapshot("r", {**scanned, old_index: NOW - 5000}, {})
    _, rescued = narrow(first.delete, fresh, manifests, Policy(), NOW, scanned=scanned)
    assert rescued == {kid: Reason(ReasonKind.PUSHED_DURING_RUN, f"child-of:{old_index}")}
