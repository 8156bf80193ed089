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


# Where a named pipe goes, in repository ``p-<place>``: (root, repository, the old
# untagged image, the tagged one) → path.
FifoPlace = Callable[[Path, str, Pushed, Pushed], Path]
PLACES: dict[str, FifoPlace] = {
    "manifest-blob": lambda root, repo, old, new: blob_data(root, new.digest),
    "tag-current-link": lambda root, repo, old, new: (
        repo_dir(root, repo) / "_manifests/tags/v/current/link"
    ),
    "tag-history-link": lambda root, repo, old, new: (
        repo_dir(root, repo) / "_manifests/tags/v/index/sha256" / new.digest[7:] / "link"
    ),
    "revision-link": lambda root, repo, old, new: revision_link(root, repo, old.digest),
    "layer-link": lambda root, repo, old, new: (
        repo_dir(root, repo) / "_layers/sha256" / new.blobs[0][7:] / "link"
    ),
}
# Through the API, clean reads neither _layers nor tag history (nor does the registry's
# DELETE): there the old image goes as usual.
NOT_READ_BY_CLEAN = frozenset({"layer-link", "tag-history-link"})
# What gc's mark reads: a pipe there refuses the sweep.
READ_BY_GC = frozenset({"manifest-blob", "revision-link"})


def deleted_in(report: dict[str, object], repository: str) -> set[str]:
    repositories = report["repositories"]
    assert isinstance(repositories, list)
    entry = next(r for r in repositories if r["name"] == repository)
    return {d["digest"] for d in entry["deleted"]}


def test_a_named_pipe_in_storage_hangs_neither_clean_nor_gc(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    """A repository per place with a named pipe there (one old untagged image, one
    tagged), and a ``control`` repository. A pipe is unreadable, never waited on: clean
    keeps whole each repository whose pipe it reads and cleans the rest; gc refuses to
    sweep, naming each pipe its mark met. Every run finishes, with its report."""
    root = registry.root
    pushed: dict[str, tuple[Pushed, Pushed]] = {}
    for place in PLACES:
        repository = f"p-{place}"
        old = images.push_image(api, repository, "v", seed=f"{place}-1")
        new = images.push_image(api, repository, "v", seed=f"{place}-2")
        pushed[place] = (old, new)
    control_old = images.push_image(api, "control", "v", seed="c1")
    images.push_image(api, "control", "v", seed="c2")
    pipes = {place: make(root, f"p-{place}", *pushed[place]) for place, make in PLACES.items()}
    for pipe in pipes.values():
        replace_with_fifo(pipe)

    cleaned = run_child(clean_args(registry), report_path=tmp_path / "clean.json", timeout_s=30)
    assert "Traceback" not in cleaned.stderr, cleaned.stderr
    assert cleaned.report is not None, cleaned.output
    assert cleaned.returncode in (0, 1), cleaned.output
    assert deleted_in(cleaned.report, "control") == {control_old.digest}
    for place, (old, _) in pushed.items():
        deleted = deleted_in(cleaned.report, f"p-{place}")
        if place in NOT_READ_BY_CLEAN:
            assert deleted == {old.digest}, place
        else:
            assert deleted == set(), f"{place}: the repository must be kept whole"
            assert revision_link(root, f"p-{place}", old.digest).exists()

    registry.stop()
    # Direct removal reads more (every tag's history): its dry run meets the pipes too.
    direct = run_child(
        ["clean", "--direct", "--dry-run", "--registry-stopped", "--registry-dir",
         str(root), "--progress-interval", "0", "--min-age", "0"],
        report_path=tmp_path / "direct.json", timeout_s=30,
    )  # fmt: skip
    assert "Traceback" not in direct.stderr, direct.stderr
    assert direct.report is not None, direct.output
    assert direct.returncode == 0, direct.output
    for place in PLACES.keys() - {"layer-link"}:
        assert any(
            f"p-{place}" in line and ("not a regular file" in line or "special file" in line)
            for line in direct.stderr.splitlines()
        ), f"{place}: {direct.stderr}"

    collected = run_child(
        ["gc", "--registry-dir", str(root), "--registry-stopped", "--progress-interval", "0"],
        report_path=tmp_path / "gc.json", timeout_s=30,
    )  # fmt: skip
    assert "Traceback" not in collected.stderr, collected.stderr
    assert collected.report is not None, collected.output
    assert collected.returncode == 1, collected.output  # the collection refuses to sweep
    assert collected.report["swept"] == []
    for place in READ_BY_GC:
        relative = str(pipes[place].relative_to(root))
        hex_part = pushed[place][1].digest[7:] if place == "manifest-blob" else relative
        assert hex_part in collected.stderr, f"{place}: {collected.stderr}"
    for old, new in pushed.values():
        assert blob_data(root, new.blobs[0]).exists()
        assert blob_data(root, old.blobs[0]).exists()  # nothing swept


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
        # The signal comes right after a DELETE arrived, so the next turn of the rate
        # limiter is ~1 s after the stop: 0.5 s leaves room for a DELETE sent before
        # the stop that a loaded machine delivers late, and still sees every late one.
        late = recorder.deletes_after(stopped_at + 0.5)
        sent = len(recorder.deletes)
    assert late == [], f"{len(late)} DELETEs started after the stop: {late}\n{stderr}"
    assert process.returncode == 143, stderr
    document = json.loads(report_path.read_text())
    assert document["stopped_by"] == "SIGTERM"
    deleted = sum(len(r["deleted"]) for r in document["repositories"])
    assert deleted == sent  # every DELETE that went was answered and reported
    assert sent < 12  # the stop came early: most planned deletions never went
