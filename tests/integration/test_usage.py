"""``regcleaner usage`` against what the registry's own garbage-collect frees, on both
registries (the ``registry`` fixture runs each test on 2.8.2 and 3.1.1).

Images are pushed through the API: repositories share whole images (the same manifest
pushed to two repositories), an untagged twin is reclaimable only when both copies go,
an index keeps its children, a referrer its subject. Each number is then checked
against reality:

- reclaimable: ``regcleaner clean --include R`` (then of everything), the registry's
  ``garbage-collect``, and the bytes it removed from ``blobs/``;
- exclusive: every manifest of R deleted through the API, ``garbage-collect``, bytes.

What garbage-collect removes besides is the orphaned blobs measured just before: both
numbers of the same measurement add up to the bytes freed.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from regcleaner.usage.command import usage
from testkit.api import RegistryAPI
from testkit.images import push_image, push_multiarch, push_referrer
from testkit.registry import RegistryProcess
from testkit.registry_writer import DiskSink, RegistryWriter
from tests.cli.test_observability import pushgateway  # noqa: F401 - the fixture
from tests.conftest import clean_args, run_cli

APP = typer.Typer()
APP.command("usage")(usage)
APP.command("unused")(lambda: None)


def measure(registry: RegistryProcess) -> dict[str, Any]:
    """``regcleaner usage --output json`` with clean's options as the test runs it."""
    result = CliRunner().invoke(
        APP,
        ["usage", "--registry-dir", str(registry.root), "--output", "json", "--min-age", "0",
         "--progress-interval", "0"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in document["repositories"]}


def blob_bytes(root: Path) -> int:
    """Bytes of every blob under ``blobs/`` now."""
    base = root / "docker/registry/v2/blobs"
    return sum(path.stat().st_size for path in base.glob("*/*/*/data"))


def collect(registry: RegistryProcess) -> int:
    """Run the registry's garbage-collect; the bytes it freed. The registry is restarted
    after (its blob-descriptor cache may still describe what was swept)."""
    before = blob_bytes(registry.root)
    registry.garbage_collect()
    registry.restart()
    return before - blob_bytes(registry.root)


def revisions(root: Path, repository: str) -> list[str]:
    folder = root / f"docker/registry/v2/repositories/{repository}/_manifests/revisions/sha256"
    return sorted("sha256:" + path.name for path in folder.iterdir()) if folder.is_dir() else []


def push_scenario(api: RegistryAPI) -> None:
    """Three repositories that share, keep and free in every way the numbers count."""
    push_image(api, "alpha", "v1", seed="alpha-v1", layers=2)
    push_image(api, "alpha", None, seed="alpha-old", layers=2)  # untagged history
    push_multiarch(api, "alpha", "multi", seed="alpha-multi")  # children kept by the tag
    push_image(api, "alpha", "base", seed="shared-base", oci=True)  # also in beta
    push_image(api, "beta", "base", seed="shared-base", oci=True)
    push_image(api, "alpha", None, seed="twin", layers=3)  # untagged in both
    push_image(api, "beta", None, seed="twin", layers=3)
    tagged = push_image(api, "beta", "v2", seed="beta-v2", oci=True)
    push_referrer(api, "beta", tagged, seed="beta-sbom")  # kept with its subject
    old = push_image(api, "gamma", None, seed="gamma-old", oci=True)
    push_referrer(api, "gamma", old, seed="gamma-sbom")  # goes with its subject
    push_image(api, "gamma", "stable", seed="gamma-stable")
    api.push_blob("gamma", b"an orphan: uploaded, never referenced" * 50)


def test_reclaimable_equals_what_clean_then_gc_free(registry: RegistryProcess) -> None:
    push_scenario(RegistryAPI(registry.url))
    first = measure(registry)
    rows = by_name(first)
    assert rows["alpha"]["reclaimable_bytes"] > 0
    assert rows["gamma"]["reclaimable_bytes"] > 0
    assert first["totals"]["reclaimable_shared_bytes"] > 0  # the untagged twin
    assert first["totals"]["orphaned_bytes"] > 0

    # One repository cleaned alone: its reclaimable bytes, and the orphans.
    assert run_cli(clean_args(registry, "--include", "alpha")).exit_code == 0
    assert collect(registry) == rows["alpha"]["reclaimable_bytes"] + first["totals"][
        "orphaned_bytes"]  # fmt: skip

    # Then everything: the total reclaimable bytes (the twin's included).
    second = measure(registry)
    assert by_name(second)["alpha"]["reclaimable_bytes"] == 0
    assert second["totals"]["orphaned_bytes"] == 0
    assert run_cli(clean_args(registry)).exit_code == 0
    assert collect(registry) == second["totals"]["reclaimable_bytes"] > 0
    assert measure(registry)["totals"]["reclaimable_bytes"] == 0


def test_exclusive_equals_what_deleting_the_repository_then_gc_free(
    registry: RegistryProcess,
) -> None:
    api = RegistryAPI(registry.url)
    push_scenario(api)
    for repository in ("gamma", "alpha", "beta"):
        before = measure(registry)
        row = by_name(before)[repository]
        for digest in revisions(registry.root, repository):
            response = api.request("DELETE", f"/v2/{repository}/manifests/{digest}")
            assert response.status in (202, 404), (response.status, response.body)
        freed = collect(registry)
        assert freed == row["exclusive_bytes"] + before["totals"]["orphaned_bytes"], repository
        assert freed > 0
    # alpha and beta shared an image: neither held it alone, beta last freed it.
    final = measure(registry)
    assert final["totals"]["blob_bytes"] == blob_bytes(registry.root) == 0


def test_gauges_reach_a_real_pushgateway(tmp_path: Path, pushgateway: str) -> None:  # noqa: F811
    writer = RegistryWriter(DiskSink(tmp_path))
    image = writer.image("lib", b'{"lib":1}', [b"layer\n" * 100], oci=True)
    writer.tag("lib", "v1", image.digest)
    result = CliRunner().invoke(
        APP, ["usage", "--registry-dir", str(tmp_path), "--output", "json",
              "--pushgateway", pushgateway, "--progress-interval", "0"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["repositories"][0]
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:
        text = response.read().decode()
    pushed = re.search(
        r'^regcleaner_usage_repository_exclusive_bytes\{[^}]*repository="lib"[^}]*\} (\S+)$',
        text, re.MULTILINE,
    )  # fmt: skip
    assert pushed is not None, text[-2000:]
    assert float(pushed.group(1)) == row["exclusive_bytes"] > 0
    assert 'job="regcleaner_usage"' in text
