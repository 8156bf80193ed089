"""The walk behind ``regcleaner usage``: every blob in storage, then every repository
through the same view and planner as ``clean``, into a ``UsageLedger``.

Read-only: nothing is written to storage. Every repository is read, whatever
``--include``/``--exclude`` say (they only choose what is shown): a blob is exclusive
only if no repository at all references it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from regcleaner import layout
from regcleaner.blobfolders import list_blobs
from regcleaner.concurrency import Channel
from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.keyset import blob_key
from regcleaner.planner import Policy, needed_manifests
from regcleaner.reporting.progress import PeriodicProgress
from regcleaner.retention import RetentionPolicy
from regcleaner.tagplan import plan_with_tags
from regcleaner.usage.ledger import RepositoryCounts, UsageLedger
from regcleaner.usage.model import gc_marks
from regcleaner.view import BlobInfo, RegistryView, StrayEntry

log = logging.getLogger("regcleaner")


@dataclass(frozen=True, slots=True)
class CleanOptions:
    """The options of the ``clean`` whose outcome ``reclaimable`` predicts."""

    policy: Policy = field(default_factory=Policy)
    retention: RetentionPolicy | None = None
    prune_orphan_signatures: bool = False


@dataclass(slots=True)
class UsageCounters:
    """Running totals, for progress."""

    blob_folders: int = 0
    blob_folders_listed: int = 0
    blobs: int = 0
    repositories: int = 0
    manifests: int = 0
    failed_repositories: int = 0
    started: float = field(default_factory=time.monotonic)


class UsageProgress(PeriodicProgress[UsageCounters]):
    """Progress lines (or bars on a terminal) while usage is measured."""

    def line(self) -> str:
        """Where the measurement is."""
        c = self._report
        return (
            f"blobs: {c.blob_folders_listed:,}/{c.blob_folders:,} folders, {c.blobs:,} blobs; "
            f"repositories: {c.repositories:,}, {c.manifests:,} manifests"
        )

    async def _bars(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from regcleaner.reporting.console import stderr_console

        c = self._report
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[detail]}"))  # fmt: skip
        with Progress(*columns, console=stderr_console(), transient=True) as bars:
            blobs = bars.add_task("blobs       ", total=None, detail="")
            repositories = bars.add_task("repositories", total=None, detail="")
            while True:
                bars.update(blobs, total=c.blob_folders or None, completed=c.blob_folders_listed,
                            detail=f"{c.blobs:,} blobs")  # fmt: skip
                bars.update(repositories, completed=c.repositories,
                            detail=f"{c.manifests:,} manifests")  # fmt: skip
                await asyncio.sleep(0.2)


class UsageScan:
    """One measurement of a registry's storage."""

    def __init__(
        self,
        view: RegistryView,
        ledger: UsageLedger,
        options: CleanOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        progress_interval_s: float = 0.0,
        workers: int | None = None,
    ) -> None:
        self.view = view
        self.ledger = ledger
        self.options = options if options is not None else CleanOptions()
        self.clock = clock
        self.counters = UsageCounters()
        self.progress = UsageProgress(self.counters, interval_s=progress_interval_s)
        self.width = workers or max(4, view.store.listing_concurrency)
        self.warnings: list[str] = []

    @staticmethod
    def _unlisted(text: str) -> None:
        """A blob folder that cannot be listed ends the report: exclusive and
        reclaimable bytes need every blob."""
        raise StorageError(text)

    def _warn(self, text: str) -> None:
        if len(self.warnings) < 1000:
            self.warnings.append(text)
        log.warning("%s", text)

    async def run(self) -> None:
        """Blobs, then repositories; progress meanwhile."""
        await self.view.check()
        async with asyncio.TaskGroup() as group:
            reporter = group.create_task(self.progress.run())
            try:
                await self._blobs()
                await self._repositories()
            finally:
                reporter.cancel()

    # -- blobs ------------------------------------------------------------------------

    async def _blobs(self) -> None:
        counters = self.counters

        def consume(blobs: list[BlobInfo], strays: list[StrayEntry]) -> None:
            for stray in strays:
                self._warn(f"not a blob: {stray}")
            self.ledger.add_blobs((blob_key(b.digest), b.size) for b in blobs)
            counters.blobs += len(blobs)

        def progress(folders: int, listed: int) -> None:
            counters.blob_folders, counters.blob_folders_listed = folders, listed

        await list_blobs(self.view.store, consume, width=self.width, problem=self._unlisted,
                         progress=progress)  # fmt: skip

    # -- repositories -----------------------------------------------------------------

    async def _repositories(self) -> None:
        names: Channel[str] = Channel(self.width * 4)

        async def produce() -> None:
            try:
                await self.view.repositories(names.put)
            finally:
                await names.close()

        async def worker() -> None:
            while (name := await names.get()) is not None:
                await self._repository(name)

        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(self.width):
                group.create_task(worker())

    async def _repository(self, name: str) -> None:
        counters = self.counters
        try:
            snapshot = await self.view.snapshot(name)
            manifests = await self.view.read_manifests(needed_manifests(snapshot))
        except StorageError as exc:
            counters.failed_repositories += 1
            self._warn(f"repository {name}: {exc}; its blobs are not counted")
            self.ledger.add_repository(RepositoryCounts(name, error=str(exc)), set(), set())
            return
        options = self.options
        tag_policy = None if options.retention is None else options.retention.for_repository(name)
        plan, _ = plan_with_tags(
            snapshot, manifests, options.policy, self.clock(), tag_policy=tag_policy,
            prune_orphan_signatures=options.prune_orphan_signatures,
        )  # fmt: skip
        deleted = {decision.digest for decision in plan.delete}
        if not layout.is_valid_repository_name(name):
            deleted = set()  # clean skips such a repository: nothing in it goes
            self._warn(f"repository {name!r}: not a valid repository name; clean keeps it all")
        if plan.blocked:
            self._warn(f"repository {name}: something in it could not be read; clean keeps it")
        revisions = list(snapshot.revisions)
        referenced = gc_marks(revisions, manifests)
        kept = gc_marks((d for d in revisions if d not in deleted), manifests)
        tagged = set(snapshot.tags.values())
        counts = RepositoryCounts(
            name,
            tags=len(snapshot.tags) + len(snapshot.broken_tags),
            manifests=len(revisions),
            untagged_manifests=sum(1 for d in revisions if d not in tagged),
            deletable_manifests=len(deleted),
            blocked=plan.blocked,
        )
        self.ledger.add_repository(counts, _keys(referenced), _keys(kept))
        counters.repositories += 1
        counters.manifests += len(revisions)


def _keys(digests: set[Digest]) -> set[int]:
    return {blob_key(d) for d in digests}
