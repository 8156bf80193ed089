"""End to end on disk: the real docker-registry, images pushed through its API."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import Flavour, RegistryProcess
from testkit.scenario import Expectation, build_scenario, corrupt_blob
from tests.conftest import clean_args, run_cli


def revisions_on_disk(root: Path) -> set[tuple[str, str]]:
    """Every (repository, digest) with a revision link, read straight from storage."""
    base = root / "docker/registry/v2/repositories"
    found: set[tuple[str, str]] = set()
    for link in base.glob("**/_manifests/revisions/sha256/*/link"):
        repo = str(link.relative_to(base)).split("/_manifests/")[0]
        found.add((repo, "sha256:" + link.parent.name))
    return found


def report_digests(report: dict[str, object], field: str) -> set[tuple[str, str]]:
    repos = report["repositories"]
    assert isinstance(repos, list)
    return {(r["name"], item["digest"]) for r in repos for item in r[field]}


def assert_all_tags_pull(api: RegistryAPI, expectation: Expectation) -> set[tuple[str, str]]:
    """Pull every tag of every repository (per the registry) and return what was served."""
    served: set[tuple[str, str]] = set()
    for repo in sorted(expectation.repositories()):
        for tag in api.tags(repo):
            served.update((repo, digest) for digest in api.pull(repo, tag))
    for repo, tag in expectation.tags:
        assert tag in api.tags(repo), f"tag {repo}:{tag} is gone"
    return served


def test_clean_keeps_everything_in_use_and_deletes_history(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    expectation = build_scenario(api)
    before = revisions_on_disk(registry.root)
    assert expectation.keep | expectation.delete <= before

    dry = run_cli(clean_args(registry, "--dry-run"), report_path=tmp_path / "dry.json")
    assert dry.exit_code == 0, dry.output
    assert dry.report is not None
    assert revisions_on_disk(registry.root) == before, "a dry run changed storage"
    planned = report_digests(dry.report, "would_delete")
    assert planned == expectation.delete
    assert dry.report["summary"]["would_delete"] == len(expectation.delete)
    assert dry.report["summary"]["deleted"] == 0

    real = run_cli(clean_args(registry), report_path=tmp_path / "real.json")
    assert real.exit_code == 0, real.output
    assert real.report is not None
    assert report_digests(real.report, "deleted") == planned, "the run differs from its dry run"
    summary = real.report["summary"]
    assert summary["deleted"] == len(expectation.delete)
    assert summary["failed"] == 0
    assert summary["manifests"] == len(before)
    assert summary["kept"] == len(before) - len(expectation.delete)
    assert "garbage-collect" in real.stdout
    assert revisions_on_disk(registry.root) == before - expectation.delete

    # Reasons say why each manifest was kept.
    reasons = {
        (r["name"], k["digest"]): k["reason"]
        for r in real.report["repositories"]
        for k in r["kept"]
    }
    assert all(
        reason.split(":")[0] in {"tagged", "child-of", "referrer-of"} for reason in reasons.values()
    ), reasons
    assert any(r.startswith("referrer-of:") for r in reasons.values())
    assert any(r.startswith("child-of:") for r in reasons.values())

    registry.stop()
    registry.garbage_collect()
    registry.start()

    served = assert_all_tags_pull(api, expectation)
    for repo, digest in expectation.keep:
        assert api.manifest_exists(repo, digest), f"kept manifest {repo}@{digest} is not served"
        served.update((repo, d) for d in api.pull(repo, digest))
    for repo, digest in expectation.delete:
        assert not api.manifest_exists(repo, digest), f"{repo}@{digest} should be gone"
    # garbage-collect really freed the blobs only the deleted manifests used.
    blobs = registry.root / "docker/registry/v2/blobs/sha256"
    for _, digest in expectation.delete:
        hex_part = digest.split(":")[1]
        assert not (blobs / hex_part[:2] / hex_part).exists()

    again = run_cli(clean_args(registry), report_path=tmp_path / "again.json")
    assert again.exit_code == 0
    assert again.report is not None
    assert again.report["summary"]["deleted"] == 0, "a second run found more to delete"


def test_unreadable_manifest_blocks_its_repository_only(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    history = images.push_image(api, "broken", "v1", seed="b-old")
    images.push_image(api, "broken", "v1", seed="b-new")
    mystery = images.push_image(api, "broken", None, seed="b-corrupt", oci=True)
    other_old = images.push_image(api, "fine", "v1", seed="f-old")
    images.push_image(api, "fine", "v1", seed="f-new")
    blob = corrupt_blob(registry.root, mystery.digest)
    original = b""

    # A schema-less manifest written straight into storage: valid JSON, no known shape.
    schemaless = json.dumps({"hello": "world"}).encode()
    digest = "sha256:" + hashlib.sha256(schemaless).hexdigest()
    v2 = registry.root / "docker/registry/v2"
    blob_dir = v2 / "blobs/sha256" / digest[7:9] / digest[7:]
    blob_dir.mkdir(parents=True)
    (blob_dir / "data").write_bytes(schemaless)
    link_dir = v2 / "repositories/odd/_manifests/revisions/sha256" / digest[7:]
    link_dir.mkdir(parents=True)
    (link_dir / "link").write_text(digest)
    odd_old = images.push_image(api, "odd", None, seed="odd-untagged")

    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert result.report is not None
    by_name = {r["name"]: r for r in result.report["repositories"]}
    assert by_name["broken"]["deleted"] == []
    kept = {k["digest"]: k["reason"] for k in by_name["broken"]["kept"]}
    assert kept[mystery.digest].startswith("unreadable:")
    assert kept[history.digest] == f"blocked:{mystery.digest}"
    assert by_name["broken"]["warnings"], "no warning for the corrupt manifest"
    assert mystery.digest in result.stderr
    assert {d["digest"] for d in by_name["fine"]["deleted"]} == {other_old.digest}
    assert by_name["odd"]["deleted"] == []
    assert {k["digest"] for k in by_name["odd"]["kept"]} == {digest, odd_old.digest}
    assert api.manifest_exists("broken", history.digest)
    assert not api.manifest_exists("fine", other_old.digest)
    del original, blob


def test_tag_pushed_between_scan_and_delete_protects_its_manifest(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: object
) -> None:
    import pytest

    from regcleaner.engine import PushWatch

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    old = images.push_image(api, "race", "v1", seed="race-old")
    images.push_image(api, "race", "v1", seed="race-new")
    old_index, old_kids = images.push_multiarch(api, "race", "multi", seed="race-idx")
    images.push_multiarch(api, "race", "multi", seed="race-idx-new")
    lonely = images.push_image(api, "race", None, seed="race-lonely")
    child_of_new = images.push_image(api, "race", None, seed="race-child", oci=True)

    original = PushWatch.start

    async def start_after_pushes(self: PushWatch) -> None:
        # Between the scan and the first DELETE of the repository.
        api.put_manifest("race", "revived", *_manifest(api, "race", old.digest))
        api.put_manifest("race", "revived-multi", *_manifest(api, "race", old_index.digest))
        images.push_index(api, "race", "brand-new", [child_of_new])
        await original(self)

    monkeypatch.setattr(PushWatch, "start", start_after_pushes)
    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert result.report is not None
    repo = result.report["repositories"][0]
    kept = {k["digest"]: k["reason"] for k in repo["kept"]}
    assert kept[old.digest] == "tagged-during-run:tagged:revived"
    assert kept[old_index.digest] == "tagged-during-run:tagged:revived-multi"
    assert all(kept[k.digest] == f"tagged-during-run:child-of:{old_index.digest}" for k in old_kids)
    assert kept[child_of_new.digest].startswith("tagged-during-run:child-of:")
    assert {d["digest"] for d in repo["deleted"]} == {lonely.digest}
    for ref in ("v1", "revived", "multi", "revived-multi", "brand-new"):
        api.pull("race", ref)


def _manifest(api: RegistryAPI, repo: str, digest: str) -> tuple[bytes, str]:
    response = api.get_manifest(repo, digest)
    assert response.status == 200
    return response.body, response.headers["Content-Type"]


def test_registry_with_deletes_disabled_stops_at_first_405(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    server = RegistryProcess(tmp_path / "reg", flavour=registry_flavour, delete_enabled=False)
    server.start()
    try:
        api = RegistryAPI(server.url)
        for i in range(6):
            images.push_image(api, f"r{i}", "v", seed=f"{i}-old")
            images.push_image(api, f"r{i}", "v", seed=f"{i}-new")
        result = run_cli(clean_args(server), report_path=tmp_path / "r.json")
        assert result.exit_code == 3, result.output
        assert "storage.delete.enabled" in result.stderr
        assert result.report is not None
        assert result.report["error"]
        assert result.report["summary"]["delete_requests"] <= 16 + 4
    finally:
        server.stop()


def test_unreachable_registry_exits_3_before_deleting(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    from testkit.registry import free_port

    result = run_cli(
        ["clean", "--registry-url", f"http://127.0.0.1:{free_port()}", "--registry-dir", str(root)]
    )
    assert result.exit_code == 3
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.output


def test_nested_names_and_prefix_repositories_are_all_found(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    for repo in ("x", "x/y", "x/y/z", "deep/er/still/deeper"):
        images.push_image(api, repo, "t", seed=repo)
    result = run_cli(clean_args(registry, "--dry-run"), report_path=tmp_path / "r.json")
    assert result.report is not None
    names = {r["name"] for r in result.report["repositories"]}
    assert names == {"x", "x/y", "x/y/z", "deep/er/still/deeper"}
    assert os.path.isdir(registry.root)
