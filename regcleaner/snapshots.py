"""Values that flow from the registry view to the pure core: what storage says about a
repository at one moment. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from regcleaner.digest import Digest


@dataclass(frozen=True, slots=True)
class RepositorySnapshot:
    """What storage says about one repository at one moment."""

    name: str
    revisions: Mapping[Digest, float]
    """Every manifest of the repository, with its revision link's mtime (epoch seconds)."""
    tags: Mapping[str, Digest]
    """Each tag's ``current/link`` digest."""
    broken_tags: Mapping[str, str] = field(default_factory=dict)
    """Tags whose current link could not be read or parsed, with the problem."""
    tag_times: Mapping[str, float] = field(default_factory=dict)
    """Each tag's push time: its ``current/link`` mtime (LastModified on S3)."""
    doubts: Mapping[str, str] = field(default_factory=dict)
    """Things in the repository's folders regcleaner will not interpret (a symbolic
    link the registry would follow, a special file), e.g. ``{"tag:v1": "symbolic
    link ..."}``: each blocks the repository."""
    tag_history: Mapping[Digest, tuple[str, ...]] | None = None
    """Only when asked for (direct removal): for each digest, the tags whose ``index/``
    history holds it."""
    revision_files: Mapping[Digest, tuple[str, ...]] | None = None
    tag_files: Mapping[str, tuple[str, ...]] | None = None
    """Only when asked for (direct removal): every file in each tag's folder, relative
    to it (``current/link``, ``index/sha256/<hex>/link``)."""
    stamp: float | None = None
    """The revisions folder's mtime, read before the revisions were listed (on a store
    with folders): a later change says a revision folder was added or removed."""
    """Only when asked for (direct removal): files inside a revision's folder besides
    its link (schema1 ``signatures/``), relative to that folder."""
