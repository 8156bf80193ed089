"""``--cache`` through the CLI: clean, gc and usage share one option; a warm run decides
as the cold one did, and reads no manifest again; a cache that cannot be opened is a
usage error naming the file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from tests.conftest import clean_args, run_cli


def plans(report: dict[str, Any] | None) -> dict[str, Any]:
    assert report is not None
    return {
        r["name"]: (sorted(d["digest"] for d in r["would_delete"]),
                    sorted((k["digest"], k["reason"]) for k in r["kept"]))
        for r in report["repositories"]
    }  # fmt: skip


def test_a_warm_dry_run_plans_as_the_cold_one_and_clean_follows_it(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    images.push_image(api, "app", "v1", seed="cache-1")
    images.push_image(api, "app", "v1", seed="cache-2")
    images.push_multiarch(api, "multi", "latest", seed="cache-3")
    hour_ago = time.time() - 3600  # files this fresh are not cached (cachedreads.RACY_S)
    for file in registry.root.rglob("*"):
        os.utime(file, (hour_ago, hour_ago), follow_symlinks=False)
    cache = tmp_path / "scan.sqlite"
    cold = run_cli(clean_args(registry, "--dry-run", "--cache", str(cache)),
                   report_path=tmp_path / "cold.json")  # fmt: skip
    assert cold.exit_code == 0, cold.output
    assert cache.stat().st_size > 0
    images.push_image(api, "app", "v2", seed="cache-4")  # a change the warm run must see
    warm = run_cli(clean_args(registry, "--dry-run"), env={"REGCLEANER_CACHE": str(cache)},
                   report_path=tmp_path / "warm.json")  # fmt: skip
    fresh = run_cli(clean_args(registry, "--dry-run"), report_path=tmp_path / "fresh.json")
    assert warm.exit_code == fresh.exit_code == 0
    assert plans(warm.report) == plans(fresh.report)
    assert warm.report is not None
    assert warm.report["summary"]["scan_cache"]["used"] > 0
    real = run_cli(clean_args(registry, "--cache", str(cache)), report_path=tmp_path / "r.json")
    assert real.exit_code == 0, real.output
    assert real.report is not None
    assert real.report["summary"]["deleted"] == 1
    usage = run_cli(["usage", "--registry-dir", str(registry.root), "--output", "json",
                     "--cache", str(cache), "--progress-interval", "0"])  # fmt: skip
    assert usage.exit_code == 0, usage.output
    assert {r["name"] for r in json.loads(usage.stdout)["repositories"]} == {"app", "multi"}
    gc = run_cli(["gc", "--dry-run", "--registry-dir", str(registry.root), "--cache", str(cache),
                  "--progress-interval", "0"])  # fmt: skip
    assert gc.exit_code == 0, gc.output


def test_a_cache_that_cannot_be_opened_is_a_usage_error(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    images.push_image(api, "app", "v1", seed="cache-x")
    (tmp_path / "a-file").write_text("")
    where = tmp_path / "a-file" / "scan.sqlite"  # its folder cannot be made
    result = run_cli(clean_args(registry, "--dry-run", "--cache", str(where)))
    assert result.exit_code == 2, result.output
    assert f"cannot open the scan cache {where}" in result.stderr
