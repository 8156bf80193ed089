"""Registry faults injected by a proxy in front of the real registry; signals; reruns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import images
from testkit.api import RegistryAPI
from testkit.faults import FaultProxy, FaultScript
from testkit.registry import RegistryProcess, running
from tests.conftest import run_cli
from tests.integration.test_clean_disk import revisions_on_disk


@pytest.fixture
def proxy(registry: RegistryProcess) -> Iterator[FaultProxy]:
    with running(FaultProxy(registry.url)) as server:
        yield server


def signal_mid_run(
    proxy: FaultProxy,
    registry: RegistryProcess,
    report: Path,
    *extra: str,
    after: int,
    sig: signal.Signals = signal.SIGTERM,
) -> tuple[int, str, float]:
    """Run the CLI as a process, signal it once the proxy saw ``after`` DELETEs;
    (exit code, stderr, seconds from the signal to the exit)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "regcleaner", *proxied_args(proxy, registry, *extra),
         "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while len(proxy.seen) < after and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the proxy's count
    signalled = time.monotonic()
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr, time.monotonic() - signalled


def push_history(api: RegistryAPI, repos: int, per_repo: int) -> set[tuple[str, str]]:
    """``per_repo`` pushes over one tag in each repository; returns the untagged ones."""
    history: set[tuple[str, str]] = set()
    for r in range(repos):
        repo = f"fault/r{r}"
        pushed = [images.push_image(api, repo, "v", seed=f"{repo}-{i}") for i in range(per_repo)]
        history.update((repo, p.digest) for p in pushed[:-1])
    return history


def proxied_args(proxy: FaultProxy, registry: RegistryProcess, *extra: str) -> list[str]:
    return [
        "clean", "--registry-url", proxy.url, "--registry-dir", str(registry.root),
        "--progress-interval", "0", "--min-age", "0", *extra,
    ]  # fmt: skip


def test_429_5xx_resets_and_stalls_are_survived_within_the_rate(
    registry: RegistryProcess, api: RegistryAPI, proxy: FaultProxy, tmp_path: Path
) -> None:
    history = push_history(api, repos=4, per_repo=11)  # 40 deletions

    def decide(n: int, path: str) -> int | str | None:
        del path
        if n <= 4:
            return 429
        if n in (5, 6, 7):
            return (503, 500, 502)[n - 5]
        if n in (9, 15, 21):
            return "reset"
        if n == 12:
            return "stall"
        if n == 18:
            return "lose-answer"
        return None

    proxy.script = FaultScript(decide, retry_after="1")
    result = run_cli(
        proxied_args(proxy, registry, "--rate", "25", "--timeout", "2"),
        report_path=tmp_path / "r.json",
    )
    assert result.exit_code == 0, result.output
    assert result.report is not None
    summary = result.report["summary"]
    assert summary["failed"] == 0
    # The answer lost after the registry deleted: the retry finds the link gone, and
    # that deletion was this run's, so it counts as deleted, not as already gone.
    assert summary["deleted"] == len(history)
    assert summary["already_gone"] == 0
    assert not (revisions_on_disk(registry.root) & history)

    # Retry-After honoured: a path answered 429 is not asked again within a second.
    for i, hit in enumerate(proxy.seen):
        if hit.answered == 429:
            later = [s.at for s in proxy.seen[i + 1 :] if s.path == hit.path]
            assert later, "a 429'd digest was never retried"
            assert later[0] - hit.at >= 0.95
    # --rate never exceeded: no one-second window holds more than 25 (+1 at its edge).
    times = sorted(s.at for s in proxy.seen)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 1.0) <= 26


def test_persistent_failures_exit_1_and_a_second_run_finishes(
    registry: RegistryProcess, api: RegistryAPI, proxy: FaultProxy, tmp_path: Path
) -> None:
    history = push_history(api, repos=2, per_repo=4)
    doomed = sorted(history)[0]
    proxy.script = FaultScript(lambda n, path: 500 if path.endswith(doomed[1]) else None)
    first = run_cli(proxied_args(proxy, registry), report_path=tmp_path / "1.json")
    assert first.exit_code == 1, first.output
    assert first.report is not None
    failed = [f for r in first.report["repositories"] for f in r["failed"]]
    assert [f["digest"] for f in failed] == [doomed[1]]
    assert "gave up after" in failed[0]["error"]
    assert (revisions_on_disk(registry.root) & history) == {doomed}

    proxy.script = FaultScript()
    second = run_cli(proxied_args(proxy, registry), report_path=tmp_path / "2.json")
    assert second.exit_code == 0, second.output
    assert second.report is not None
    assert second.report["summary"]["deleted"] == 1
    assert not (revisions_on_disk(registry.root) & history)


def test_registry_restart_mid_run(
    registry: RegistryProcess, api: RegistryAPI, proxy: FaultProxy, tmp_path: Path
) -> None:
    history = push_history(api, repos=3, per_repo=21)  # 60 deletions
    restarted = threading.Event()

    def restart() -> None:
        registry.restart()
        restarted.set()

    def decide(n: int, path: str) -> None:
        del path
        if n == 20:
            threading.Thread(target=restart, daemon=True).start()

    proxy.script = FaultScript(decide)
    result = run_cli(proxied_args(proxy, registry, "--rate", "30"),
                     report_path=tmp_path / "r.json")  # fmt: skip
    assert restarted.is_set()
    assert result.report is not None
    if result.exit_code == 1:  # some retries ran out while it was down: rerun finishes
        again = run_cli(proxied_args(proxy, registry), report_path=tmp_path / "again.json")
        assert again.exit_code == 0, again.output
    else:
        assert result.exit_code == 0, result.output
    assert not (revisions_on_disk(registry.root) & history)
    assert any(hit.answered == 502 for hit in proxy.seen) or result.report["summary"][
        "deleted"
    ] == len(history)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_new_deletions_and_writes_the_report(
    registry: RegistryProcess,
    api: RegistryAPI,
    proxy: FaultProxy,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    history = push_history(api, repos=2, per_repo=31)  # 60 deletions at 10/s: 6 s
    report = tmp_path / "r.json"
    code, stderr, _ = signal_mid_run(proxy, registry, report, "--rate", "10", after=5, sig=sig)
    assert code == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], stderr
    document = json.loads(report.read_text())
    assert document["stopped_by"] == sig.name
    deleted = {(r["name"], d["digest"]) for r in document["repositories"] for d in r["deleted"]}
    still_there = revisions_on_disk(registry.root) & history
    # Exactly what the report says was deleted is gone; nothing else was touched.
    assert deleted == history - still_there
    assert 0 < len(deleted) < len(history)
    assert "Traceback" not in stderr


def test_signal_with_stalled_requests_abandons_them_after_the_grace(
    registry: RegistryProcess, api: RegistryAPI, proxy: FaultProxy, tmp_path: Path
) -> None:
    push_history(api, repos=1, per_repo=6)
    proxy.script = FaultScript(lambda n, path: "stall")
    report = tmp_path / "r.json"
    code, stderr, seconds = signal_mid_run(proxy, registry, report, "--stop-grace", "1", after=4)
    assert seconds < 15
    assert code == 143, stderr
    document = json.loads(report.read_text())
    errors = [f["error"] for r in document["repositories"] for f in r["failed"]]
    assert errors
    assert all("outcome unknown" in e for e in errors)
    assert os.path.exists(report)
