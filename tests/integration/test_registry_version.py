"""``--registry-version``, or what the registry at the URL answers: on 3 gc removes the
``_layers`` links of the blobs it sweeps (as 3's garbage-collect does), on 2.8 it
leaves them, and with no way to tell (``--registry-stopped``, no URL) they stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.registry import Flavour, RegistryProcess, running
from tests.conftest import run_cli
from tests.integration.test_gc_equality import layer_links_on_disk, swept_links_storage


def gc(root: Path, tmp_path: Path, *extra: str) -> dict[str, object]:
    result = run_cli(["gc", "--registry-dir", str(root), "--progress-interval", "0", *extra],
                     report_path=tmp_path / "gc.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.report is not None
    summary: dict[str, object] = result.report["summary"]
    return summary


def test_the_registry_at_the_url_says_which_it_is(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    registry = RegistryProcess(tmp_path / "registry", flavour=registry_flavour, readonly=True)
    swept_links_storage(registry.root)
    before = layer_links_on_disk(registry.root)
    with running(registry):
        summary = gc(registry.root, tmp_path, "--registry-url", registry.url)
    removed = before - layer_links_on_disk(registry.root)
    if registry_flavour == "3.1.1":
        assert removed
        assert summary["layer_links_removed"] == len(removed)
    else:
        assert removed == set()


@pytest.mark.parametrize(("version", "links_go"), [("3", True), ("2", False), (None, False)])
def test_told_or_unknown(tmp_path: Path, version: str | None, links_go: bool) -> None:
    root = tmp_path / "root"
    swept_links_storage(root)
    before = layer_links_on_disk(root)
    extra = ["--registry-stopped"] + (["--registry-version", version] if version else [])
    gc(root, tmp_path, *extra)
    assert (layer_links_on_disk(root) != before) is links_go


def test_a_version_regcleaner_does_not_know_is_refused(tmp_path: Path) -> None:
    result = run_cli(["gc", "--registry-stopped", "--registry-dir", str(tmp_path),
                      "--registry-version", "4"])  # fmt: skip
    assert result.exit_code == 2
    assert "--registry-version must be 2 or 3, not '4'" in result.stderr
