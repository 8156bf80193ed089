"""Operator features against the real registry: shards, the reclaimable-space estimate."""

from __future__ import annotations

from pathlib import Path

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from testkit.scenario import build_scenario
from tests.conftest import clean_args, run_cli
from tests.integration.test_clean_disk import revisions_on_disk


def blob_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "docker/registry/v2/blobs").rglob("data"))


def test_space_estimate_matches_what_garbage_collect_frees(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    build_scenario(api)
    # A layer shared between a deleted and a kept image must not be counted.
    shared = images.push_image(api, "shared/a", "v", seed="shared-old")
    images.push_image(api, "shared/a", "v", seed="shared-new")
    images.push_image(api, "shared/b", "v", seed="shared-old")  # same blobs, other repo
    dry = run_cli(clean_args(registry, "--dry-run"), report_path=tmp_path / "dry.json")
    assert dry.report is not None
    estimate = dry.report["summary"]["reclaimable_bytes"]
    assert estimate > 0
    assert "would free" in dry.stdout
    ranking = dry.report["reclaimable_by_repository"]
    assert [r["bytes"] for r in ranking] == sorted((r["bytes"] for r in ranking), reverse=True)
    assert sum(r["bytes"] for r in ranking) == estimate

    real = run_cli(clean_args(registry), report_path=tmp_path / "real.json")
    assert real.exit_code == 0, real.output
    assert real.report is not None
    assert real.report["summary"]["reclaimable_bytes"] == estimate
    before = blob_bytes(registry.root)
    registry.stop()
    registry.garbage_collect()
    registry.start()
    assert before - blob_bytes(registry.root) == estimate
    api.pull("shared/b", "v")
    del shared


def test_shards_are_disjoint_and_complete(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    repos = [f"shard/r{i}" for i in range(12)]
    for repo in repos:
        images.push_image(api, repo, "v", seed=f"{repo}-1")
        images.push_image(api, repo, "v", seed=f"{repo}-2")
    seen: list[set[str]] = []
    for index in range(3):
        result = run_cli(
            clean_args(registry, "--dry-run", "--shards", "3"),
            env={"JOB_COMPLETION_INDEX": str(index)},
            report_path=tmp_path / f"s{index}.json",
        )
        assert result.exit_code == 0, result.output
        assert result.report is not None
        seen.append({r["name"] for r in result.report["repositories"]})
    assert set().union(*seen) == set(repos)
    assert sum(len(s) for s in seen) == len(repos)
    assert all(seen), "a shard got nothing: the hash does not spread"
    for index in range(3):
        result = run_cli(clean_args(registry, "--shard", f"{index}/3"))
        assert result.exit_code == 0
    assert len(revisions_on_disk(registry.root)) == len(repos)


def test_bad_shard_is_a_usage_error() -> None:
    for args in (["--shard", "3/3"], ["--shard", "x"], ["--shards", "2"]):
        result = run_cli(["clean", "--registry-url", "http://127.0.0.1:9", *args])
        assert result.exit_code == 2, args
        assert "shard" in result.stderr.lower()
