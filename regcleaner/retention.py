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

A rule keeps a tag when the tag matches its ``tags`` and, if ``newest`` and/or
``pushed_within`` are given, the tag is among the newest N (fewer than N matching tags
were pushed strictly later: ties at the boundary are all kept) or was pushed within the
duration. Attached-artifact tags never match or count: cosign's ``sha256-<hex>.sig``, ``.att``,
``.sbom``, and the OCI 1.1 referrers tag schema ``sha256-<hex>`` (the index of an
image's referrers, which oras, notation and cosign write on a registry without a
referrers API). They live as long as the digest they name (see ``tagplan``). A
repository no policy matches keeps every tag. Push time is the tag's ``current/link``
mtime (LastModified on S3).

This module is the pure decision; ``policyfile`` reads and validates the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from regcleaner.digest import Digest

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
    pushed_within_text: str = ""
    """How the report names it: ``keep[1](line 7)``."""

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


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """A whole policy file."""

    policies: tuple[RepositoryPolicy, ...]
    source: str

    @property
    def uses_pulls(self) -> bool:
        """True if a rule reads pull times (``pulled_within``): the run needs the pull
        record. No rule does yet."""
        return False

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


def decide_tags(
    policy: RepositoryPolicy | None, tag_times: Mapping[str, float], now: float
) -> dict[str, TagVerdict]:
    """The verdict for every tag of a repository (attached-artifact tags excluded: they
    follow their digest, see ``attached_digest``). Linear in the number of tags (plus one sort
    per rule that counts the newest)."""
    tags = [t for t in tag_times if attached_digest(t) is None]
    if policy is None:
        return {t: TagVerdict(True, "no-policy") for t in tags}
    verdicts: dict[str, TagVerdict] = {}
    for rule in policy.rules:
        matching = [t for t in tags if rule.matches(t)]
        if rule.newest is None and rule.pushed_within_s is None:
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
            if tag in newest:
                verdicts.setdefault(tag, TagVerdict(True, f"{rule.label}:newest-{rule.newest}"))
            elif rule.pushed_within_s is not None and now - tag_times[tag] <= rule.pushed_within_s:
                verdicts.setdefault(tag, TagVerdict(True, f"{rule.label}:pushed-within"))
    for tag in tags:
        verdicts.setdefault(tag, TagVerdict(False, f"expired:{policy.label}"))
    kept = sum(1 for v in verdicts.values() if v.keep)
    if kept < policy.keep_at_least:
        spare = sorted((t for t in tags if not verdicts[t].keep),
                       key=lambda t: tag_times[t], reverse=True)  # fmt: skip
        for tag in spare[: policy.keep_at_least - kept]:
            verdicts[tag] = TagVerdict(True, f"keep-at-least-{policy.keep_at_least}")
    return verdicts


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
            yield f"  {rule.label}: " + "; ".join(parts)
        yield f"  keep at least {entry.keep_at_least} tag(s) per repository"
