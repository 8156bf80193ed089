"""The summary and the JSON report say what happened, and nothing else (issue 19, 7a/7c).

Read at ``COLUMNS=80``, as an operator's terminal shows them; durations are the only
thing normalised.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from testkit.api import RegistryAPI
from testkit.images import push_image
from testkit.registry import Flavour, RegistryProcess, running
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

COLUMNS = {"COLUMNS": "80"}


def retagged_storage(workdir: Path, flavour: Flavour) -> Path:
    """A storage with one repository: ``app:v1`` pushed twice, the first manifest
    untagged (one deletion to make)."""
    with running(RegistryProcess(workdir, flavour=flavour)) as writer:
        api = RegistryAPI(writer.url)
        push_image(api, "app", "v1", seed="first")
        push_image(api, "app", "v1", seed="second")
    return writer.root


def normalised(text: str) -> str:
    return re.sub(r"\d+\.\ds ", "N.Ns ", text)


def test_direct_gc_that_refuses_to_sweep_says_the_blobs_were_not_collected(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    root = retagged_storage(tmp_path / "registry", registry_flavour)
    stray = root / "docker/registry/v2/blobs/sha256/00/not-a-digest/data"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")  # the collection refuses to sweep on it
    result = run_cli(
        ["clean", "--direct", "--gc", "--registry-stopped", "--registry-dir", str(root),
         "--min-age", "0", "--progress-interval", "0"],
        env=COLUMNS, report_path=tmp_path / "report.json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "blobs collected" not in result.stdout
    assert "Run ended early" not in result.stdout  # the removal itself finished
    assert result.stdout.endswith(
        "1 manifest removed from storage; their blobs were not collected (above). Restart\n"
        "the registry (its blob-descriptor cache may still describe them), then collect \n"
        "blobs once that is fixed: `regcleaner gc` or `registry garbage-collect \n"
        "<config>`.\n"
    ), result.stdout
    report = result.report
    assert report is not None
    assert report["error"] is None
    assert report["summary"]["deleted"] == 1
    assert report["gc"]["error"].startswith("refusing to sweep: 1 problem(s) while listing")
    assert "not-a-digest/data" in report["gc"]["error"]
    assert report["gc"]["summary"]["blobs_swept"] == 0
    refusals = [line for line in result.stderr.splitlines() if " ERROR refusing to sweep" in line]
    assert len(refusals) == 1, result.stderr


def test_a_url_storage_mismatch_reports_nothing_deleted_here_and_says_the_error_once(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    """The URL serves a byte-identical copy: its DELETE answers 202 and this storage's
    revision link stays; the run stops with exit 3."""
    root = retagged_storage(tmp_path / "registry", registry_flavour)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    other = RegistryProcess(tmp_path / "other", flavour=registry_flavour,
                            storage={"filesystem": {"rootdirectory": str(copy)}})  # fmt: skip
    with running(other):
        result = run_cli(
            ["clean", "--registry-url", other.url, "--registry-dir", str(root),
             "--min-age", "0", "--progress-interval", "0"],
            env=COLUMNS, report_path=tmp_path / "report.json",
        )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert normalised(result.stdout) == (
        "regcleaner run\n"
        "┌──────────────────────────────────────┬──────┐\n"
        "│ repositories scanned                 │    1 │\n"
        "│ manifests seen                       │    2 │\n"
        "│ tagged manifests                     │    1 │\n"
        "│ kept (in use, young or unsure)       │    1 │\n"
        "│   of them younger than --min-age     │    0 │\n"
        "│ deleted from this storage            │    0 │\n"
        "│ DELETEs the registry at the URL took │    1 │\n"
        "│ failed deletions                     │    0 │\n"
        "│ not attempted (run stopped)          │    0 │\n"
        "│ repositories failed                  │    0 │\n"
        "│ warnings                             │    0 │\n"
        "│ duration                             │ N.Ns │\n"
        "└──────────────────────────────────────┴──────┘\n"
        "Run ended early on the error above.\n"
        "Nothing was deleted from this storage: the registry at the URL serves another \n"
        "one, and the DELETEs it took acted there.\n"
    )
    assert result.stderr.count("are not the same registry") == 1, result.stderr
    assert "will free" not in result.stdout
    assert "garbage-collect" not in result.stdout
    report = result.report
    assert report is not None
    assert report["summary"]["deleted"] == 0
    assert report["summary"]["answered_by_other_registry"] == 1
    assert report["summary"]["reclaimable_bytes"] is None
    assert report["reclaimable_by_repository"] == []
    assert "are not the same registry" in report["error"]


def test_the_window_summary_says_once_what_to_do_next_and_no_estimate_after_collection(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    """After ``--direct --gc`` the collection's own lines say what it freed and to
    restart the registry; the run's summary neither repeats the advice nor estimates
    what garbage-collect "will" free. One manifest is one manifest, and the title is one
    line however narrow the terminal. With ``--registry-stopped`` there is nothing to
    restart, and no such advice."""
    root = retagged_storage(tmp_path / "registry", registry_flavour)
    read_only = RegistryProcess(tmp_path / "ro", flavour=registry_flavour, readonly=True,
                                storage={"filesystem": {"rootdirectory": str(root)}})  # fmt: skip
    args = ["clean", "--direct", "--gc", "--registry-dir", str(root), "--min-age", "0",
            "--progress-interval", "0"]  # fmt: skip
    with running(read_only):
        result = run_cli([*args, "--registry-url", read_only.url], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("regcleaner run\n")
    assert "will free" not in result.stdout
    assert result.stdout.count("Restart the registry") == 1
    assert " ".join(result.stdout.split()).endswith(
        "1 manifest removed from storage and their blobs collected."
    )
    again = retagged_storage(tmp_path / "again", registry_flavour)
    args[args.index(str(root))] = str(again)
    stopped = run_cli([*args, "--registry-stopped"], env=COLUMNS)
    assert stopped.exit_code == 0, stopped.output
    assert "Restart" not in stopped.stdout
    assert "blob removed." in stopped.stdout or "blobs removed." in stopped.stdout
