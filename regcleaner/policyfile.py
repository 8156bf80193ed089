"""The retention policy file: read YAML or JSON, validate every field up front, and
build ``retention``'s values. An error names the file, the field's path and its line.
(The decision itself, which tags expire, is ``retention``: pure, no file, no YAML.)"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from regcleaner.errors import ConfigError
from regcleaner.globs import compile_glob
from regcleaner.quantities import parse_duration
from regcleaner.retention import RepositoryPolicy, RetentionPolicy, Rule

_RULE_KEYS = frozenset({"tags", "newest", "pushed_within", "pulled_within"})
_POLICY_KEYS = frozenset({"repositories", "keep", "keep_at_least"})


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
    within = _duration(fields, "pushed_within", field, source)
    pulled = _duration(fields, "pulled_within", field, source)
    if patterns is None and newest is None and within is None and pulled is None:
        raise _fail(source, field, entry.line,
                    "a rule needs tags, newest, pushed_within or pulled_within (an empty "
                    "rule keeps every tag; say so with tags: ['.*'])")  # fmt: skip
    return Rule(
        patterns, newest, within, f"{field.rsplit('.', 1)[-1]}(line {entry.line})",
        str(fields["pushed_within"].value) if within is not None else "",
        pulled, str(fields["pulled_within"].value) if pulled is not None else "",
    )  # fmt: skip


def _duration(fields: dict[str, _Located], key: str, rule: str, source: str) -> float | None:
    """A rule's duration field (``pushed_within``, ``pulled_within``) in seconds, or None
    when absent; ConfigError naming the field and line."""
    if key not in fields:
        return None
    item = fields[key]
    if isinstance(item.value, bool) or not isinstance(item.value, str | int | float):
        raise _fail(source, f"{rule}.{key}", item.line, "must be a duration such as 7d or 12h")
    try:
        seconds = parse_duration(str(item.value), key)
    except ConfigError as exc:
        # parse_duration names the option first; the field path already says it.
        problem = str(exc).removeprefix(f"{key}: ")
        raise _fail(source, f"{rule}.{key}", item.line, problem) from None
    if not math.isfinite(seconds):
        raise _fail(source, f"{rule}.{key}", item.line, "must be finite")
    return seconds
