"""Fixtures: real registry servers on loopback (distribution 2.8.2 and 3.1.1: every test
that uses ``registry`` or ``registry_flavour`` runs on both), and a way to run the CLI.

Markers are set here, not by hand (issue 20): a test that uses a registry or S3
fixture, or a module that starts one through testkit, is ``integration``; the Dockerfile
test is ``slow``. ``pytest -m "not integration and not slow"`` is the fast lane.
"""

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
from testkit.registry import FLAVOURS, Flavour, RegistryProcess, find_registry_binary, running
from testkit.s3 import MotoS3

MARKERS = {
    "integration": "starts a real registry, moto S3 or a real client (testkit)",
    "slow": "builds or runs something heavy (the Dockerfile test)",
}
# Fixtures that start (or configure) a real server: a test using any of them, directly or
# through another fixture, is an integration test.
INTEGRATION_FIXTURES = frozenset({"registry", "registry_flavour", "moto_server"})
# What starts a server through testkit: a test naming one of these in its own code is an
# integration test; so is every test under tests/integration, whatever its helpers start.
INTEGRATION_OBJECTS = frozenset({"RegistryProcess", "find_registry_binary", "MotoS3"})
SLOW_TESTS = frozenset({"test_dockerfile_steps_install_and_run_the_entrypoint"})
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers (``--strict-markers`` refuses unknown ones)."""
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def _starts_servers(item: pytest.Item) -> bool:
    """True if the test lives under tests/integration (what the folder is for), or names
    one of testkit's servers in its own code."""
    if INTEGRATION_DIR in Path(item.path).parents:
        return True
    function = getattr(item, "function", None)
    code = getattr(function, "__code__", None)
    return code is not None and bool(set(code.co_names) & INTEGRATION_OBJECTS)


def _s3_backend(item: pytest.Item) -> bool:
    """True if a parametrised fixture of the test chose an ``s3`` backend: such fixtures
    (the contract suites' store, direct sites, race backends) start moto through
    ``request.getfixturevalue("moto_server")``, which the static fixture list misses."""
    callspec = getattr(item, "callspec", None)
    info = getattr(item, "_fixtureinfo", None)
    if callspec is None or info is None:
        return False
    return any(
        isinstance(value, str) and value.startswith("s3") and name in info.name2fixturedefs
        for name, value in callspec.params.items()
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration and slow tests from what they use, so no file can forget it."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & INTEGRATION_FIXTURES or _starts_servers(item) or _s3_backend(item):
            item.add_marker(pytest.mark.integration)
        if item.name.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", params=FLAVOURS, ids=[f"registry{f[0]}" for f in FLAVOURS])
def registry_flavour(request: pytest.FixtureRequest) -> Flavour:
    """The registry a test runs against: every test that asks for it (or for
    ``registry``) runs once on 2.8.2 and once on 3.1.1 (ids ``registry2``/``registry3``:
    ``-k registry3`` selects v3). A missing binary fails the test with how to get it:
    v3 coverage is not optional."""
    flavour: Flavour = request.param
    try:
        find_registry_binary(flavour)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    return flavour


@pytest.fixture
def registry(tmp_path: Path, registry_flavour: Flavour) -> Iterator[RegistryProcess]:
    """A running registry of ``registry_flavour`` with deletes enabled and a fresh disk
    root."""
    with running(RegistryProcess(tmp_path / "registry", flavour=registry_flavour)) as server:
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
