"""An expired tag through the API: on distribution 3 it goes alone (DELETE by tag), on
2.8 only with its digest. The registry is asked, never guessed; the dry run plans what
the real run does; a tag moved since the plan stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from regcleaner.pushwatch import PushWatch
from testkit import images
from testkit.api import Pushed, RegistryAPI
from testkit.registry import RegistryProcess
from tests.conftest import clean_args, run_cli

POLICY = """\
policies:
  - repositories: ["app"]
    keep:
      - tags: ["^keep-"]
"""


def push_siblings(api: RegistryAPI) -> tuple[Pushed, Pushed]:
    """``keep-me`` and ``old-1`` on one digest; ``old-2`` alone on another."""
    kept = images.push_image(api, "app", "keep-me", seed="tagdel-kept")
    body = api.get_manifest("app", kept.digest)
    api.put_manifest("app", "old-1", body.body, body.headers["Content-Type"])
    lone = images.push_image(api, "app", "old-2", seed="tagdel-lone")
    return kept, lone


def tags_section(report: dict[str, Any] | None) -> dict[str, Any]:
    assert report is not None
    (entry,) = [r for r in report["repositories"] if r["name"] == "app"]
    section: dict[str, Any] = entry["tags"]
    return section


def run_policy(registry: RegistryProcess, tmp_path: Path, *extra: str) -> dict[str, Any]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    report = tmp_path / f"report{len(list(tmp_path.glob('report*')))}.json"
    result = run_cli(clean_args(registry, "--policy", str(policy), *extra), report_path=report)
    assert result.exit_code == 0, result.output
    assert result.report is not None
    return result.report


def test_an_expired_tag_with_a_kept_sibling_goes_alone_where_the_registry_can(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    kept, lone = push_siblings(api)
    planned = run_policy(registry, tmp_path, "--dry-run")
    report = run_policy(registry, tmp_path)

    removed = {t["tag"]: (t["digest"], t["how"]) for t in tags_section(report)["removed"]}
    staying = {t["tag"]: t["stays"] for t in tags_section(report)["expired"]}
    would = {t["tag"]: (t["digest"], t["how"]) for t in tags_section(planned)["removed"]}
    assert would == removed, "the dry run plans what the real run does"
    if registry.flavour == "3.1.1":
        assert report["tag_removal"] == "alone"
        assert removed == {"old-1": (kept.digest, "alone"), "old-2": (lone.digest, "alone")}
        assert staying == {}
        assert api.get_manifest("app", "old-1").status == 404
        assert sorted(api.tags("app")) == ["keep-me"]
    else:  # 2.8: a DELETE by digest would take keep-me along, so old-1 stays with it
        assert report["tag_removal"] == "with-digest"
        assert removed == {"old-2": (lone.digest, "with-digest")}
        assert staying == {"old-1": "shares-digest-with:keep-me"}
        assert sorted(api.tags("app")) == ["keep-me", "old-1"]
    assert not api.manifest_exists("app", lone.digest)
    assert kept.digest in api.pull("app", "keep-me")
    registry.stop()
    registry.garbage_collect()
    registry.start()
    assert kept.digest in api.pull("app", "keep-me")


def test_an_expired_tag_pushed_again_after_the_plan_stays(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, _ = push_siblings(api)
    newer = images.push_image(api, "app", "newer", seed="tagdel-newer")
    original = PushWatch.start

    async def retag_between_scan_and_removal(self: PushWatch) -> None:
        body = api.get_manifest("app", newer.digest)
        api.put_manifest("app", "old-1", body.body, body.headers["Content-Type"])
        await original(self)

    monkeypatch.setattr(PushWatch, "start", retag_between_scan_and_removal)
    report = run_policy(registry, tmp_path)

    assert "old-1" not in {t["tag"] for t in tags_section(report)["removed"]}
    assert newer.digest in api.pull("app", "old-1")
    assert kept.digest in api.pull("app", "keep-me")
