"""How the engine takes stop requests: signals apart from a fatal error's stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from regcleaner.config import Settings
from regcleaner.engine import Engine
from regcleaner.removers.dryrun import DryRunRemover
from regcleaner.report import RunReport
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
        async with asyncio.timeout(None) as deadline:
            engine._deadline = deadline
            await asyncio.sleep(0)
            engine.fatal(RuntimeError("registry answered 405"))
            after_fatal = deadline.when()
            engine.request_stop("SIGTERM")  # the first signal: not an "again"
            after_signal = deadline.when()
            assert after_fatal is not None
            assert after_signal is not None
            return after_signal - loop.time(), after_fatal - loop.time()

    left_after_signal, left_after_fatal = asyncio.run(scenario())
    assert report.stopped_by == "SIGTERM"
    assert left_after_fatal > 25
    assert left_after_signal > 25, "the first signal abandoned in-flight work at once"
    report.close()


def test_a_second_signal_abandons_at_once(tmp_path: Path) -> None:
    engine, report = _engine(tmp_path)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as deadline:
            engine._deadline = deadline
            await asyncio.sleep(0)
            engine.request_stop("SIGTERM")
            engine.request_stop("SIGINT")
            when = deadline.when()
            assert when is not None
            return when - loop.time()

    assert asyncio.run(scenario()) <= 0.01
    assert report.stopped_by == "SIGTERM"
    report.close()
