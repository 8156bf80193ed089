"""Fixtures: real docker-registry servers on loopback, and a way to run the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from regcleaner.cli import app
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess, running
from testkit.s3 import MotoS3


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    """A running docker-registry with deletes enabled and a fresh disk root."""
    with running(RegistryProcess(tmp_path / "registry")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    """One moto S3 server for the session; tests use their own buckets."""
    with running(MotoS3()) as server:
        yield server


@pytest.fixture
def api(registry: RegistryProcess) -> RegistryAPI:
    """A push/pull client for ``registry``."""
    return RegistryAPI(registry.url)


@dataclass
class CliResult:
    """What one CLI run printed and returned."""

    exit_code: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    args: list[str], *, env: dict[str, str] | None = None, report_path: Path | None = None
) -> CliResult:
    """Run ``regcleaner`` in-process; read the JSON report if one was asked for."""
    runner = CliRunner()
    argv = list(args)
    if report_path is not None:
        argv += ["--report", str(report_path)]
    result = runner.invoke(app, argv, env=env or {}, catch_exceptions=False)
    report = None
    if report_path is not None and report_path.exists():
        report = json.loads(report_path.read_text())
    return CliResult(result.exit_code, result.stdout, result.stderr, report)


def clean_args(registry: RegistryProcess, *extra: str) -> list[str]:
    """``clean`` against ``registry``'s URL and disk root, with no grace period (tests
    push and clean within seconds; a later ``--min-age`` in ``extra`` wins)."""
    return [
        "clean", "--registry-url", registry.url, "--registry-dir", str(registry.root),
        "--progress-interval", "0", "--min-age", "0", *extra,
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A CLI run points regcleaner's log handler at the runner's stream, which closes
    when the run ends: later tests must not log into it."""
    import logging

    logger = logging.getLogger("regcleaner")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits the old script's variables from the machine's environment."""
    for name in (
        "REGISTRY_URL", "REGISTRY_DIR", "REGISTRY_STORAGE", "REGISTRY_AUTH", "SELF_SIGNED_CERT",
        "DRY_RUN", "ACCESS_KEY", "SECRET_KEY", "BUCKET", "REGION",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
