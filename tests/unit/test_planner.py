"""The planner against a naive reference model, over randomly generated repositories."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner import mediatypes
from regcleaner.digest import Digest
from regcleaner.manifests import ManifestKind, ManifestRefs
from regcleaner.planner import (
    REASON_GONE,
    REASON_PUSHED_DURING_RUN,
    REASON_TAGGED_DURING_RUN,
    ManifestInfo,
    Policy,
    RepositorySnapshot,
    Unreadable,
    plan_repository,
    recheck_plan,
)

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
    assert all(x.reason == "untagged" for x in plan.delete)
    assert plan.tagged == frozenset(repo.snapshot.tags.values())


@settings(max_examples=300)
@given(repositories())
def test_waves_delete_what_points_before_what_it_points_at(repo: Repo) -> None:
    plan = plan_repository(repo.snapshot, repo.manifests, Policy(), NOW)
    wave_of = {x.digest: i for i, wave in enumerate(plan.waves) for x in wave}
    for digest, info in repo.manifests.items():
        if digest not in wave_of or not isinstance(info, ManifestRefs):
            continue
        for target in (*info.children, *([info.subject] if info.subject else [])):
            if target in wave_of:
                assert wave_of[digest] < wave_of[target]


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
    assert plan.keep == {
        idx: "tagged:v1",
        kid: f"child-of:{idx}",
        sbom: f"referrer-of:{kid}",
        sig: f"referrer-of:{sbom}",
    }
    assert [x.digest for x in plan.delete] == [d(5)]


def test_tag_pointing_outside_revisions_still_protects_children() -> None:
    kid, dangling = d(1), d(2)
    manifests: dict[Digest, ManifestInfo] = {kid: image(), dangling: index(kid)}
    snapshot = RepositorySnapshot("r", {kid: NOW}, {"v": dangling})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    assert plan.keep == {kid: f"child-of:{dangling}"}
    assert plan.tagged == frozenset()


def test_broken_tag_link_blocks_the_repository() -> None:
    manifests: dict[Digest, ManifestInfo] = {d(1): image()}
    snapshot = RepositorySnapshot("r", {d(1): NOW}, {}, {"v1": "garbage"})
    plan = plan_repository(snapshot, manifests, Policy(), NOW)
    assert plan.delete == ()
    assert plan.keep == {d(1): "blocked:tag:v1"}
    assert plan.blocked


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
    plan, rescued = recheck_plan(first, fresh, fresh_manifests, Policy(60), NOW)
    assert rescued == {
        a: REASON_TAGGED_DURING_RUN,
        b: REASON_PUSHED_DURING_RUN,
        c: REASON_GONE,
        kid: REASON_TAGGED_DURING_RUN,
    }
    assert {x.digest for x in plan.delete} == {e}
    assert plan.keep[a] == REASON_TAGGED_DURING_RUN
