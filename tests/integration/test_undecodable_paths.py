"""A path whose bytes are not UTF-8 (a folder named by another tool) is named in logs,
refusals and summaries as ``\\xNN`` escapes, and never crashes a run whose standard
output is strict UTF-8 (``PYTHONIOENCODING=utf-8:strict``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from testkit.stopkit import run_child
from tests.conftest import clean_args

STRICT = {"PYTHONIOENCODING": "utf-8:strict"}
V2 = "docker/registry/v2"
pytestmark = pytest.mark.integration


def test_a_gc_refusal_naming_a_path_that_is_not_utf8_is_printed(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    images.push_image(api, "app", "v", seed="u1")
    blobs = os.fsencode(registry.root / V2 / "blobs/sha256")
    os.symlink(b"/etc", blobs + b"/l\xe9nk")  # Latin-1 bytes, not UTF-8
    registry.stop()

    run = run_child(
        ["gc", "--registry-dir", str(registry.root), "--registry-stopped",
         "--progress-interval", "0"],
        report_path=tmp_path / "gc.json", env=STRICT,
    )  # fmt: skip
    assert "Traceback" not in run.output, run.output
    assert run.returncode == 1, run.output  # the collection refuses to sweep
    assert "ended early on the error above" in run.stdout  # the summary points at it
    assert "l\\xe9nk" in run.stderr  # and the log line, printed once, names the path
    assert run.report is not None
    assert run.report["swept"] == []


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_clean_names_repositories_and_tags_that_are_not_utf8(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, log_format: str
) -> None:
    old = images.push_image(api, "app", "v", seed="u1")
    images.push_image(api, "app", "v", seed="u2")
    images.push_image(api, "other", "v", seed="u3")
    repositories = os.fsencode(registry.root / V2 / "repositories")
    os.rename(repositories + b"/other", repositories + b"/bad\xffname")
    os.symlink(b"/etc", repositories + b"/app/_manifests/tags/l\xe9nk")

    run = run_child(
        clean_args(registry, "--log-format", log_format),
        report_path=tmp_path / "clean.json", env=STRICT,
    )  # fmt: skip
    assert "Traceback" not in run.output, run.output
    assert run.returncode == 1, run.output  # the odd name counts as a failed repository
    if log_format == "json":
        messages = [json.loads(line)["message"] for line in run.stderr.splitlines()]
    else:
        messages = run.stderr.splitlines()
    assert any("l\\xe9nk" in message for message in messages), run.stderr
    assert any("bad" in message and "name" in message for message in messages), run.stderr
    assert run.report is not None
    app = next(r for r in run.report["repositories"] if r["name"] == "app")
    assert app["deleted"] == []  # the tag that cannot be read keeps the repository whole
    assert api.manifest_exists("app", old.digest)
