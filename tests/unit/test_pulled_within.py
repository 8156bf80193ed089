"""``pulled_within`` in a keep rule: the pure decision (``retention.decide_tags`` given a
repository's pulls), its safe default (no pull on record means "not pulled" only when
recording covered the whole period), how it combines with ``tags``, ``newest`` and
``pushed_within`` (as ``pushed_within`` does: a matching tag stays if ANY of them keeps
it), ``keep_at_least``, the policy file's validation, and ``policy check``'s words."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner.digest import Digest
from regcleaner.errors import ConfigError
from regcleaner.events.decision import format_time
from regcleaner.events.store import TagPull
from regcleaner.manifests import ManifestInfo
from regcleaner.planner import Policy
from regcleaner.policyfile import parse_policy
from regcleaner.retention import (
    RepositoryPolicy,
    RepositoryPulls,
    TagVerdict,
    decide_tags,
    describe,
)
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.tagplan import plan_with_tags
from tests.unit.test_retention import image

NOW = 2_000_000_000.0
DAY = 86400.0
MONTH = 30 * DAY
LONG_AGO = NOW - 365 * DAY
"""Recording began a year ago: it covers any period of the tests."""


def d(n: int) -> Digest:
    return Digest("sha256:" + f"{n:064x}")


def one_policy(*rules: dict[str, Any], keep_at_least: int | None = None) -> RepositoryPolicy:
    entry: dict[str, Any] = {"repositories": ["**"], "keep": list(rules)}
    if keep_at_least is not None:
        entry["keep_at_least"] = keep_at_least
    return parse_policy(json.dumps({"policies": [entry]}), "test").policies[0]


def pulls(
    digests: dict[str, float] | None = None,
    tags: dict[str, TagPull] | None = None,
    covered_since: float | None = LONG_AGO,
) -> RepositoryPulls:
    return RepositoryPulls(digests or {}, tags or {}, covered_since)


def kept(verdicts: dict[str, TagVerdict]) -> set[str]:
    return {t for t, v in verdicts.items() if v.keep}


PULLED_30D = {"pulled_within": "30d"}
OLD_PUSH = NOW - 400 * DAY


# -- the three answers --------------------------------------------------------------------


def test_a_tag_whose_digest_was_pulled_in_time_is_kept_with_the_pull() -> None:
    times = {"v1": OLD_PUSH, "v2": OLD_PUSH}
    digests = {"v1": d(1), "v2": d(2)}
    pulled_at = NOW - 2 * DAY
    verdicts = decide_tags(
        one_policy(PULLED_30D, keep_at_least=0), times, NOW,
        tag_digests=digests, pulls=pulls({d(1): pulled_at, d(2): NOW - 31 * DAY}),
    )  # fmt: skip
    assert kept(verdicts) == {"v1"}
    assert (
        verdicts["v1"].reason == f"keep[0](line 1):pulled-within: pulled {format_time(pulled_at)}"
    )
    assert verdicts["v2"].reason.startswith("expired:policies[0](line 1)")
    assert f"last pulled {format_time(NOW - 31 * DAY)}" in verdicts["v2"].reason
    assert f"recording since {format_time(LONG_AGO)}" in verdicts["v2"].reason


def test_the_boundary_of_the_period_counts_as_within() -> None:
    times = {"edge": OLD_PUSH, "past": OLD_PUSH}
    digests = {"edge": d(1), "past": d(2)}
    record = pulls({d(1): NOW - MONTH, d(2): NOW - MONTH - 1})
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=0), times, NOW,
                           tag_digests=digests, pulls=record)  # fmt: skip
    assert kept(verdicts) == {"edge"}


def test_no_pull_on_record_with_full_coverage_expires() -> None:
    times = {"never": OLD_PUSH}
    verdicts = decide_tags(
        one_policy(PULLED_30D, keep_at_least=0), times, NOW,
        tag_digests={"never": d(1)}, pulls=pulls(covered_since=NOW - MONTH),
    )  # fmt: skip
    assert not verdicts["never"].keep
    assert verdicts["never"].reason == (
        f"expired:policies[0](line 1): never pulled (recording since {format_time(NOW - MONTH)})"
    )


def test_no_pull_on_record_but_recording_too_recent_keeps_with_the_reason() -> None:
    began = NOW - 29 * DAY
    times = {"never": OLD_PUSH, "long-ago": OLD_PUSH}
    digests = {"never": d(1), "long-ago": d(2)}
    record = pulls({d(2): NOW - 40 * DAY}, covered_since=began)  # before coverage: imported
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=0), times, NOW,
                           tag_digests=digests, pulls=record)  # fmt: skip
    assert kept(verdicts) == {"never", "long-ago"}
    unknown = (
        f"keep[0](line 1):pulled-within-unknown: pull recording began {format_time(began)}: "
        "too recent to tell whether it was pulled"
    )
    assert verdicts["never"].reason == unknown
    assert verdicts["long-ago"].reason == f"{unknown}; last pulled {format_time(NOW - 40 * DAY)}"


def test_a_record_that_never_started_keeps_every_tag() -> None:
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=0), {"v1": OLD_PUSH}, NOW,
                           tag_digests={"v1": d(1)}, pulls=pulls(covered_since=None))  # fmt: skip
    assert verdicts["v1"].keep
    assert "pull recording never started" in verdicts["v1"].reason


def test_without_a_pull_record_pulled_within_keeps() -> None:
    """A caller that has no pull record (``usage``, a test) is never told "not pulled"."""
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=0), {"v1": OLD_PUSH}, NOW)
    assert verdicts["v1"].keep
    assert ":pulled-within-unknown: " in verdicts["v1"].reason


# -- by digest, by this tag, by another tag -----------------------------------------------


def test_a_pull_by_digest_or_by_another_tag_keeps_every_tag_on_the_digest() -> None:
    times = {"a": OLD_PUSH, "b": OLD_PUSH, "c": OLD_PUSH, "other": OLD_PUSH}
    digests = {"a": d(1), "b": d(1), "c": d(2), "other": d(3)}
    # d(1) was pulled by tag b (an event: it recorded the digest too); d(2) by digest.
    record = pulls({d(1): NOW - DAY, d(2): NOW - 3 * DAY}, {"b": TagPull(NOW - DAY, d(1))})
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=0), times, NOW,
                           tag_digests=digests, pulls=record)  # fmt: skip
    assert kept(verdicts) == {"a", "b", "c"}
    assert verdicts["a"].reason.endswith(f"pulled {format_time(NOW - DAY)}")


def test_a_logged_pull_by_another_tag_counts_only_after_that_tag_was_pushed() -> None:
    """An access log does not say which digest a tag served: a pull by tag ``b`` seen
    only in a log counts for the digest ``b`` points at now if it came after ``b``'s
    last push (then ``b`` pointed there already), for every tag on that digest."""
    pushed_b = NOW - 10 * DAY
    times = {"a": OLD_PUSH, "b": pushed_b, "x": OLD_PUSH, "y": NOW - 5 * DAY}
    digests = {"a": d(1), "b": d(1), "x": d(2), "y": d(2)}
    record = pulls(tags={
        "b": TagPull(NOW - 2 * DAY, None),   # after b's push: d(1) was pulled
        "y": TagPull(NOW - 8 * DAY, None),   # before y's push: y may have pointed elsewhere
    })  # fmt: skip
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=0), times, NOW,
                           tag_digests=digests, pulls=record)  # fmt: skip
    assert kept(verdicts) == {"a", "b"}
    assert verdicts["x"].reason.startswith("expired:")


def test_an_event_pull_by_a_tag_that_served_another_digest_does_not_count() -> None:
    """``v1`` was pulled when it pointed at d(1); it points at d(2) now."""
    record = pulls({d(1): NOW - DAY}, {"v1": TagPull(NOW - DAY, d(1))})
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=0), {"v1": NOW - 60 * DAY}, NOW,
                           tag_digests={"v1": d(2)}, pulls=record)  # fmt: skip
    assert not verdicts["v1"].keep


# -- combining with the other conditions, and keep_at_least -------------------------------


def test_tags_and_pulled_within_must_both_hold() -> None:
    times = {"release-1": OLD_PUSH, "dev-1": OLD_PUSH}
    digests = {"release-1": d(1), "dev-1": d(2)}
    record = pulls({d(1): NOW - DAY, d(2): NOW - DAY})
    verdicts = decide_tags(
        one_policy({"tags": ["^release-"], "pulled_within": "30d"}, keep_at_least=0),
        times, NOW, tag_digests=digests, pulls=record,
    )  # fmt: skip
    assert kept(verdicts) == {"release-1"}, "dev-1 was pulled, but the rule does not match it"


def test_newest_pushed_within_or_pulled_within_each_keeps() -> None:
    times = {"newest": NOW - DAY / 2, "pushed": NOW - DAY, "pulled": OLD_PUSH,
             "none": OLD_PUSH - 1}  # fmt: skip
    digests = {t: d(n) for n, t in enumerate(times)}
    record = pulls({digests["pulled"]: NOW - DAY})
    rule = {"newest": 1, "pushed_within": "7d", "pulled_within": "30d"}
    verdicts = decide_tags(one_policy(rule, keep_at_least=0), times, NOW,
                           tag_digests=digests, pulls=record)  # fmt: skip
    assert kept(verdicts) == {"newest", "pushed", "pulled"}
    assert verdicts["newest"].reason.startswith("keep[0](line 1):newest-1")
    assert verdicts["pushed"].reason.startswith("keep[0](line 1):pushed-within")
    assert verdicts["pulled"].reason.startswith("keep[0](line 1):pulled-within: pulled ")


def test_every_kept_tag_says_its_last_pull() -> None:
    times = {"latest": OLD_PUSH, "v1": OLD_PUSH, "v2": OLD_PUSH}
    digests = {"latest": d(1), "v1": d(2), "v2": d(3)}
    record = pulls({d(1): NOW - 90 * DAY, d(2): NOW - DAY})
    policy = one_policy({"tags": ["^latest$"]}, PULLED_30D, keep_at_least=2)
    verdicts = decide_tags(policy, times, NOW, tag_digests=digests, pulls=record)
    assert verdicts["latest"].reason == (
        f"keep[0](line 1):matches; last pulled {format_time(NOW - 90 * DAY)}"
    )
    assert (
        verdicts["v1"].reason == f"keep[1](line 1):pulled-within: pulled {format_time(NOW - DAY)}"
    )
    assert kept(verdicts) == {"latest", "v1"}


def test_keep_at_least_still_holds() -> None:
    times = {"old": NOW - 300 * DAY, "older": NOW - 400 * DAY, "oldest": NOW - 500 * DAY}
    digests = {t: d(n) for n, t in enumerate(times)}
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=2), times, NOW,
                           tag_digests=digests, pulls=pulls())  # fmt: skip
    assert kept(verdicts) == {"old", "older"}, "the two most recently pushed stay"
    assert verdicts["old"].reason == "keep-at-least-2; never pulled"
    assert not verdicts["oldest"].keep
    # With the default, one stays.
    verdicts = decide_tags(one_policy(PULLED_30D), times, NOW, tag_digests=digests,
                           pulls=pulls())  # fmt: skip
    assert kept(verdicts) == {"old"}


def test_a_repository_whose_policy_reads_no_pulls_is_unchanged() -> None:
    times = {"v1": OLD_PUSH, "v2": NOW}
    policy = one_policy({"newest": 1}, keep_at_least=0)
    with_pulls = decide_tags(policy, times, NOW, tag_digests={"v1": d(1), "v2": d(2)},
                             pulls=pulls({d(1): NOW}))  # fmt: skip
    assert with_pulls == decide_tags(policy, times, NOW)


# -- the same decision as a reference reading of the specification ------------------------

TAGS = ["a", "b", "c", "d", "e", "f"]
PULL_AGES = [None, 0.0, DAY, 29 * DAY, MONTH, MONTH + 1, 90 * DAY]
COVERAGE_AGES = [None, DAY, MONTH - 1, MONTH, 400 * DAY]


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(TAGS), st.integers(0, 3), min_size=1),
    st.dictionaries(st.integers(0, 3), st.sampled_from(PULL_AGES)),
    st.sampled_from(COVERAGE_AGES),
    st.integers(0, 3),
)
def test_pulled_within_matches_the_reference(
    tag_to_digest: dict[str, int],
    digest_pull_ages: dict[int, float | None],
    coverage_age: float | None,
    keep_at_least: int,
) -> None:
    times = {t: OLD_PUSH - i for i, t in enumerate(sorted(tag_to_digest))}
    digests = {t: d(n) for t, n in tag_to_digest.items()}
    by_digest: dict[str, float] = {
        d(n): NOW - age for n, age in digest_pull_ages.items() if age is not None
    }
    covered = None if coverage_age is None else NOW - coverage_age
    record = pulls(by_digest, covered_since=covered)
    verdicts = decide_tags(one_policy(PULLED_30D, keep_at_least=keep_at_least), times, NOW,
                           tag_digests=digests, pulls=record)  # fmt: skip

    def reference(tag: str) -> bool:
        last = by_digest.get(digests[tag])
        if last is not None and NOW - last <= MONTH:
            return True
        return covered is None or NOW - covered < MONTH

    by_rule = {t for t in times if reference(t)}
    topped = {t for t, v in verdicts.items() if v.reason.startswith("keep-at-least-")}
    assert kept(verdicts) - topped == by_rule
    assert len(topped) == max(0, min(keep_at_least, len(times)) - len(by_rule))


# -- through the repository's plan ---------------------------------------------------------


def test_plan_with_tags_passes_the_repository_pulls() -> None:
    manifests: dict[Digest, ManifestInfo] = {d(1): image(), d(2): image()}
    tags = {"pulled": d(1), "idle": d(2)}
    snap = RepositorySnapshot("repo", dict.fromkeys(manifests, OLD_PUSH), tags,
                              tag_times=dict.fromkeys(tags, OLD_PUSH))  # fmt: skip
    record = pulls({d(1): NOW - DAY})
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW,
                                    tag_policy=one_policy(PULLED_30D, keep_at_least=0),
                                    prune_orphan_signatures=False, pulls=record)  # fmt: skip
    assert set(tag_plan.kept) == {"pulled"}
    assert set(tag_plan.going) == {"idle"}
    assert {decision.digest for decision in plan.delete} == {d(2)}
    # Without the pull record, nothing expires on pull grounds.
    plan, tag_plan = plan_with_tags(snap, manifests, Policy(), NOW,
                                    tag_policy=one_policy(PULLED_30D, keep_at_least=0),
                                    prune_orphan_signatures=False)  # fmt: skip
    assert not tag_plan.going
    assert not plan.delete


# -- the policy file and policy check -----------------------------------------------------


def test_the_policy_file_reads_pulled_within() -> None:
    loaded = parse_policy(
        "policies:\n  - repositories: ['**']\n    keep:\n      - tags: ['^v']\n"
        "        pulled_within: 30d\n      - newest: 2\n",
        "p.yaml",
    )
    assert loaded.uses_pulls
    first, second = loaded.policies[0].rules
    assert first.pulled_within_s == MONTH
    assert first.pulled_within_text == "30d"
    assert second.pulled_within_s is None
    assert loaded.longest_pulled_within == MONTH
    plain = parse_policy("policies: [{repositories: ['**'], keep: [{newest: 1}]}]")
    assert not plain.uses_pulls
    assert plain.longest_pulled_within is None
    two = parse_policy(
        "policies:\n  - {repositories: [a], keep: [{pulled_within: 7d}]}\n"
        "  - {repositories: ['**'], keep: [{newest: 1}, {pulled_within: 90d}]}\n"
    )
    assert two.longest_pulled_within == 90 * DAY


def test_pulled_within_alone_is_a_rule() -> None:
    assert parse_policy(
        "policies: [{repositories: ['**'], keep: [{pulled_within: 7d}]}]"
    ).uses_pulls


@pytest.mark.parametrize(
    ("value", "problem"),
    [("7 days", "7 days"), ("true", "must be a duration"), ("[1]", "must be a duration"),
     (".inf", "invalid duration")],
)  # fmt: skip
def test_a_bad_pulled_within_names_the_field_and_line(value: str, problem: str) -> None:
    text = (
        "policies:\n  - repositories: [a]\n    keep:\n      - tags: [x]\n"
        f"        pulled_within: {value}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, "p.yaml")
    message = str(caught.value)
    assert message.startswith("p.yaml:line 5: policies[0].keep[0].pulled_within: "), message
    assert problem in message
    assert message.count("pulled_within") == 1, message


def test_describe_explains_pulled_within_and_the_safe_default() -> None:
    loaded = parse_policy(
        "policies:\n  - repositories: ['**']\n    keep:\n      - tags: ['^v']\n"
        "        pulled_within: 30d\n",
        "p.yaml",
    )
    lines = list(describe(loaded))
    assert "  keep[0](line 4): tags ^v; pulled within 30d" in lines
    text = "\n".join(lines)
    assert "by any tag or by digest" in text
    assert "--pulls-db" in text
    assert "too recently" in text
    # A file without pulled_within says nothing about pulls.
    plain = "\n".join(
        describe(parse_policy("policies: [{repositories: ['**'], keep: [{newest: 1}]}]"))
    )
    assert "pull" not in plain
