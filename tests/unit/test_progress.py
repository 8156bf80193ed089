"""Progress off a terminal: a log line every interval, for clean and for gc."""

from __future__ import annotations

import asyncio
import logging

import pytest

from regcleaner.reporting.collection import GcReport
from regcleaner.reporting.progress import GcProgress, PeriodicProgress, RunProgress
from regcleaner.reporting.run import RunReport


async def _first_line(progress: PeriodicProgress[RunReport] | PeriodicProgress[GcReport]) -> str:
    """Run ``progress`` until it logs one line; return that line."""
    seen: asyncio.Queue[str] = asyncio.Queue()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.put_nowait(record.getMessage())

    logger = logging.getLogger("regcleaner")
    handler = Catch()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    task = asyncio.create_task(progress.run())
    try:
        return await asyncio.wait_for(seen.get(), 10)
    finally:
        task.cancel()
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_clean_progress_logs_a_line_off_a_terminal() -> None:
    report = RunReport(dry_run=False, registry_url=None, storage="filesystem")
    report.counters.scanned_repositories = 3
    line = asyncio.run(_first_line(RunProgress(report, interval_s=0.01, terminal=False)))
    assert line.startswith("progress: 3 repositories, 0 manifests scanned, deleted 0/0")
    report.close()


def test_gc_progress_logs_a_line_off_a_terminal() -> None:
    report = GcReport(dry_run=False, storage="filesystem")
    report.counters.repositories = 2
    line = asyncio.run(_first_line(GcProgress(report, interval_s=0.01, terminal=False)))
    assert line.startswith("progress: mark: 2 repositories, 0 manifests; sweep: 0/0 blob")
    report.close()


@pytest.mark.parametrize("terminal", [False, True])
def test_no_progress_at_interval_zero(terminal: bool) -> None:
    report = GcReport(dry_run=False, storage="filesystem")
    asyncio.run(asyncio.wait_for(GcProgress(report, interval_s=0, terminal=terminal).run(), 5))
    report.close()
