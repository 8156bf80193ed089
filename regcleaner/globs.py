"""Repository globs, for ``--include``/``--exclude`` and retention policies.

``*`` and ``?`` stay within one path segment (they never match ``/``); ``**`` crosses
segments: ``ci/**`` matches ``ci/app`` and ``ci/team/app``, ``**/app`` matches ``app``
and ``team/app``, ``team-*/app`` matches ``team-a/app`` but not ``team-a/x/app``.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression a repository glob stands for (whole-name match)."""
    if not pattern:
        raise ValueError("an empty glob matches nothing")
    # ``**/**`` crosses segments just as one ``**`` does: collapse repeated ``**``
    # segments first, so ``a/**/**`` matches ``a`` as ``a/**`` does.
    segments: list[str] = []
    for segment in pattern.split("/"):
        if segment != "**" or not segments or segments[-1] != "**":
            segments.append(segment)
    pattern = "/".join(segments)
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")  # zero or more whole segments
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            parts.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def glob_matches(pattern: str, name: str) -> bool:
    """True if the repository ``name`` matches ``pattern``."""
    return compile_glob(pattern).fullmatch(name) is not None


def repository_selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Apply ``--include``/``--exclude`` globs (exclude wins)."""
    if include and not any(glob_matches(pattern, name) for pattern in include):
        return False
    return not any(glob_matches(pattern, name) for pattern in exclude)


def shard_of(name: str, count: int) -> int:
    """Stable shard of a repository name: the same on every machine and every run."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def repository_in_view(
    name: str, include: tuple[str, ...], exclude: tuple[str, ...], shard: tuple[int, int] | None
) -> bool:
    """True if this run looks at repository ``name``: selected by ``--include`` and
    ``--exclude``, and in shard ``shard[0]`` of ``shard[1]`` when ``--shard`` is given."""
    if not repository_selected(name, include, exclude):
        return False
    return shard is None or shard_of(name, shard[1]) == shard[0]
