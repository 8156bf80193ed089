"""Tag retention against small reference models: ``retention.decide_tags`` (rules,
newest-N with ties, pushed_within, pulled_within, keep_at_least, signature tags),
``tagplan`` (shared digests, orphaned signatures), repository globs, and the policy
file's validation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner import mediatypes
from regcleaner.digest import Digest
from regcleaner.errors import ConfigError
from regcleaner.globs import compile_glob, glob_matches, repository_selected
from regcleaner.manifests import ManifestInfo, ManifestKind, ManifestRefs
from regcleaner.planner import Policy
from regcleaner.policyfile import load_policy, parse_policy
from regcleaner.retention import (
    RepositoryPolicy,
    RepositoryPulls,
    TagVerdict,
    attached_digest,
    decide_tags,
    describe,
)
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.tagplan import Elsewhere, TagPlan, plan_with_tags, stays
from tests.unit.test_planner import Repo, reference_keep, repositories

NOW = 1_000_000.0


def d(n: int) -> Digest:
    return Digest("sha256:" + f"{n:064x}")


def sig(digest: Digest, kind: str = "sig") -> str:
    """The cosign-style tag that signs ``digest``; with kind "", the OCI 1.1 referrers
    tag schema of ``digest``."""
    return f"sha256-{digest[7:]}.{kind}" if kind else f"sha256-{digest[7:]}"


NOWHERE = Elsewhere(frozenset())
"""A run that read the whole registry: no other repository has any revision."""


def image(subject: Digest | None = None) -> ManifestRefs:
    return ManifestRefs(ManifestKind.IMAGE, mediatypes.OCI_MANIFEST, (), subject)


def index(*children: Digest) -> ManifestRefs:
    return ManifestRefs(ManifestKind.INDEX, mediatypes.OCI_INDEX, children)


def one_policy(*rules: dict[str, Any], keep_at_least: int | None = None) -> RepositoryPolicy:
    """A validated policy for every repository, from plain rules."""
    entry: dict[str, Any] = {"repositories": ["**"], "keep": list(rules)}
    if keep_at_least is not None:
        entry["keep_at_least"] = keep_at_least
    loaded = parse_policy(json.dumps({"policies": [entry]}), "test")
    return loaded.policies[0]


# -- the reference model ----------------------------------------------------------------

SIGNATURE = re.compile(r"sha256-[0-9a-f]{64}(?:\.(?:sig|att|sbom))?")


@dataclass(frozen=True)
class RuleSpec:
    tags: tuple[str, ...] | None
    newest: int | None
    within: tuple[str, float] | None  # (as written, seconds)
    pulled: tuple[str, float] | None = None  # pulled_within (as written, seconds)

    def document(self) -> dict[str, Any]:
        rule: dict[str, Any] = {}
        if self.tags is not None:
            rule["tags"] = list(self.tags)
        if self.newest is not None:
            rule["newest"] = self.newest
        if self.within is not None:
            rule["pushed_within"] = self.within[0]
        if self.pulled is not None:
            rule["pulled_within"] = self.pulled[0]
        return rule


def reference_rule_keeps(
    rules: list[RuleSpec],
    times: dict[str, float],
    now: float,
    pull_keeps: Callable[[str, float], bool] = lambda tag, within: True,
) -> set[str]:
    """The tags some rule keeps, read straight from the specification. ``pull_keeps(tag,
    seconds)``: whether ``pulled_within: seconds`` keeps ``tag``."""
    ordinary = {t for t in times if not SIGNATURE.fullmatch(t)}
    kept: set[str] = set()
    for rule in rules:
        matched = {
            t for t in ordinary if rule.tags is None or any(re.search(p, t) for p in rule.tags)
        }
        for tag in matched:
            if rule.newest is None and rule.within is None and rule.pulled is None:
                kept.add(tag)
                continue
            later = sum(1 for other in matched if times[other] > times[tag])
            if rule.newest is not None and later < rule.newest:
                kept.add(tag)
            if rule.within is not None and now - times[tag] <= rule.within[1]:
                kept.add(tag)
            if rule.pulled is not None and pull_keeps(tag, rule.pulled[1]):
                kept.add(tag)
    return kept


HEXES = [f"{n:064x}" for n in (1, 2, 0xABC)]
TAG_POOL = [
    "latest", "main", "main-1", "main-2", "main-10", "release-main-3", "v1", "v2.0", "v10-rc1",
    "feature-x", "x", "dev", "sha256-abc.sig",  # not a signature: the hex is too short
    f"sha256-{HEXES[0]}.sig.old", f"sha256-{HEXES[0].upper()}.sig", f"sha256-{HEXES[1]}.sigs",
]  # fmt: skip
PATTERNS = [
    "^main-", "main", "^latest$", r"^v\d+", "x$", ".*", "^sha256-", r"\.sig$", "-rc", "a|b",
    "^$", "1",
]  # fmt: skip
DURATIONS: list[tuple[str | int, float]] = [
    (0, 0.0), (1, 1.0), ("10", 10.0), ("10s", 10.0), ("1m", 60.0), ("1h", 3600.0),
    ("1d", 86400.0), ("1w", 604800.0),
]  # fmt: skip
AGES = [-5.0, 0.0, 0.0, 1.0, 10.0, 10.0, 10.5, 60.0, 3600.0, 3600.0, 86400.0, 10**6]

signature_tags = st.builds(
    lambda hx, kind: f"sha256-{hx}.{kind}",
    st.sampled_from(HEXES),
    st.sampled_from(["sig", "att", "sbom"]),
)
tag_names = st.one_of(
    st.sampled_from(TAG_POOL),
    signature_tags,
    st.from_regex(r"[a-z0-9][a-z0-9._-]{0,6}", fullmatch=True),
)


@st.composite
def rules(draw: st.DrawFn) -> RuleSpec:
    fields = ["tags", "newest", "within", "pulled"]
    given_fields = draw(st.sets(st.sampled_from(fields), min_size=1))
    tags = newest = within = pulled = None
    if "tags" in given_fields:
        tags = draw(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3))
    if "newest" in given_fields:
        newest = draw(st.integers(0, 5))
    if "within" in given_fields:
        within = draw(st.sampled_from(DURATIONS))
    if "pulled" in given_fields:
        pulled = draw(st.sampled_from(DURATIONS))
    return RuleSpec(
        None if tags is None else tuple(tags),
        newest,
        None if within is None else (str(within[0]), within[1]),
        None if pulled is None else (str(pulled[0]), pulled[1]),
    )


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(tag_names, st.sampled_from(AGES), max_size=25),
    st.lists(rules(), min_size=1, max_size=4),
    st.none() | st.integers(0, 6),
    st.booleans(),
    st.dictionaries(st.integers(0, 3), st.sampled_from(AGES)),
    st.none() | st.sampled_from(AGES),
)
def test_decide_tags_matches_the_reference_model(
    ages: dict[str, float],
    rule_specs: list[RuleSpec],
    keep_at_least: int | None,
    as_yaml: bool,
    pull_ages: dict[int, float],
    coverage_age: float | None,
) -> None:
    """Against the specification; with pulls: tags share four digests, some pulled, and
    recording began ``coverage_age`` ago (None: never)."""
    times = {tag: NOW - age for tag, age in ages.items()}
    digests = {tag: d(len(tag) % 4) for tag in times}
    digest_pulls: dict[str, float] = {d(n): NOW - age for n, age in pull_ages.items()}
    covered = None if coverage_age is None else NOW - coverage_age

    def pull_keeps(tag: str, within: float) -> bool:
        last = digest_pulls.get(digests[tag])
        if last is not None and NOW - last <= within:
            return True  # pulled within
        return covered is None or NOW - covered < within  # recording too recent to tell

    entry: dict[str, Any] = {"repositories": ["**"], "keep": [r.document() for r in rule_specs]}
    if keep_at_least is not None:
        entry["keep_at_least"] = keep_at_least
    document = {"policies": [entry]}
    text = json.dumps(document, indent=2) if not as_yaml else _yaml(document)
    policy = parse_policy(text, "p").policies[0]
    at_least = 1 if keep_at_least is None else keep_at_least

    pulls = RepositoryPulls(digest_pulls, {}, covered)
    verdicts = decide_tags(policy, times, NOW, tag_digests=digests, pulls=pulls)

    ordinary = {t for t in times if not SIGNATURE.fullmatch(t)}
    assert set(verdicts) == ordinary, "signature tags must not get a verdict"
    by_rules = reference_rule_keeps(rule_specs, times, NOW, pull_keeps)
    topped = {t for t, v in verdicts.items() if v.reason.startswith(f"keep-at-least-{at_least}")}
    expired = {t for t, v in verdicts.items() if not v.keep}
    assert {t for t, v in verdicts.items() if v.keep} - topped == by_rules
    assert not topped & by_rules
    assert len(topped) == max(0, min(at_least, len(ordinary)) - len(by_rules))
    if topped and expired:
        # keep_at_least keeps the newest of the expired tags
        assert max(times[t] for t in expired) <= min(times[t] for t in topped)
    assert all(v.reason.startswith("expired:") for t, v in verdicts.items() if t in expired)


def _yaml(document: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(document, default_flow_style=False))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(tag_names, st.sampled_from(AGES), max_size=25))
def test_without_a_policy_every_ordinary_tag_is_kept(ages: dict[str, float]) -> None:
    times = {tag: NOW - age for tag, age in ages.items()}
    verdicts = decide_tags(None, times, NOW)
    assert verdicts == {
        t: TagVerdict(True, "no-policy") for t in times if not SIGNATURE.fullmatch(t)
    }


# -- examples: newest-N, ties, equal times ------------------------------------------------


def kept(verdicts: dict[str, TagVerdict]) -> set[str]:
    return {t for t, v in verdicts.items() if v.keep}


def test_newest_counts_push_time_not_name_order() -> None:
    policy = one_policy({"tags": ["^main-"], "newest": 2}, keep_at_least=0)
    times = {"main-1": NOW - 30, "main-2": NOW - 10, "main-3": NOW - 20, "main-9": NOW - 40}
    verdicts = decide_tags(policy, times, NOW)
    assert kept(verdicts) == {"main-2", "main-3"}
    assert verdicts["main-1"].reason.startswith("expired:policies[0]")


def test_every_tag_tied_at_the_boundary_is_kept() -> None:
    policy = one_policy({"newest": 2}, keep_at_least=0)
    times = {"a": NOW - 1, "b": NOW - 5, "c": NOW - 5, "d": NOW - 5, "e": NOW - 9}
    assert kept(decide_tags(policy, times, NOW)) == {"a", "b", "c", "d"}
    # The tie below the boundary does not count: the two newest are exactly two.
    times = {"a": NOW - 1, "b": NOW - 2, "c": NOW - 5, "d": NOW - 5}
    assert kept(decide_tags(policy, times, NOW)) == {"a", "b"}


def test_equal_push_times_keep_every_tag() -> None:
    policy = one_policy({"newest": 1}, keep_at_least=0)
    times = dict.fromkeys(["z", "y", "x", "main", "v1"], NOW - 100)
    assert kept(decide_tags(policy, times, NOW)) == set(times)


def test_newest_zero_keeps_nothing_by_count_but_pushed_within_still_does() -> None:
    times = {"old": NOW - 7200, "new": NOW - 60, "edge": NOW - 3600}
    only_count = one_policy({"newest": 0}, keep_at_least=0)
    assert kept(decide_tags(only_count, times, NOW)) == set()
    both = one_policy({"newest": 0, "pushed_within": "1h"}, keep_at_least=0)
    verdicts = decide_tags(both, times, NOW)
    assert kept(verdicts) == {"new", "edge"}
    assert verdicts["new"].reason.endswith(":pushed-within")


def test_newest_or_pushed_within_either_keeps() -> None:
    policy = one_policy({"tags": ["^v"], "newest": 1, "pushed_within": "3d"}, keep_at_least=0)
    times = {"v1": NOW - 3600, "v2": NOW - 2 * 86400, "v3": NOW - 5 * 86400, "dev": NOW}
    verdicts = decide_tags(policy, times, NOW)
    assert kept(verdicts) == {"v1", "v2"}, "v1 is the newest, v2 within three days"
    assert verdicts["v1"].reason.endswith(":newest-1")
    assert verdicts["v2"].reason.endswith(":pushed-within")


def test_any_rule_keeps_and_each_rule_counts_its_own_matches() -> None:
    policy = one_policy(
        {"tags": ["^latest$"]},
        {"tags": ["^main-"], "newest": 1},
        {"tags": ["^pr-"], "newest": 1},
        keep_at_least=0,
    )
    times = {
        "latest": NOW - 10**6, "main-a": NOW - 50, "main-b": NOW - 40,
        "pr-1": NOW - 100, "pr-2": NOW - 300, "other": NOW,
    }  # fmt: skip
    assert kept(decide_tags(policy, times, NOW)) == {"latest", "main-b", "pr-1"}


def test_patterns_search_anywhere_unless_anchored() -> None:
    policy = one_policy({"tags": ["main"]}, {"tags": ["^rel$"]}, keep_at_least=0)
    times = dict.fromkeys(["main", "x-main-y", "mai", "rel", "rel-1", "a-rel"], NOW)
    assert kept(decide_tags(policy, times, NOW)) == {"main", "x-main-y", "rel"}


def test_signature_tags_never_match_or_count() -> None:
    signatures = {sig(d(1)): NOW, sig(d(2), "att"): NOW, sig(d(3), "sbom"): NOW}
    ordinary = {"b": NOW - 10, "a": NOW - 20}
    policy = one_policy({"tags": [".*"], "newest": 1}, keep_at_least=0)
    verdicts = decide_tags(policy, {**signatures, **ordinary}, NOW)
    assert set(verdicts) == {"a", "b"}
    assert kept(verdicts) == {"b"}, "signature tags pushed later took the newest slot"
    # Even a pattern written for them does not match them.
    only_signatures = one_policy({"tags": ["^sha256-"]}, keep_at_least=0)
    assert decide_tags(only_signatures, signatures, NOW) == {}


def test_attached_digest_reads_cosign_tags_and_the_referrers_tag_schema() -> None:
    assert attached_digest(sig(d(7))) == d(7)
    assert attached_digest(sig(d(7), "att")) == d(7)
    assert attached_digest(sig(d(7), "sbom")) == d(7)
    assert attached_digest(sig(d(7), "")) == d(7), "the OCI 1.1 referrers tag schema"
    for tag in ("sha256-abc.sig", "sha256-abc", sig(d(7)) + ".bak", sig(d(7)).upper(),
                "x" + sig(d(7)), sig(d(7), "") + "-x", sig(d(7), "").upper()):  # fmt: skip
        assert attached_digest(tag) is None


def test_keep_at_least_keeps_the_newest_expired() -> None:
    times = {"a": NOW - 30, "b": NOW - 10, "c": NOW - 20, "d": NOW - 40}
    rule = {"tags": ["^nothing$"]}
    verdicts = decide_tags(one_policy(rule, keep_at_least=2), times, NOW)
    assert {t: v.reason for t, v in verdicts.items() if v.keep} == {
        "b": "keep-at-least-2",
        "c": "keep-at-least-2",
    }
    assert kept(decide_tags(one_policy(rule), times, NOW)) == {"b"}, "the default is 1"
    assert kept(decide_tags(one_policy(rule, keep_at_least=0), times, NOW)) == set()
    assert kept(decide_tags(one_policy(rule, keep_at_least=9), times, NOW)) == set(times)
    # Tags kept by a rule count towards keep_at_least.
    verdicts = decide_tags(one_policy({"tags": ["^d$"]}, keep_at_least=2), times, NOW)
    assert {t: v.reason for t, v in verdicts.items() if v.keep}.keys() == {"d", "b"}
    assert verdicts["b"].reason == "keep-at-least-2"


def test_first_matching_policy_applies_and_unmatched_repositories_keep_everything() -> None:
    loaded = parse_policy(
        "policies:\n"
        "  - repositories: ['ci/**']\n"
        "    keep: [{newest: 1}]\n"
        "  - repositories: ['**']\n"
        "    keep: [{newest: 5}]\n"
        "  - repositories: ['other']\n"
        "    keep: [{newest: 9}]\n",
        "p",
    )
    ci = loaded.for_repository("ci/team/app")
    assert ci is not None
    assert ci.rules[0].newest == 1
    fallback = loaded.for_repository("other")
    assert fallback is not None
    assert fallback.rules[0].newest == 5
    narrow = parse_policy("policies: [{repositories: ['team-*/app'], keep: [{newest: 1}]}]", "p")
    assert narrow.for_repository("team-a/x/app") is None
    assert narrow.for_repository("team-a/app") is not None


def test_planning_a_hundred_thousand_tags_completes() -> None:
    """Planning cost: no time is asserted; the work is linear plus a sort per rule."""
    count = 100_000
    times = {f"build-{i}": NOW - (i * 7919) % 50_000 for i in range(count)}
    policy = one_policy(
        {"tags": ["^build-1"], "newest": 500},
        {"newest": 1000, "pushed_within": "1h"},
        {"tags": ["-42$"]},
        keep_at_least=5,
    )
    verdicts = decide_tags(policy, times, NOW)
    assert len(verdicts) == count
    assert sum(v.keep for v in verdicts.values()) >= 1500


# -- tagplan: shared digests and signatures ----------------------------------------------


def snapshot(
    manifests: dict[Digest, ManifestInfo],
    tags: dict[str, Digest],
    times: dict[str, float] | None = None,
    *,
    revisions: set[Digest] | None = None,
) -> RepositorySnapshot:
    present = set(manifests) if revisions is None else revisions
    return RepositorySnapshot(
        "repo", dict.fromkeys(present, NOW - 10_000), tags,
        tag_times=times if times is not None else dict.fromkeys(tags, NOW - 10_000),
    )  # fmt: skip


def deletions(plan: Any) -> set[Digest]:
    return {decision.digest for decision in plan.delete}


def test_expired_tag_sharing_a_digest_with_a_kept_tag_stays() -> None:
    shared, lone = d(1), d(2)
    manifests: dict[Digest, ManifestInfo] = {shared: image(), lone: image()}
    snap = snapshot(manifests, {"keep-me": shared, "old-1": shared, "old-2": lone})
    policy = one_policy({"tags": ["^keep-"]})
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW, tag_policy=policy,
                                    prune_orphan_signatures=False)  # fmt: skip
    assert deletions(plan) == {lone}
    assert str(plan.keep[shared]) == "tagged:keep-me"
    assert set(tag_plan.kept) == {"keep-me"}
    assert set(tag_plan.going) == {"old-1", "old-2"}
    assert tag_plan.ignored == frozenset({"old-1", "old-2"})
    deleted = deletions(plan)
    assert str(stays("old-1", snap, tag_plan, plan, deleted)) == "shares-digest-with:keep-me"
    assert stays("old-2", snap, tag_plan, plan, deleted) is None


def test_expired_tags_only_on_one_digest_let_it_go() -> None:
    digest, kept_digest = d(1), d(2)
    manifests: dict[Digest, ManifestInfo] = {digest: image(), kept_digest: image()}
    snap = snapshot(
        manifests, {"old-a": digest, "old-b": digest, "new": kept_digest},
        {"old-a": NOW - 500, "old-b": NOW - 400, "new": NOW - 1},
    )  # fmt: skip
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW,
                                    tag_policy=one_policy({"newest": 1}),
                                    prune_orphan_signatures=False)  # fmt: skip
    assert deletions(plan) == {digest}
    for tag in ("old-a", "old-b"):
        assert stays(tag, snap, tag_plan, plan, deletions(plan)) is None


def test_expired_tag_on_a_digest_in_use_stays_with_the_reason() -> None:
    child, parent = d(1), d(2)
    manifests: dict[Digest, ManifestInfo] = {child: image(), parent: index(child)}
    snap = snapshot(manifests, {"keep-idx": parent, "old-child": child})
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW,
                                    tag_policy=one_policy({"tags": ["^keep-"]}),
                                    prune_orphan_signatures=False)  # fmt: skip
    assert deletions(plan) == set()
    assert set(tag_plan.going) == {"old-child"}
    stay = stays("old-child", snap, tag_plan, plan, set())
    assert str(stay) == f"digest-in-use:child-of:{parent}"


def test_signatures_live_as_long_as_the_digest_they_sign() -> None:
    kept_image, expired_image, gone = d(1), d(2), d(3)
    sig_kept, sig_expired, sig_gone, sig_of_sig, att_kept = d(11), d(12), d(13), d(14), d(15)
    manifests: dict[Digest, ManifestInfo] = {
        kept_image: image(), expired_image: image(), sig_kept: image(),
        sig_expired: image(), sig_gone: image(), sig_of_sig: image(), att_kept: image(),
    }  # fmt: skip
    tags = {
        "keep-a": kept_image, "old-b": expired_image,
        sig(kept_image): sig_kept, sig(kept_image, "att"): att_kept,
        sig(expired_image): sig_expired, sig(gone): sig_gone,
        sig(sig_kept): sig_of_sig,  # a signature of the signature
    }  # fmt: skip
    snap = snapshot(manifests, tags)
    for prune in (False, True):  # with a policy, the flag changes nothing
        plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW,
                                        tag_policy=one_policy({"tags": ["^keep-"]}),
                                        prune_orphan_signatures=prune,
                                        elsewhere=NOWHERE)  # fmt: skip
        assert deletions(plan) == {expired_image, sig_expired, sig_gone}
        assert tag_plan.kept["keep-a"].endswith(":matches")
        assert {t: r for t, r in tag_plan.kept.items() if t != "keep-a"} == {
            sig(kept_image): f"signature-of-kept:{kept_image}",
            sig(kept_image, "att"): f"signature-of-kept:{kept_image}",
            sig(sig_kept): f"signature-of-kept:{sig_kept}",
        }
        assert tag_plan.going["old-b"].startswith("expired:")
        assert {t: r for t, r in tag_plan.going.items() if t != "old-b"} == {
            sig(expired_image): f"orphan-signature:{expired_image}-deleted",
            sig(gone): f"orphan-signature:{gone}-gone",
        }
        assert stays(sig(gone), snap, tag_plan, plan, deletions(plan)) is None


def test_signature_of_a_digest_kept_as_a_child_lives() -> None:
    child, parent, signature = d(1), d(2), d(3)
    manifests: dict[Digest, ManifestInfo] = {
        child: image(),
        parent: index(child),
        signature: image(),
    }
    snap = snapshot(manifests, {"v1": parent, sig(child): signature})
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW, tag_policy=None,
                                    prune_orphan_signatures=True)  # fmt: skip
    assert deletions(plan) == set()
    assert tag_plan.kept[sig(child)] == f"signature-of-kept:{child}"


def test_without_a_policy_orphan_signatures_go_only_when_asked() -> None:
    tagged, untagged, gone = d(1), d(2), d(3)
    s_tagged, s_untagged, s_gone = d(11), d(12), d(13)
    manifests: dict[Digest, ManifestInfo] = {
        m: image() for m in (tagged, untagged, s_tagged, s_untagged, s_gone)
    }
    tags = {"v1": tagged, sig(tagged): s_tagged, sig(untagged): s_untagged, sig(gone): s_gone}
    snap = snapshot(manifests, tags)
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW, tag_policy=None,
                                    prune_orphan_signatures=False)  # fmt: skip
    assert deletions(plan) == {untagged}, "signature tags are ordinary tags"
    assert tag_plan == TagPlan(dict.fromkeys(tags, "no-policy"), {})
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW, tag_policy=None,
                                    prune_orphan_signatures=True, elsewhere=NOWHERE)  # fmt: skip
    assert deletions(plan) == {untagged, s_untagged, s_gone}
    assert dict(tag_plan.kept) == {
        "v1": "no-policy",
        sig(tagged): f"signature-of-kept:{tagged}",
    }
    assert dict(tag_plan.going) == {
        sig(untagged): f"orphan-signature:{untagged}-deleted",
        sig(gone): f"orphan-signature:{gone}-gone",
    }


@st.composite
def signed_repositories(draw: st.DrawFn) -> tuple[Repo, set[str]]:
    """A random repository whose tags are ``keep-N`` (the policy keeps them), ``old-N``
    (expired) and signature tags of random digests (some not revisions); a signature's
    target is any revision."""
    repo = draw(repositories())
    digests = sorted(repo.snapshot.revisions)
    outside = [d(1000 + n) for n in range(3)]
    tags: dict[str, Digest] = {}
    for n, target in enumerate(repo.snapshot.tags.values()):
        tags[f"{draw(st.sampled_from(['keep', 'old']))}-{n}"] = target
    for signed in draw(st.lists(st.sampled_from(digests + outside), max_size=6, unique=True)):
        kind = draw(st.sampled_from(["sig", "att", "sbom", ""]))
        tags[sig(signed, kind)] = draw(st.sampled_from(digests))
    snap = RepositorySnapshot("repo", repo.snapshot.revisions, tags,
                              tag_times=dict.fromkeys(tags, NOW))  # fmt: skip
    expired = {t for t in tags if t.startswith("old-")}
    return Repo(snap, repo.manifests), expired


@settings(max_examples=300, deadline=None)
@given(signed_repositories(), st.booleans())
def test_signature_rule_is_the_least_fixpoint(
    drawn: tuple[Repo, set[str]], with_policy: bool
) -> None:
    """Reference: the kept set, with expired tags absent and a signature tag present
    only while its digest is a kept revision, computed by brute-force iteration."""
    repo, expired = drawn
    tags = repo.snapshot.tags
    if not with_policy:
        expired = set()
    signatures = {t: Digest("sha256:" + t[7:71]) for t in tags if SIGNATURE.fullmatch(t)}
    # Every revision outside this repository is gone (a run that read the registry).
    live: set[str] = set()
    while True:
        present = {t: dg for t, dg in tags.items()
                   if t not in expired and (t not in signatures or t in live)}  # fmt: skip
        view = Repo(RepositorySnapshot("repo", repo.snapshot.revisions, present), repo.manifests)
        keep = reference_keep(view, 0.0)
        grown = {t for t, signed in signatures.items() if signed in keep}
        if grown == live:
            break
        live = grown
    policy = one_policy({"tags": ["^keep-"]}, keep_at_least=0) if with_policy else None
    plan, tag_plan = plan_with_tags(repo.snapshot, repo.manifests, Policy(), NOW,
                                    tag_policy=policy, prune_orphan_signatures=True,
                                    elsewhere=NOWHERE)  # fmt: skip
    assert set(plan.keep) == keep
    assert deletions(plan) == set(repo.snapshot.revisions) - keep
    assert set(tag_plan.going) == expired | (set(signatures) - live)
    assert set(tag_plan.kept) == set(tags) - set(tag_plan.going)
    for tag in tag_plan.going:
        outcome = stays(tag, repo.snapshot, tag_plan, plan, deletions(plan))
        if outcome is None:
            assert tags[tag] in deletions(plan)
        else:
            assert tags[tag] in keep or tags[tag] not in repo.snapshot.revisions


# -- globs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("team/*", ["team/a", "team/b-c"], ["team/a/b", "team", "teams/a"]),
        ("team/**", ["team/a", "team/a/b", "team/a/b/c"], ["teams/a", "x/team/a"]),
        ("**/app", ["app", "team/app", "a/b/app"], ["xapp", "team/app2", "app/x"]),
        ("ci/**", ["ci/app", "ci/team/app"], ["cix/app", "x/ci/app"]),
        ("team-*/app", ["team-a/app", "team-/app"], ["team-a/x/app", "team/app"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "ab", "a/b/c"]),
        ("r?po", ["repo", "rxpo"], ["rpo", "r/po", "reepo"]),
        ("*", ["app", "a.b-c_d"], ["team/app"]),
        ("**", ["app", "team/app", "a/b/c"], []),
        ("a.b+c", ["a.b+c"], ["axb+c", "a.bbc"]),
    ],
)
def test_glob_examples(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    for name in matching:
        assert glob_matches(pattern, name), (pattern, name)
    for name in not_matching:
        assert not glob_matches(pattern, name), (pattern, name)


def test_empty_glob_is_refused() -> None:
    with pytest.raises(ValueError, match="empty glob"):
        compile_glob("")


def reference_glob(pattern: str, name: str) -> bool:
    """Segment by segment: ``**`` is zero or more whole segments; in any other segment
    ``*`` is any run of characters and ``?`` one character (never a ``/``)."""

    def segment(pat: str, text: str) -> bool:
        if not pat:
            return not text
        if pat[0] == "*":
            return any(segment(pat[1:], text[i:]) for i in range(len(text) + 1))
        if not text:
            return False
        return (pat[0] == "?" or pat[0] == text[0]) and segment(pat[1:], text[1:])

    def segments(pats: list[str], parts: list[str]) -> bool:
        if not pats:
            return not parts
        if pats[0] == "**":
            return any(segments(pats[1:], parts[i:]) for i in range(len(parts) + 1))
        return bool(parts) and segment(pats[0], parts[0]) and segments(pats[1:], parts[1:])

    return segments(pattern.split("/"), name.split("/"))


glob_segments = st.one_of(
    st.just("**"), st.from_regex(r"[ab.*?-]{1,4}", fullmatch=True).filter(lambda s: "**" not in s)
)
name_segments = st.from_regex(r"[ab.-]{1,3}", fullmatch=True)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(glob_segments, min_size=1, max_size=4),
    st.lists(name_segments, min_size=1, max_size=4),
)
def test_globs_match_the_segment_reference(pattern_parts: list[str], parts: list[str]) -> None:
    """(Repeated ``**`` segments included: the reference reads ``**/**`` as one.)"""
    pattern, name = "/".join(pattern_parts), "/".join(parts)
    assert glob_matches(pattern, name) == reference_glob(pattern, name), (pattern, name)


def test_repeated_double_star_means_the_same_as_one() -> None:
    assert glob_matches("a/**", "a")
    assert glob_matches("a/**/**", "a")
    for pattern in ("a/**/**", "**/**/a", "a/**/**/b", "**/**"):
        collapsed = pattern.replace("**/**", "**")
        for name in ("a", "b", "a/b", "a/x/b", "x/a", "x/y/a", "a/x/y/b", "ab"):
            assert glob_matches(pattern, name) == glob_matches(collapsed, name), (pattern, name)


def test_include_and_exclude_use_the_same_globs() -> None:
    assert not repository_selected("team/a/b", ("team/*",), ())
    assert repository_selected("team/a/b", ("team/**",), ())
    assert repository_selected("team/a", ("team/*",), ())
    assert not repository_selected("team/a", ("team/**",), ("team/*",)), "exclude wins"
    assert repository_selected("team/a/b", ("team/**",), ("team/*",))
    assert repository_selected("anything", (), ())


# -- the policy file ---------------------------------------------------------------------

VALID = """\
policies:
  - repositories: ["ci/**", "team-*/app"]
    keep:
      - tags: ["^latest$"]
      - tags: ["^main-"]
        newest: 3
      - pushed_within: 7d
    keep_at_least: 2
  - repositories: ["**"]
    keep:
      - newest: 10
"""


def test_a_valid_file_loads_from_yaml_and_json_alike(tmp_path: Path) -> None:
    loaded = parse_policy(VALID, "p.yaml")
    first, second = loaded.policies
    assert first.globs == ("ci/**", "team-*/app")
    assert first.keep_at_least == 2
    assert second.keep_at_least == 1
    assert [r.newest for r in first.rules] == [None, 3, None]
    assert first.rules[2].pushed_within_s == 7 * 86400
    assert first.rules[0].patterns is not None
    assert [p.pattern for p in first.rules[0].patterns] == ["^latest$"]
    assert second.rules[0].patterns is None
    import yaml

    path = tmp_path / "p.json"
    path.write_text(json.dumps(yaml.safe_load(VALID), indent=1))
    from_json = load_policy(str(path))

    def unlabelled(lines: list[str]) -> list[str]:
        return [re.sub(r"\(line \d+\)", "", line) for line in lines]

    assert unlabelled(list(describe(from_json))) == unlabelled(list(describe(loaded)))
    assert [p.globs for p in from_json.policies] == [p.globs for p in loaded.policies]


BAD_FILES: list[tuple[str, str, str, int]] = [
    ("unknown-top-key", VALID + "extra: 1\n", "(top).extra", 12),
    (
        "unknown-policy-key",
        "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n    keepp: 1\n",
        "policies[0].keepp",
        5,
    ),
    (
        "unknown-rule-key",
        "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n"
        "      - tags: [y]\n        newset: 3\n",
        "policies[0].keep[1].newset",
        6,
    ),
    (
        "bad-regex",
        "policies:\n  - repositories: [a]\n    keep:\n      - tags:\n          - ok\n"
        "          - '(unclosed'\n",
        "policies[0].keep[0].tags",
        6,
    ),
    (
        "bad-duration",
        "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n"
        "        pushed_within: 7 days\n",
        "policies[0].keep[0].pushed_within",
        5,
    ),
    (
        "negative-newest",
        "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n      - newest: -1\n",
        "policies[0].keep[1].newest",
        5,
    ),
    (
        "negative-newest-json",
        '{"policies": [\n  {"repositories": ["a"],\n   "keep": [{"newest": -2}]}\n]}\n',
        "policies[0].keep[0].newest",
        3,
    ),
    ("empty-policies", "# nothing yet\npolicies: []\n", "policies", 2),
    (
        "empty-keep",
        "policies:\n  - repositories: [a]\n    keep: [{newest: 1}]\n"
        "  - repositories: [b]\n    keep: []\n",
        "policies[1].keep",
        5,
    ),
    (
        "empty-rule",
        "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n      - {}\n",
        "policies[0].keep[1]",
        5,
    ),
    (
        "rule-of-unknown-keys-only",
        "policies:\n  - repositories: [a]\n    keep:\n      - keep_at_least: 1\n",
        "policies[0].keep[0].keep_at_least",
        4,
    ),
]
DUPLICATE_FILES: list[tuple[str, str, str, int]] = [
    (
        "duplicate-rule-key",
        "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n        tags: [y]\n",
        "policies[0].keep[0].tags",
        5,
    ),
    (
        "duplicate-top-key",
        VALID + "policies: []\n",
        "policies",
        12,
    ),
    (
        "duplicate-key-json",
        '{"policies": [{"repositories": ["a"],\n "keep": [{"newest": 2,\n "newest": 3}]}]}\n',
        "policies[0].keep[0].newest",
        3,
    ),
]


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, "p.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [pytest.param(text, field, line, id=name) for name, text, field, line in BAD_FILES],
)
def test_bad_files_name_the_field_and_the_line(text: str, field: str, line: int) -> None:
    message = _error(text)
    assert message.startswith(f"p.yaml:line {line}: {field}: "), message


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [pytest.param(text, field, line, id=name) for name, text, field, line in DUPLICATE_FILES],
)
def test_duplicate_keys_name_the_field_and_the_line(text: str, field: str, line: int) -> None:
    message = _error(text)
    assert message.startswith(f"p.yaml:line {line}: {field}: "), message


@pytest.mark.parametrize(
    ("text", "line"), [pytest.param(text, line, id=name) for name, text, _, line in DUPLICATE_FILES]
)
def test_duplicate_keys_are_refused_at_their_line(text: str, line: int) -> None:
    message = _error(text)
    assert message.startswith(f"p.yaml:line {line}: "), message
    assert "given twice" in message


def test_bad_regex_and_duration_say_what_is_wrong() -> None:
    assert "'(unclosed'" in _error(BAD_FILES[3][1])
    duration = _error(BAD_FILES[4][1])
    assert "7 days" in duration
    assert duration.count("pushed_within") == 1, duration


def test_a_key_that_is_not_a_name_is_refused_with_its_field_and_line() -> None:
    text = "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n        1: 2\n"
    assert _error(text).startswith("p.yaml:line 5: policies[0].keep[0]: keys must be names")
    assert _error("7: x\n").startswith("p.yaml:line 1: (top): keys must be names")
