"""Repository selection by glob (``--include``/``--exclude``)."""

from __future__ import annotations

import fnmatch


def repository_selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Apply ``--include``/``--exclude`` globs (exclude wins)."""
    if include and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)
