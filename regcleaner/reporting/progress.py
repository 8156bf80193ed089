"""Live progress of a clean and of a blob collection: bars on a terminal, a log line
at an interval otherwise."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Generic, TypeVar

from regcleaner.reporting.collection import GcReport
from regcleaner.reporting.console import stderr_console
from regcleaner.reporting.run import RunReport

R = TypeVar("R")
log = logging.getLogger("regcleaner")


class PeriodicProgress(Generic[R]):
    """Live bars on a terminal, a log line every ``interval_s`` otherwise (nothing with
    an interval of 0). Subclasses say what: ``line`` and ``_bars``."""

    def __init__(self, report: R, *, interval_s: float, terminal: bool | None = None):
        self._report = report
        self._interval = interval_s
        self._terminal = sys.stderr.isatty() if terminal is None else terminal

    def line(self) -> str:
        """One line describing where the work is."""
        raise NotImplementedError

    async def _bars(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Report until cancelled (the caller's task group owns this task)."""
        if self._interval <= 0:
            return
        if self._terminal:
            await self._bars()
        else:
            while True:
                await asyncio.sleep(self._interval)
                log.info("progress: %s", self.line())


class RunProgress(PeriodicProgress[RunReport]):
    """Progress of a clean: scan and deletions."""

    def line(self) -> str:
        """One line describing where the run is."""
        c = self._report.counters
        elapsed = max(self._report.duration_s, 1e-9)
        text = f"{c.scanned_repositories:,} repositories, {c.scanned_manifests:,} manifests scanned"
        if self._report.dry_run:
            return text + f", {c.would_delete:,} would be deleted"
        return text + (
            f", deleted {c.deleted:,}/{c.planned:,} ({c.deleted / elapsed:,.0f}/s),"
            f" {c.failed:,} failed"
        )

    async def _bars(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        c = self._report.counters
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
        )
        with Progress(*columns, console=stderr_console(), transient=True) as bars:
            scan = bars.add_task("scan  ", total=None, detail="")
            delete = None if self._report.dry_run else bars.add_task("delete", total=0, detail="")
            while True:
                bars.update(
                    scan,
                    completed=c.scanned_repositories,
                    detail=f"{c.scanned_manifests:,} manifests, "
                    f"{c.would_delete + c.planned:,} to delete",
                )
                if delete is not None:
                    elapsed = max(self._report.duration_s, 1e-9)
                    bars.update(
                        delete,
                        total=max(c.planned, 1),
                        completed=c.deleted,
                        detail=f"{c.deleted / elapsed:,.0f}/s, {c.failed:,} failed",
                    )
                await asyncio.sleep(0.2)


class GcProgress(PeriodicProgress[GcReport]):
    """Progress lines (or bars on a terminal) while a collection runs."""

    def line(self) -> str:
        """One line describing where the collection is."""
        c = self._report.counters
        return (
            f"mark: {c.repositories:,} repositories, {c.manifests:,} manifests; "
            f"sweep: {c.prefixes_listed:,}/{c.prefixes:,} blob folders listed, "
            f"{c.blobs:,} blobs, {c.to_sweep:,} unmarked, {c.swept:,} swept"
        )

    async def _bars(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        c = self._report.counters
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[detail]}"))  # fmt: skip
        with Progress(*columns, console=stderr_console(), transient=True) as bars:
            mark = bars.add_task("mark ", total=None, detail="")
            sweep = bars.add_task("sweep", total=None, detail="")
            while True:
                bars.update(mark, completed=c.repositories, detail=f"{c.manifests:,} manifests")
                bars.update(
                    sweep,
                    total=c.prefixes or None,
                    completed=c.prefixes_listed,
                    detail=f"{c.to_sweep:,} unmarked, {c.swept:,} swept",
                )
                await asyncio.sleep(0.2)
