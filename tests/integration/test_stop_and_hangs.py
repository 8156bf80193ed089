"""Nothing hangs, and a stop stops: a named pipe in storage, SIGTERM under a rate limit.

Each run is a child process under a timeout, so that a regression fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit import images
from testkit.api import Pushed, RegistryAPI
from testkit.registry import RegistryProcess, running
from testkit.stopkit import DeleteRecorder, replace_with_fifo, run_child
from tests.conftest import clean_args

V2 = "docker/registry/v2"
pytestmark = pytest.mark.integration


def blob_data(root: Path, digest: str) -> Path:
    hex_part = digest.removeprefix("sha256:")
    return root / V2 / "blobs/sha256" / hex_part[:2] / hex_part / "data"


def repo_dir(root: Path, name: str) -> Path:
    return root / V2 / "repositories" / name


def revision_link(root: Path, repository: str, digest: str) -> Path:
    hex_part = digest.removeprefix("sha256:")
    return repo_dir(root, repository) / "_manifests/revisions/sha256" / hex_part / "link"


# Where a named pipe goes: (root, the old untagged image, the tagged one) → path.
FifoPlace = Callable[[Path, Pushed, Pushed], Path]
PLACES: dict[str, FifoPlace] = {
    "manifest-blob": lambda root, old, new: blob_data(root, new.digest),
    "tag-current-link": lambda root, old, new: (
        repo_dir(root, "app") / "_manifests/tags/v/current/link"
    ),
    "tag-history-link": lambda root, old, new: (
        repo_dir(root, "app") / "_manifests/tags/v/index/sha256" / new.digest[7:] / "link"
    ),
    "revision-link": lambda root, old, new: revision_link(root, "app", old.digest),
    "layer-link": lambda root, old, new: (
        repo_dir(root, "app") / "_layers/sha256" / new.blobs[0][7:] / "link"
    ),
}


@pytest.fixture(params=sorted(PLACES))
def fifo_setup(
    request: pytest.FixtureRequest, registry: RegistryProcess, api: RegistryAPI
) -> tuple[str, Pushed, Pushed, Pushed]:
    """``app`` (one old untagged image, one tagged) with a named pipe at one place, and a
    ``control`` repository with an old image that must go as usual."""
    old = images.push_image(api, "app", "v", seed="a1")
    new = images.push_image(api, "app", "v", seed="a2")
    control_old = images.push_image(api, "control", "v", seed="c1")
    images.push_image(api, "control", "v", seed="c2")
    replace_with_fifo(PLACES[request.param](registry.root, old, new))
    return request.param, old, new, control_old


def deleted_in(report: dict[str, object], repository: str) -> set[str]:
    repositories = report["repositories"]
    assert isinstance(repositories, list)
    entry = next(r for r in repositories if r["name"] == repository)
    return {d["digest"] for d in entry["deleted"]}


def test_a_named_pipe_in_storage_hangs_neither_clean_nor_gc(
    fifo_setup: tuple[str, Pushed, Pushed, Pushed],
    registry: RegistryProcess,
    tmp_path: Path,
) -> None:
    """A named pipe is unreadable, never waited on: clean keeps ``app`` whole and cleans
    the rest; gc refuses to sweep where the pipe stands in what it reads. Both finish,
    with their report."""
    place, old, new, control_old = fifo_setup
    cleaned = run_child(clean_args(registry), report_path=tmp_path / "clean.json", timeout_s=30)
    assert "Traceback" not in cleaned.stderr, cleaned.stderr
    assert cleaned.report is not None, cleaned.output
    assert cleaned.returncode in (0, 1), cleaned.output
    assert deleted_in(cleaned.report, "control") == {control_old.digest}
    app_deleted = deleted_in(cleaned.report, "app")
    if place in ("layer-link", "tag-history-link"):
        # Through the API, clean reads neither _layers nor tag history (nor does the
        # registry's DELETE): the old image goes as usual.
        assert app_deleted == {old.digest}
    else:
        assert app_deleted == set(), f"{place}: app must be kept whole"
        assert revision_link(registry.root, "app", old.digest).exists()

    registry.stop()
    collected = run_child(
        ["gc", "--registry-dir", str(registry.root), "--registry-stopped",
         "--progress-interval", "0"],
        report_path=tmp_path / "gc.json", timeout_s=30,
    )  # fmt: skip
    assert "Traceback" not in collected.stderr, collected.stderr
    assert collected.report is not None, collected.output
    if place in ("manifest-blob", "revision-link"):
        # What the mark reads: the collection refuses to sweep anything.
        assert collected.returncode == 1, collected.output
        assert collected.report["swept"] == []
        assert blob_data(registry.root, old.blobs[0]).exists()
    else:
        # The mark reads neither tags nor layer links: the collection goes on.
        assert collected.returncode == 0, collected.output
    assert blob_data(registry.root, new.blobs[0]).exists()
    assert blob_data(registry.root, new.digest).exists()


# -- SIGTERM under a rate limit ----------------------------------------------------------------

STOP_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING SIGTERM: finishing in-flight", re.MULTILINE
)


def test_no_delete_starts_after_sigterm_under_a_rate_limit(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    """``--rate 1 --concurrency 1``: DELETEs queue on the concurrency bound and the rate
    limiter. After SIGTERM none of them may go: the registry sees no DELETE that arrives
    after the run logged the stop."""
    for repository in ("one", "two"):
        for n in range(7):
            images.push_image(api, repository, "v", seed=f"{repository}{n}")
    report_path = tmp_path / "r.json"
    with running(DeleteRecorder(registry.url, delay_s=0.0)) as recorder:
        args = clean_args(registry, "--rate", "1", "--concurrency", "1")
        args[args.index("--registry-url") + 1] = recorder.url
        process = subprocess.Popen(
            [sys.executable, "-m", "regcleaner", *args, "--report", str(report_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while len(recorder.deletes) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # polling the proxy for the third DELETE
            assert len(recorder.deletes) >= 3, "the DELETEs never came"
            process.send_signal(signal.SIGTERM)
            try:
                _, stderr = process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                pytest.fail("still running 20 s after SIGTERM")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        time.sleep(0.5)  # a DELETE sent as the process exited would arrive by now
        found = STOP_LINE.search(stderr)
        assert found, stderr
        stopped_at = datetime.datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        late = recorder.deletes_after(stopped_at + 0.05)
        sent = len(recorder.deletes)
    assert late == [], f"{len(late)} DELETEs started after the stop: {late}\n{stderr}"
    assert process.returncode == 143, stderr
    document = json.loads(report_path.read_text())
    assert document["stopped_by"] == "SIGTERM"
    deleted = sum(len(r["deleted"]) for r in document["repositories"])
    assert deleted == sent  # every DELETE that went was answered and reported
    assert sent < 12  # the stop came early: most planned deletions never went
