"""JSON log lines, Prometheus textfile metrics, and a push to a real Pushgateway."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess, free_port
from tests.conftest import clean_args, run_cli

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"


def push_history(api: RegistryAPI) -> None:
    for i in range(3):
        images.push_image(api, "obs/app", "v", seed=f"obs{i}")


def test_json_log_lines_and_textfile_metrics(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    push_history(api)
    metrics = tmp_path / "regcleaner.prom"
    result = run_cli(
        clean_args(registry, "--log-format", "json", "--metrics-file", str(metrics),
                   "--auth", "user:hunter2:secret"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines
    for line in lines:
        document = json.loads(line)
        assert {"time", "level", "logger", "message"} <= document.keys()
    text = metrics.read_text()
    assert "regcleaner_manifests_deleted 2.0" in text
    assert "regcleaner_last_run_exit_code 0.0" in text
    assert "regcleaner_reclaimable_bytes" in text
    assert "hunter2" not in result.output + text


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("pushgateway did not start") from None
            time.sleep(0.05)  # polling interval
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_metrics_reach_a_real_pushgateway(
    registry: RegistryProcess, api: RegistryAPI, pushgateway: str
) -> None:
    push_history(api)
    result = run_cli(clean_args(registry, "--pushgateway", pushgateway))
    assert result.exit_code == 0, result.output
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:
        exposed = response.read().decode()
    assert 'regcleaner_manifests_deleted{instance="",job="regcleaner"} 2' in exposed


def test_unreachable_pushgateway_is_only_a_warning(
    registry: RegistryProcess, api: RegistryAPI
) -> None:
    push_history(api)
    result = run_cli(clean_args(registry, "--pushgateway", f"http://127.0.0.1:{free_port()}"))
    assert result.exit_code == 0
    assert "cannot push metrics" in result.stderr


def test_unknown_log_format_is_a_usage_error() -> None:
    result = run_cli(["clean", "--registry-url", "http://h", "--log-format", "xml"])
    assert result.exit_code == 2
    assert "log format" in result.stderr
