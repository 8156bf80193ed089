"""``clean --policy P --pulls-db DB`` end to end, on 2.8.2 and 3.1.1 alike: the registry
notifies ``regcleaner events serve``, skopeo pulls some images by tag, by digest and
through another tag of the same digest, and a ``pulled_within`` policy then keeps what
was pulled and expires the rest, through the API. While recording is younger than the
period, nothing expires on pull grounds and the report says why."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from regcleaner.events.store import PullHistory, PullStore, PullStoreError
from testkit import images
from testkit.api import RegistryAPI
from testkit.clients import Skopeo
from testkit.events import EventsService, NotifyingRegistry
from testkit.registry import Flavour, RegistryProcess
from tests.conftest import clean_args, run_cli

pytestmark = pytest.mark.integration

TOKEN = "registry-to-recorder"
HOUR = 3600.0
POLICY = """\
policies:
  - repositories: ["team/**"]
    keep:
      - pulled_within: 1h
"""


@pytest.fixture
def recorded(
    registry_flavour: Flavour, tmp_path: Path
) -> Iterator[tuple[NotifyingRegistry, EventsService]]:
    """An events service, and a registry of the current flavour notifying it."""
    service = EventsService(tmp_path / "events", token=TOKEN)
    service.start()
    registry = NotifyingRegistry(
        tmp_path / "registry", endpoint=service.url, token=TOKEN, flavour=registry_flavour
    )
    try:
        registry.start()
        yield registry, service
    finally:
        registry.stop()
        service.stop()


def poll(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.05)  # polling interval


def tag_reasons(report: dict[str, Any] | None, repository: str) -> dict[str, dict[str, str]]:
    """The report's tags section of ``repository``: kept → reason, removed → reason."""
    assert report is not None
    (found,) = [r for r in report["repositories"] if r["name"] == repository]
    section = found["tags"]
    return {
        "kept": {t["tag"]: t["reason"] for t in section["kept"]},
        "removed": {t["tag"]: t["reason"] for t in section["removed"]},
        "expired": {t["tag"]: t["stays"] for t in section["expired"]},
    }


V2 = "docker/registry/v2"


def on_disk(registry: NotifyingRegistry, digest: str) -> bool:
    """The manifest's revision link is in storage (read from disk: a GET through the
    registry would be a pull, and recorded)."""
    revisions = registry.root / V2 / "repositories/team/app/_manifests/revisions/sha256"
    return (revisions / digest.removeprefix("sha256:") / "link").is_file()


def tag_again(registry: NotifyingRegistry, api: RegistryAPI, digest: str, tag: str) -> None:
    """Push the manifest ``digest`` again under ``tag``, its bytes read from disk (not
    pulled: that would count)."""
    hex_digest = digest.removeprefix("sha256:")
    data = registry.root / V2 / "blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    body = data.read_bytes()
    api.put_manifest("team/app", tag, body, json.loads(body)["mediaType"])


def test_pulled_images_stay_and_the_others_expire_once_recording_covers_the_period(
    recorded: tuple[NotifyingRegistry, EventsService], tmp_path: Path
) -> None:
    registry, service = recorded
    api = RegistryAPI(registry.url)
    by_tag = images.push_image(api, "team/app", "by-tag", seed="by-tag")
    by_digest = images.push_image(api, "team/app", "by-digest", seed="by-digest")
    shared = images.push_image(api, "team/app", "shared-a", seed="shared")
    tag_again(registry, api, shared.digest, "shared-b")
    never = images.push_image(api, "team/app", "never", seed="never")
    never_oci = images.push_image(api, "team/app", "never-oci", seed="never-oci", oci=True)

    skopeo = Skopeo(f"127.0.0.1:{registry.port}", tmp_path / "skopeo")
    skopeo.pull("team/app", "by-tag")
    skopeo.pull("team/app", by_digest.digest)
    skopeo.pull("team/app", "shared-b")  # keeps shared-a too: the same digest

    def recorded_all() -> bool:
        with PullHistory(service.db) as history:
            tag = history.last_tag_pull("team/app", "shared-b")
            return (
                tag is not None
                and history.last_pull("team/app", by_tag.digest) is not None
                and history.last_pull("team/app", by_digest.digest) is not None
            )

    poll(recorded_all, "the three pulls are recorded")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    args = clean_args(registry, "--policy", str(policy), "--pulls-db", str(service.db))

    # 1. Recording began seconds ago: no pull on record proves nothing yet.
    early = run_cli(args, report_path=tmp_path / "early.json")
    assert early.exit_code == 0, early.output
    assert early.report is not None
    assert early.report["summary"]["deleted"] == 0
    assert "pull recording covers less than the longest pulled_within period" in early.output
    tags = tag_reasons(early.report, "team/app")
    assert set(tags["kept"]) == {"by-tag", "by-digest", "shared-a", "shared-b", "never",
                                 "never-oci"}  # fmt: skip
    assert not tags["removed"]
    for tag in ("by-tag", "by-digest", "shared-a", "shared-b"):
        assert tags["kept"][tag].startswith("keep[0](line 4):pulled-within: pulled 20"), tags
    for tag in ("never", "never-oci"):
        reason = tags["kept"][tag]
        assert reason.startswith("keep[0](line 4):pulled-within-unknown: pull recording began")
        assert reason.endswith("too recent to tell whether it was pulled"), reason
    for pushed in (by_tag, by_digest, shared, never, never_oci):
        assert on_disk(registry, pushed.digest)

    # 2. Recording covers the whole hour (as after `events import-log --complete` of the
    # registry's older logs): what was not pulled expires and goes with its digest.
    assert service.stop() == 0
    store = PullStore(service.db)
    try:
        assert store.extend_coverage(time.time() - 2 * HOUR) is not None
    finally:
        store.close()
    late = run_cli(args, report_path=tmp_path / "late.json")
    assert late.exit_code == 0, late.output
    assert late.report is not None
    tags = tag_reasons(late.report, "team/app")
    assert set(tags["kept"]) == {"by-tag", "by-digest", "shared-a", "shared-b"}, tags
    assert set(tags["removed"]) == {"never", "never-oci"}, tags
    assert not tags["expired"], "no expired tag stays"
    for tag in ("never", "never-oci"):
        assert tags["removed"][tag].startswith("expired:policies[0](line 2): never pulled "
                                               "(recording since 20"), tags  # fmt: skip
    assert late.report["summary"]["deleted"] == 2
    assert "pull recording covers less" not in late.output
    for pushed in (never, never_oci):
        assert not on_disk(registry, pushed.digest)
        assert not api.manifest_exists("team/app", pushed.digest)
    for pushed in (by_tag, by_digest, shared):
        assert on_disk(registry, pushed.digest)
    assert sorted(api.tags("team/app")) == ["by-digest", "by-tag", "shared-a", "shared-b"]
    skopeo.pull("team/app", "shared-a")  # what stays pulls completely
    skopeo.pull("team/app", "by-digest")


def test_a_pull_record_that_breaks_mid_run_stops_it_and_deletes_nothing(
    registry: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull record unreadable once the run has begun (a disk error, a file swapped)
    ends the run with exit 2 and the record's error, never an internal error; nothing
    in the repository goes."""
    api = RegistryAPI(registry.url)
    images.push_image(api, "team/app", "never", seed="never-read")
    images.push_image(api, "team/app", "kept", seed="kept-read")
    db = tmp_path / "pulls.db"
    store = PullStore(db)
    try:
        store.record([], started_at=time.time() - 2 * HOUR)  # covers the hour: "never" could go
    finally:
        store.close()

    def broken(self: PullHistory, repository: str) -> dict[str, float]:
        raise PullStoreError(f"{self.path}: cannot read the pull record: disk I/O error")

    monkeypatch.setattr(PullHistory, "repository_pulls", broken)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    result = run_cli(
        clean_args(registry, "--policy", str(policy), "--pulls-db", str(db)),
        report_path=tmp_path / "r.json",
    )
    assert result.exit_code == 2, result.output
    assert "cannot read the pull record: disk I/O error" in result.output
    assert "internal error" not in result.output
    assert result.report is not None
    (found,) = result.report["repositories"]
    assert found["error"].startswith("cannot read the pull record")
    assert not found["deleted"]
    assert sorted(api.tags("team/app")) == ["kept", "never"]
