"""The seam between the engine and the way deletions happen.

The engine plans a repository and hands each wave of deletions to one ``Remover``:
``ApiRemover`` (DELETE through the registry API), ``DirectRemover`` (remove the links
from storage in a maintenance window) or ``DryRunRemover`` (record only). The engine
does not know which; it only reads the capabilities below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from enum import Enum
from typing import NamedTuple, Protocol

from regcleaner.digest import Digest
from regcleaner.planner import Decision, Reason
from regcleaner.snapshots import RepositorySnapshot

GONE_BEFORE_REMOVAL = "gone-before-removal"
"""``remove_tags``: the tag was already gone (nothing to remove, nothing kept)."""
MOVED_SINCE_PLAN = "moved-since-plan:"
"""``remove_tags``: the tag now points at the digest that follows (it stays)."""


class Outcome(Enum):
    """How the removal of one manifest ended."""

    DELETED = "deleted"
    WOULD_DELETE = "would_delete"
    ALREADY_GONE = "already_gone"
    FAILED = "failed"
    KEPT = "kept"
    """Not removed after all, for ``reason`` (a push seen at the last look, a stop)."""


class Removal(NamedTuple):
    """The outcome of removing one manifest."""

    digest: Digest
    outcome: Outcome
    detail: str = ""
    reason: Reason | None = None
    """Why it was kept (KEPT) or found gone (ALREADY_GONE)."""
    attempts: int = 1


class WaveContext(Protocol):
    """What the engine lends a remover for one wave of one repository."""

    def skip(self, digest: Digest) -> Reason | None:
        """A reason not to remove ``digest`` now (a parent kept, a stop), checked right
        before it is removed; None to go on."""
        ...

    def admit(self, digest: Digest) -> Awaitable[Reason | None]:
        """Before waiting for the rate limit: a reason not to send (None: go on). May
        wait, e.g. until a first DELETE proved the URL serves this storage."""
        ...

    def last_look(self, digest: Digest) -> Awaitable[Reason | None]:
        """Right before a request is sent: a reason to keep ``digest`` after all."""
        ...

    async def confirm(self, removal: Removal) -> None:
        """After a DELETE's answer (API): lets the engine check the answer against
        storage before more go out."""
        ...

    def fatal(self, error: BaseException) -> None:
        """An error that ends the run: the engine stops starting new work."""
        ...

    def record(self, removal: Removal) -> None:
        """The outcome of one decision, as soon as it is known (exactly one per
        decision, unless the wave is abandoned at a stop)."""
        ...


class Remover(Protocol):
    """Carries out deletions, one wave of one repository at a time."""

    name: str
    """``api``, ``direct`` or ``dry-run``, for logs and the report."""
    watches_pushes: bool
    """True when the registry may be written meanwhile, so the engine re-reads storage
    before a repository's deletions and watches it for pushes while they run."""
    needs_history: bool
    """True when removal needs each tag's ``index/`` history in the snapshot."""
    removes_tags: bool
    """True when a tag can go alone (its folder removed); else a tag goes only with
    its digest (the registry API: a DELETE by digest removes every tag on it)."""
    requests: int
    """Requests made to carry out removals (DELETEs, or store delete requests)."""
    parallel_repositories: int | None
    """How many repositories may be in removal at once; None: the engine derives it
    from ``--concurrency``."""

    def session(self) -> AbstractAsyncContextManager[None]:
        """Open for the run: check that removal can work (ping the registry, prove it
        is read-only), and own any background work until the block ends."""
        ...

    def no_more_repositories(self) -> None:
        """The scan has handed over its last repository (a remover that gathers work
        from many repositories need not wait for more)."""
        ...

    async def remove_tags(
        self, repository: str, snapshot: RepositorySnapshot, tags: Sequence[tuple[str, Digest]]
    ) -> dict[str, str | None]:
        """Remove these tags (only when ``removes_tags``), each only if it still points
        at the digest given; per tag None when removed, else why it stays."""
        ...

    async def remove_wave(
        self,
        repository: str,
        snapshot: RepositorySnapshot,
        wave: Sequence[Decision],
        context: WaveContext,
    ) -> None:
        """Remove one wave's manifests, recording each outcome through ``context``."""
        ...
