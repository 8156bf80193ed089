"""How the engine takes stop requests: signals apart from a fatal error's stop, and how
deletions a stop prevented are reported."""

from __future__ import annotations

import asyncio
from pathlib import Path

from regcleaner.concurrency import StopScope
from regcleaner.config import Settings
from regcleaner.digest import Digest
from regcleaner.engine import Engine
from regcleaner.planner import RUN_STOPPED, Reason, ReasonKind
from regcleaner.pushwatch import RepositoryWaveContext
from regcleaner.removers.base import Outcome, Removal
from regcleaner.removers.dryrun import DryRunRemover
from regcleaner.reporting.run import RepositoryRecord, RunReport
from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.view import RegistryView


def _engine(tmp_path: Path) -> tuple[Engine, RunReport]:
    settings = Settings(registry_url=None, registry_dir=tmp_path, stop_grace_s=30.0)
    report = RunReport(dry_run=True, registry_url=None, storage="filesystem")
    view = RegistryView(FilesystemStore(tmp_path))
    return Engine(settings, view, DryRunRemover(), report), report


def test_a_signal_after_a_fatal_stop_gets_the_grace_and_is_reported(tmp_path: Path) -> None:
    engine, report = _engine(tmp_path)

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        async with engine.stop:
            await asyncio.sleep(0)
            engine.fatal(RuntimeError("registry answered 405"))
            after_fatal = engine.stop.deadline
            engine.request_stop("SIGTERM")  # the first signal: not an "again"
            after_signal = engine.stop.deadline
            now = loop.time()
        return after_signal - now, after_fatal - now

    left_after_signal, left_after_fatal = asyncio.run(scenario())
    assert report.stopped_by == "SIGTERM"
    assert left_after_fatal > 25
    assert left_after_signal > 25, "the first signal abandoned in-flight work at once"
    report.close()


def test_a_second_signal_abandons_at_once(tmp_path: Path) -> None:
    engine, report = _engine(tmp_path)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with engine.stop:
            await asyncio.sleep(0)
            engine.request_stop("SIGTERM")
            engine.request_stop("SIGINT")
            left = engine.stop.deadline - loop.time()
        return left

    assert asyncio.run(scenario()) <= 0.01
    assert engine.stop.cut_short  # the log says "at the second signal", not "within 30s"
    assert report.stopped_by == "SIGTERM"
    report.close()


class _Stopped:
    """A run that was stopped by a signal (no fatal error)."""

    def __init__(self) -> None:
        self.fatal_error: BaseException | None = None
        self.stop = StopScope()
        self.stop.request_stop("SIGTERM")

    def fatal(self, error: BaseException) -> None:
        self.fatal_error = error


def test_deletions_a_stop_prevented_are_reported_not_attempted() -> None:
    """A remover's "stopped before sending" and the engine's own skip after a stop are
    both a typed not-attempted reason, which the report counts as not attempted."""
    first, second, third = (Digest("sha256:" + f"{n:064x}") for n in (1, 2, 3))
    report = RunReport(dry_run=False, registry_url=None, storage="filesystem")
    record = RepositoryRecord("app")
    reasons = {first: "untagged", second: "untagged", third: "untagged"}
    context = RepositoryWaveContext(_Stopped(), report, record, reasons, {second: (third,)},
                                    watch=None, mismatch=None)  # fmt: skip
    assert context.skip(first) == RUN_STOPPED
    context.record(Removal(first, Outcome.KEPT, reason=Reason(ReasonKind.STOPPED)))
    context.record(Removal(second, Outcome.KEPT, reason=RUN_STOPPED))
    assert record.kept == {first: "not-attempted:run stopped", second: "not-attempted:run stopped"}
    assert context.protected == {third: second}, "what depends on a kept manifest stays"
    report.add(record)
    assert report.summary()["not_attempted"] == 2
    report.close()


def test_a_dry_run_cut_short_does_not_send_the_operator_to_the_real_run() -> None:
    import io

    from rich.console import Console

    def ending(**state: str) -> str:
        report = RunReport(dry_run=True, registry_url=None, storage="filesystem")
        report.counters.repositories = 1  # scanned some: not an aborted run
        for name, value in state.items():
            setattr(report, name, value)
        out = io.StringIO()
        report.render_summary(Console(file=out, width=100))
        report.close()
        return out.getvalue().strip().splitlines()[-1]

    assert ending() == "0 manifests would be deleted; run without --dry-run."
    for state in ({"stopped_by": "SIGINT"}, {"fatal_error": "listing failed"}):
        assert ending(**state) == (
            "0 manifests would be deleted in the part scanned; run the dry run to its end "
            "before the real one."
        )
