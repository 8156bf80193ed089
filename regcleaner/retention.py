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
duration. Cosign-style tags (``sha256-<hex>.sig``, ``.att``, ``.sbom``) never match or
count: they live as long as the digest they sign. A repository no policy matches keeps
every tag. Push time is the tag's ``current/link`` mtime (LastModified on S3).

Everything is validated up front; an error names the field and its line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from regcleaner.config import parse_duration
from regcleaner.errors import ConfigError
from regcleaner.globs import compile_glob

SIGNATURE_TAG = re.compile(r"sha256-([0-9a-f]{64})\.(?:sig|att|sbom)")
_RULE_KEYS = frozenset({"tags", "newest", "pushed_within"})
_POLICY_KEYS = frozenset({"repositories", "keep", "keep_at_least"})


def signed_digest(tag: str) -> str | None:
    """``sha256:<hex>`` for a cosign-style signature tag, else None."""
    found = SIGNATURE_TAG.fullmatch(tag)
    return f"sha256:{found.group(1)}" if found else None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``keep`` entry."""

    patterns: tuple[re.Pattern[str], ...] | None
    newest: int | None
    pushed_within_s: float | None
    label: str
    pushed_within_text: str = ""
    """How the report names it: ``keep[1]`` (line 7)."""

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
    """The verdict for every tag of a repository (signature tags excluded: they follow
    their digest, see ``signed_digest``). Linear in the number of tags (plus one sort
    per rule that counts the newest)."""
    tags = [t for t in tag_times if signed_digest(t) is None]
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


# -- loading --------------------------------------------------------------------------


class _Located(NamedTuple):
    value: Any
    line: int


def _scalar_node(node: Any) -> Any:
    """The plain value of a scalar YAML node (YAML 1.1 rules, as safe_load reads it)."""
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_policy(path: str) -> RetentionPolicy:
    """Read and validate a policy file; ConfigError naming the field and line."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"policy file {path} is not UTF-8 text") from None
    return parse_policy(text, path)


def parse_policy(text: str, source: str = "policy") -> RetentionPolicy:
    """Parse YAML (JSON is YAML) into a validated policy."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}:{where}: not valid YAML or JSON: {problem}") from None
    if root is None:
        raise ConfigError(f"{source}: empty policy file")
    try:
        document = _to_values(root)
    except ConfigError as exc:
        raise ConfigError(f"{source}:{exc}") from None
    return _validate(document, source)


def _to_values(node: Any, field: str = "") -> _Located:
    """Plain values with their lines; ``field`` is the node's path as validation names
    it (``policies[0].keep[1]``), so a duplicate or non-string key is reported like any
    other bad field."""
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, _Located] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            scalar = isinstance(key_node, yaml.ScalarNode)
            key = _scalar_node(key_node) if scalar else None
            if not isinstance(key, str):
                shown = repr(key) if scalar else "a mapping or list"
                raise ConfigError(f"line {key_line}: {field or '(top)'}: keys must be names, "
                                  f"not {shown}")  # fmt: skip
            path = f"{field}.{key}" if field else key
            if key in result:
                raise ConfigError(f"line {key_line}: {path}: given twice (first at line "
                                  f"{result[key].line})")  # fmt: skip
            # A field is reported at its key's line.
            result[key] = _Located(_to_values(value_node, path).value, key_line)
        return _Located(result, line)
    if isinstance(node, yaml.SequenceNode):
        return _Located(
            [_to_values(item, f"{field}[{i}]") for i, item in enumerate(node.value)], line
        )
    return _Located(_scalar_node(node), line)


def _fail(source: str, field: str, line: int, problem: str) -> ConfigError:
    return ConfigError(f"{source}:line {line}: {field}: {problem}")


def _mapping(
    item: _Located, field: str, source: str, allowed: frozenset[str]
) -> dict[str, _Located]:
    if not isinstance(item.value, dict):
        raise _fail(source, field, item.line, "must be a mapping")
    for key, value in item.value.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise _fail(source, f"{field}.{key}", value.line, f"unknown key (known: {known})")
    return item.value


def _string_list(item: _Located, field: str, source: str) -> list[_Located]:
    if not isinstance(item.value, list) or not item.value:
        raise _fail(source, field, item.line, "must be a non-empty list of strings")
    for entry in item.value:
        if not isinstance(entry.value, str) or not entry.value:
            raise _fail(source, field, entry.line, "must be a non-empty string")
    return item.value


def _validate(document: _Located, source: str) -> RetentionPolicy:
    top = _mapping(document, "(top)", source, frozenset({"policies"}))
    if "policies" not in top:
        raise _fail(source, "policies", document.line, "missing")
    entries = top["policies"]
    if not isinstance(entries.value, list) or not entries.value:
        raise _fail(source, "policies", entries.line, "must be a non-empty list")
    policies = [
        _validate_policy(entry, f"policies[{i}]", source) for i, entry in enumerate(entries.value)
    ]
    return RetentionPolicy(tuple(policies), source)


def _validate_policy(entry: _Located, field: str, source: str) -> RepositoryPolicy:
    fields = _mapping(entry, field, source, _POLICY_KEYS)
    for required in ("repositories", "keep"):
        if required not in fields:
            raise _fail(source, f"{field}.{required}", entry.line, "missing")
    globs = _string_list(fields["repositories"], f"{field}.repositories", source)
    matchers = []
    for glob in globs:
        try:
            matchers.append(compile_glob(glob.value))
        except ValueError as exc:
            raise _fail(source, f"{field}.repositories", glob.line, str(exc)) from None
    keep = fields["keep"]
    if not isinstance(keep.value, list) or not keep.value:
        raise _fail(source, f"{field}.keep", keep.line,
                    "must be a non-empty list of rules (a policy that keeps nothing would "
                    "expire every tag)")  # fmt: skip
    rules = [
        _validate_rule(rule, f"{field}.keep[{i}]", source) for i, rule in enumerate(keep.value)
    ]
    at_least = 1
    if "keep_at_least" in fields:
        at_least = _count(fields["keep_at_least"], f"{field}.keep_at_least", source)
    return RepositoryPolicy(
        tuple(g.value for g in globs), tuple(matchers), tuple(rules), at_least,
        f"{field}(line {entry.line})",
    )  # fmt: skip


def _count(item: _Located, field: str, source: str) -> int:
    value = item.value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(source, field, item.line, f"must be a whole number >= 0, not {value!r}")
    return value


def _validate_rule(entry: _Located, field: str, source: str) -> Rule:
    fields = _mapping(entry, field, source, _RULE_KEYS)
    patterns: tuple[re.Pattern[str], ...] | None = None
    if "tags" in fields:
        compiled = []
        for item in _string_list(fields["tags"], f"{field}.tags", source):
            try:
                compiled.append(re.compile(item.value))
            except re.error as exc:
                raise _fail(source, f"{field}.tags", item.line,
                            f"bad regex {item.value!r}: {exc}") from None  # fmt: skip
        patterns = tuple(compiled)
    newest = None
    if "newest" in fields:
        newest = _count(fields["newest"], f"{field}.newest", source)
    within = None
    if "pushed_within" in fields:
        item = fields["pushed_within"]
        if isinstance(item.value, bool) or not isinstance(item.value, str | int | float):
            raise _fail(source, f"{field}.pushed_within", item.line,
                        "must be a duration such as 7d or 12h")  # fmt: skip
        try:
            within = parse_duration(str(item.value), "pushed_within")
        except ConfigError as exc:
            # parse_duration names the option first; the field path already says it.
            problem = str(exc).removeprefix("pushed_within: ")
            raise _fail(source, f"{field}.pushed_within", item.line, problem) from None
        if not math.isfinite(within):
            raise _fail(source, f"{field}.pushed_within", item.line, "must be finite")
    if patterns is None and newest is None and within is None:
        raise _fail(source, field, entry.line,
                    "a rule needs tags, newest or pushed_within (an empty rule keeps "
                    "every tag; say so with tags: ['.*'])")  # fmt: skip
    text = str(fields["pushed_within"].value) if within is not None else ""
    return Rule(patterns, newest, within, f"{field.rsplit('.', 1)[-1]}(line {entry.line})", text)


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
            yield f"  keep {rule.label}: " + "; ".join(parts)
        yield f"  keep at least {entry.keep_at_least} tag(s) per repository"
