"""A dry run: every planned deletion is recorded as one that would happen."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from regcleaner.digest import Digest
from regcleaner.planner import Decision
from regcleaner.removers.base import Outcome, Removal, WaveContext
from regcleaner.snapshots import RepositorySnapshot


class DryRunRemover:
    """Deletes nothing. The engine plans exactly as for a real run."""

    name = "dry-run"
    watches_pushes = False  # nothing is deleted, so nothing needs protecting from a race
    requests = 0
    parallel_repositories: int | None = None

    def __init__(self, *, needs_history: bool = False) -> None:
        # A dry run of direct removal reads the tag history a real one needs, so that
        # it meets the same problems the real run would, and removes tags as it would.
        self.needs_history = needs_history
        self.removes_tags = needs_history

    def no_more_repositories(self) -> None:
        pass

    async def remove_tags(
        self, repository: str, snapshot: RepositorySnapshot, tags: Sequence[tuple[str, Digest]]
    ) -> dict[str, str | None]:
        return dict.fromkeys((tag for tag, _ in tags), None)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def remove_wave(
        self,
        repository: str,
        snapshot: RepositorySnapshot,
        wave: Sequence[Decision],
        context: WaveContext,
    ) -> None:
        for decision in wave:
            why = context.skip(decision.digest)
            if why is not None:
                context.record(Removal(decision.digest, Outcome.KEPT, reason=why))
            else:
                context.record(Removal(decision.digest, Outcome.WOULD_DELETE))
