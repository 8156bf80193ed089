"""Pure: a retention policy file → which tags of a repository expire, with reasons.

The file (YAML or JSON):

    policies:                        # the first policy whose repositories match applies
      - repositories: ["ci/**", "team-*/app"]   # * stays within a segment, ** crosses
        keep:                        # a tag survives if ANY rule keeps it
          - tags: ["^latest$"]       # regexes, anchored as written; absent: every tag
          - tags: ["^main-"]
            newest: 3                # among the tags this rule matches, by push time
          - pushed_within: 7d
        keep_at_least: 1             # default 1: never expire every tag of a repository

A pattern matches a tag when it matches anywhere in it (Python's ``re.search``): the
anchors ``^`` and ``$`` are what makes it match the whole tag, so ``^main-`` keeps every
tag that starts with ``main-`` and ``^latest$`` only ``latest``. (For a keep rule,
matching more is the safe side: a pattern that matched less than its author meant would
expire tags they wanted.)

A rule keeps a tag when the tag matches its ``tags`` and, if ``newest``,
``pushed_within`` and/or ``pulled_within`` are given, the tag is among the newest N
(fewer than N matching tags were pushed strictly later: ties at the boundary are all
kept), or was pushed within the duration, or its digest was pulled within the duration
(by any tag or by digest; see below). Attached-artifact tags never match or count:
cosign's ``sha256-<hex>.sig``, ``.att``, ``.sbom``, and the OCI 1.1 referrers tag
schema ``sha256-<hex>`` (the index of an image's referrers, which oras, notation and
cosign write on a registry without a referrers API). They live as long as the digest
they name (see ``tagplan``). A repository no policy matches keeps every tag. Push time
is the tag's ``current/link`` mtime (LastModified on S3).

Pull times come from the pull record (``regcleaner events serve``), which the caller
reads and passes as ``RepositoryPulls``. A digest with no pull inside the period counts
as "not pulled" only if recording covered the whole period; otherwise nobody knows, and
the rule keeps the tag with a reason that says recording began too recently (the three
answers are ``events.decision``'s). Without a pull record at all, no tag expires on pull
grounds.

This module is the pure decision; ``policyfile`` reads and validates the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from regcleaner.digest import Digest
from regcleaner.events.decision import (
    PullVerdict,
    decide_pulled_within,
    format_time,
    last_pull_of_tagged_digest,
)

if TYPE_CHECKING:
    from regcleaner.events.store import TagPull

ATTACHED_TAG = re.compile(r"sha256-([0-9a-f]{64})(?:\.(?:sig|att|sbom))?")
"""cosign's signature, attestation and SBOM tags, and the OCI 1.1 referrers tag schema
(no suffix)."""


def attached_digest(tag: str) -> Digest | None:
    """The digest an attached-artifact tag follows (``sha256-<hex>.sig`` signs
    ``sha256:<hex>``; ``sha256-<hex>`` lists its referrers), or None for any other tag."""
    found = ATTACHED_TAG.fullmatch(tag)
    return Digest(f"sha256:{found.group(1)}") if found else None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``keep`` entry."""

    patterns: tuple[re.Pattern[str], ...] | None
    newest: int | None
    pushed_within_s: float | None
    label: str
    """How the report names it: ``keep[1](line 7)``."""
    pushed_within_text: str = ""
    pulled_within_s: float | None = None
    """Keep the tag if its digest was pulled at most this long ago."""
    pulled_within_text: str = ""

    def matches(self, tag: str) -> bool:
        return self.patterns is None or any(p.search(tag) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class RepositoryPolicy:
    """One entry of ``policies``."""

    globs: tuple[str, ...]
    matchers: tuple[re.Pattern[str], ...]
    rules: tuple[Rule, ...]
    keep_at_least: int
    label: str

    def applies_to(self, repository: str) -> bool:
        return any(m.fullmatch(repository) for m in self.matchers)

    @property
    def uses_pulls(self) -> bool:
        """True if a rule of this policy reads pull times (``pulled_within``)."""
        return any(rule.pulled_within_s is not None for rule in self.rules)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """A whole policy file."""

    policies: tuple[RepositoryPolicy, ...]
    source: str

    @property
    def uses_pulls(self) -> bool:
        """True if a rule reads pull times (``pulled_within``): the run needs the pull
        record."""
        return any(policy.uses_pulls for policy in self.policies)

    @property
    def longest_pulled_within(self) -> float | None:
        """The longest ``pulled_within`` period of any rule, in seconds (None: no rule
        reads pulls): recording must cover it before any rule can call a tag unpulled."""
        periods = [
            rule.pulled_within_s for policy in self.policies for rule in policy.rules
            if rule.pulled_within_s is not None
        ]  # fmt: skip
        return max(periods, default=None)

    def for_repository(self, repository: str) -> RepositoryPolicy | None:
        """The first policy whose repositories match, or None (keep every tag)."""
        for policy in self.policies:
            if policy.applies_to(repository):
                return policy
        return None


class TagVerdict(NamedTuple):
    """Whether a tag survives the policy, and why."""

    keep: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RepositoryPulls:
    """What the pull record says about one repository, read by the caller (the engine
    reads ``PullHistory`` once per repository), so that the decision stays pure."""

    digests: Mapping[str, float]
    """Each recorded digest's last pull, by any tag or by digest
    (``PullHistory.repository_pulls``)."""
    tags: Mapping[str, TagPull]
    """Each recorded tag's last pull by that tag (``PullHistory.repository_tag_pulls``)."""
    covered_since: float | None
    """Since when every pull the registry served is recorded (None: never)."""

    def last_pulls(
        self, tag_digests: Mapping[str, str], tag_times: Mapping[str, float]
    ) -> dict[str, float | None]:
        """The last pull of the digest each tag points at: by digest, or by any tag that
        served it (a pull by a tag counts for the digest it served, and one seen only in
        an access log for the digest that tag points at now, if it came after the tag's
        last push; see ``last_pull_of_tagged_digest``)."""
        by_digest: dict[str, float | None] = {}
        for tag, digest in tag_digests.items():
            known = by_digest.get(digest, self.digests.get(digest))
            pulled = self.tags.get(tag)
            if pulled is not None:
                known = last_pull_of_tagged_digest(
                    digest, known, pulled.at, pulled.digest, tag_times.get(tag)
                )
            by_digest[digest] = known
        return {tag: by_digest[digest] for tag, digest in tag_digests.items()}


NO_PULL_RECORD = RepositoryPulls({}, {}, None)
"""What a caller without a pull record passes: nothing is known to be unpulled."""


def _last_pull_note(last: float | None) -> str:
    return "never pulled" if last is None else f"last pulled {format_time(last)}"


def decide_tags(
    policy: RepositoryPolicy | None,
    tag_times: Mapping[str, float],
    now: float,
    *,
    tag_digests: Mapping[str, str] | None = None,
    pulls: RepositoryPulls | None = None,
) -> dict[str, TagVerdict]:
    """The verdict for every tag of a repository (attached-artifact tags excluded: they
    follow their digest, see ``attached_digest``). Linear in the number of tags (plus one sort
    per rule that counts the newest).

    ``tag_digests`` (each tag's digest) and ``pulls`` are read only by ``pulled_within``
    rules; without them such a rule keeps every tag it matches (nothing is known to be
    unpulled). When the policy reads pulls, every verdict says the tag's last pull."""
    tags = [t for t in tag_times if attached_digest(t) is None]
    if policy is None:
        return {t: TagVerdict(True, "no-policy") for t in tags}
    record = pulls if pulls is not None else NO_PULL_RECORD
    last_pulls: Mapping[str, float | None] = {}
    if policy.uses_pulls:
        last_pulls = record.last_pulls(
            {t: digest for t in tags if (digest := (tag_digests or {}).get(t)) is not None},
            tag_times,
        )
    verdicts: dict[str, TagVerdict] = {}
    said_pull: set[str] = set()
    """Tags whose reason already gives their pull (a ``pulled_within`` rule kept them)."""
    for rule in policy.rules:
        matching = [t for t in tags if rule.matches(t)]
        if rule.newest is None and rule.pushed_within_s is None and rule.pulled_within_s is None:
            for tag in matching:
                verdicts.setdefault(tag, TagVerdict(True, f"{rule.label}:matches"))
            continue
        newest: set[str] = set()
        if rule.newest is not None and rule.newest > 0:
            # Fewer than N tags pushed strictly later: every tag tied at the boundary stays.
            ordered = sorted(matching, key=lambda t: tag_times[t], reverse=True)
            if len(ordered) > rule.newest:
                boundary = tag_times[ordered[rule.newest - 1]]
                newest = {t for t in ordered if tag_times[t] >= boundary}
            else:
                newest = set(ordered)
        for tag in matching:
            if tag in verdicts:
                continue  # an earlier rule keeps it
            if tag in newest:
                verdicts[tag] = TagVerdict(True, f"{rule.label}:newest-{rule.newest}")
            elif rule.pushed_within_s is not None and now - tag_times[tag] <= rule.pushed_within_s:
                verdicts[tag] = TagVerdict(True, f"{rule.label}:pushed-within")
            elif rule.pulled_within_s is not None:
                last = last_pulls.get(tag)
                pulled = decide_pulled_within(last, record.covered_since, rule.pulled_within_s, now)
                if pulled.keeps:
                    said_pull.add(tag)
                if pulled.verdict is PullVerdict.PULLED_WITHIN:
                    verdicts[tag] = TagVerdict(True, f"{rule.label}:pulled-within: {pulled.reason}")
                elif pulled.keeps:  # nobody knows: recording began inside the period
                    known = "" if last is None else f"; {_last_pull_note(last)}"
                    verdicts[tag] = TagVerdict(
                        True, f"{rule.label}:pulled-within-unknown: {pulled.reason}{known}"
                    )
    expired = f"expired:{policy.label}"
    for tag in tags:
        if tag not in verdicts:
            why = expired
            if policy.uses_pulls:
                since = record.covered_since
                recording = "no pull recording" if since is None else (
                    f"recording since {format_time(since)}")  # fmt: skip
                why = f"{expired}: {_last_pull_note(last_pulls.get(tag))} ({recording})"
            verdicts[tag] = TagVerdict(False, why)
    kept = sum(1 for v in verdicts.values() if v.keep)
    if kept < policy.keep_at_least:
        spare = sorted((t for t in tags if not verdicts[t].keep),
                       key=lambda t: tag_times[t], reverse=True)  # fmt: skip
        for tag in spare[: policy.keep_at_least - kept]:
            verdicts[tag] = TagVerdict(True, f"keep-at-least-{policy.keep_at_least}")
    if policy.uses_pulls:
        for tag, verdict in verdicts.items():
            if verdict.keep and tag not in said_pull:
                note = _last_pull_note(last_pulls.get(tag))
                verdicts[tag] = TagVerdict(True, f"{verdict.reason}; {note}")
    return verdicts


PULLS_EXPLAINED = (
    "pulled within D: a tag stays if its digest was pulled in the last D,",
    "  by any tag or by digest, as the --pulls-db file of `regcleaner events serve` records it.",
    "  Safe default: a digest with no pull on record counts as not pulled only if recording",
    "  covered the whole period D; if recording began too recently, the tag is kept,",
    "  and its reason says so.",
    "  Not seen: pulls that a pull-through cache, a CDN or a node's image cache serves",
    "  without asking the registry; such images look unpulled (see docs/pulls.md).",
)
"""What ``policy check`` adds when a rule reads pulls."""


def describe(policy: RetentionPolicy) -> Iterable[str]:
    """Lines summarising a validated policy, for ``regcleaner policy check``."""
    for number, entry in enumerate(policy.policies):
        yield f"policies[{number}]: repositories {', '.join(entry.globs)}"
        for rule in entry.rules:
            parts = []
            if rule.patterns is not None:
                parts.append("tags " + ", ".join(p.pattern for p in rule.patterns))
            else:
                parts.append("every tag")
            if rule.newest is not None:
                parts.append(f"newest {rule.newest}")
            if rule.pushed_within_s is not None:
                parts.append(f"pushed within {rule.pushed_within_text}")
            if rule.pulled_within_s is not None:
                parts.append(f"pulled within {rule.pulled_within_text}")
            yield f"  {rule.label}: " + "; ".join(parts)
        yield f"  keep at least {entry.keep_at_least} tag(s) per repository"
    if policy.uses_pulls:
        yield from PULLS_EXPLAINED
