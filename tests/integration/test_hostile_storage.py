"""Hostile or broken storage: each case warns, keeps what it touches, and crashes nothing."""

from __future__ import annotations

import os
from pathlib import Path

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from tests.conftest import clean_args, run_cli

V2 = "docker/registry/v2"


def kept_reasons(report: dict[str, object], repo: str) -> dict[str, str]:
    repos = report["repositories"]
    assert isinstance(repos, list)
    entry = next(r for r in repos if r["name"] == repo)
    return {k["digest"]: k["reason"] for k in entry["kept"]}


def test_hostile_storage_is_survived(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    root = registry.root
    repos = root / V2 / "repositories"
    # A control repository that must be cleaned normally.
    control_old = images.push_image(api, "control", "v", seed="c1")
    images.push_image(api, "control", "v", seed="c2")

    # 1. Truncated and garbage tag links.
    old = images.push_image(api, "links", "a", seed="l1")
    images.push_image(api, "links", "a", seed="l2")
    images.push_image(api, "links", "b", seed="l3")
    (repos / "links/_manifests/tags/b/current/link").write_bytes(b"sha256:12")
    # 2. A huge manifest blob (above the 4 MiB cap) under a valid revision link.
    huge_old = images.push_image(api, "huge", "v", seed="h0")
    images.push_image(api, "huge", "v", seed="h1")
    huge = images.push_image(api, "huge", None, seed="h2")
    hex_part = huge.digest[7:]
    (root / V2 / "blobs/sha256" / hex_part[:2] / hex_part / "data").write_bytes(
        b" " * (4 * 1024 * 1024 + 10)
    )
    # 3. A missing manifest blob.
    gone_old = images.push_image(api, "missing", "v", seed="m0")
    images.push_image(api, "missing", "v", seed="m1")
    missing = images.push_image(api, "missing", None, seed="m2")
    os.remove(root / V2 / "blobs/sha256" / missing.digest[7:9] / missing.digest[7:] / "data")
    # 4. Symlinks pointing outside the root: a repository and a revision link.
    outside = tmp_path / "outside"
    (outside / "evil/_manifests/revisions/sha256" / ("e" * 64)).mkdir(parents=True)
    (outside / "evil/_manifests/revisions/sha256" / ("e" * 64) / "link").write_text(
        "sha256:" + "e" * 64
    )
    os.symlink(outside / "evil", repos / "evil")
    images.push_image(api, "sym", "v", seed="s1")
    fake_hex = "f" * 64
    (repos / "sym/_manifests/revisions/sha256" / fake_hex).mkdir()
    os.symlink(outside / "secret", repos / "sym/_manifests/revisions/sha256" / fake_hex / "link")
    # 5. Odd directory names that are not valid repository names.
    weird = repos / "Bad Name/_manifests/revisions/sha256" / ("a" * 64)
    weird.mkdir(parents=True)
    (weird / "link").write_text("sha256:" + "a" * 64)
    (repos / "a%2fb/_manifests/tags").mkdir(parents=True)

    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.exit_code == 1, result.output  # the odd names count as failed repositories
    assert "Traceback" not in result.output
    report = result.report
    assert report is not None
    names = {r["name"]: r for r in report["repositories"]}

    assert {d["digest"] for d in names["control"]["deleted"]} == {control_old.digest}
    assert names["links"]["deleted"] == []
    assert kept_reasons(report, "links")[old.digest] == "blocked:tag:b"
    assert names["huge"]["deleted"] == []
    assert kept_reasons(report, "huge")[huge.digest].startswith("unreadable:")
    assert kept_reasons(report, "huge")[huge_old.digest].startswith("blocked:")
    assert names["missing"]["deleted"] == []
    assert kept_reasons(report, "missing")[missing.digest] == (
        "unreadable:manifest blob is missing"
    )
    assert kept_reasons(report, "missing")[gone_old.digest].startswith("blocked:")
    assert "evil" not in names  # the symlinked repository was never followed
    assert "sha256:" + fake_hex not in kept_reasons(report, "sym")
    assert names["Bad Name"]["error"].startswith("not a valid repository name")
    assert names["a%2fb"]["error"].startswith("not a valid repository name")
    for repo, digest in [("links", old.digest), ("huge", huge_old.digest),
                         ("missing", gone_old.digest)]:  # fmt: skip
        assert api.manifest_exists(repo, digest)
    assert "links" in result.stderr
    assert "huge" in result.stderr


def test_a_tag_link_ending_in_a_newline_blocks_its_repository(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    """The registry reads a link file as it is, without trimming (blobstore.readlink):
    it answers 500 for such a tag. regcleaner reads it the same way: the tag is broken,
    and its repository is kept whole, with a warning."""
    old = images.push_image(api, "newline", "v1", seed="n1")
    current = images.push_image(api, "newline", "v1", seed="n2")
    link = registry.root / V2 / "repositories/newline/_manifests/tags/v1/current/link"
    link.write_bytes(current.digest.encode() + b"\n")
    assert api.get_manifest("newline", "v1").status == 500
    control_old = images.push_image(api, "control", "v", seed="c1")
    images.push_image(api, "control", "v", seed="c2")

    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    report = result.report
    assert report is not None
    names = {r["name"]: r for r in report["repositories"]}
    assert names["newline"]["deleted"] == []
    assert kept_reasons(report, "newline")[old.digest] == "blocked:tag:v1"
    assert any("v1" in w and "current link" in w for w in names["newline"]["warnings"])
    assert {d["digest"] for d in names["control"]["deleted"]} == {control_old.digest}
    assert api.manifest_exists("newline", old.digest)
