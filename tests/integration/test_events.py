"""End to end with the real registry, 2.8.2 and 3.1.1 (the same envelopes and log lines;
3.1.1 labels its envelopes ``events.v2+json``): skopeo pulls by tag and by digest reach
``events serve`` through ``notifications.endpoints``; the recorded times are the pulls';
HEADs are not pulls; a service killed mid-way loses nothing the registry delivered or
queued; ``events import-log`` reads the same registry's log."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from regcleaner import mediatypes
from regcleaner.events.command import events_app
from regcleaner.events.store import PullHistory
from testkit import images
from testkit.api import RegistryAPI
from testkit.clients import Skopeo
from testkit.events import EventsService, NotifyingRegistry

TOKEN = "registry-to-recorder"
FLAVOURS = ["2.8.2", "3.1.1"]


@pytest.fixture(params=FLAVOURS)
def recorded_registry(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[NotifyingRegistry, EventsService]]:
    """An events service, and a registry of each flavour notifying it."""
    service = EventsService(tmp_path / "events", token=TOKEN)
    service.start()
    registry = NotifyingRegistry(
        tmp_path / "registry", endpoint=service.url, token=TOKEN, flavour=request.param
    )
    try:
        registry.start()
        yield registry, service
    finally:
        registry.stop()
        service.kill()


def poll(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.05)  # polling interval


def last_pull(db: Path, repository: str, digest: str) -> float | None:
    with PullHistory(db) as history:
        return history.last_pull(repository, digest)


def test_pulls_by_tag_and_digest_are_recorded_and_survive_a_restart(
    recorded_registry: tuple[NotifyingRegistry, EventsService], tmp_path: Path
) -> None:
    registry, service = recorded_registry
    api = RegistryAPI(registry.url)
    by_tag = images.push_image(api, "team/app", "v1", seed="by-tag")
    by_digest = images.push_image(api, "team/app", "v2", seed="by-digest")
    headed = images.push_image(api, "team/app", "v3", seed="head-only")
    never = images.push_image(api, "team/app", "v4", seed="never")
    skopeo = Skopeo(f"127.0.0.1:{registry.port}", tmp_path / "skopeo")

    before = time.time()
    skopeo.pull("team/app", "v1")
    skopeo.pull("team/app", by_digest.digest)
    head = urllib.request.Request(f"{registry.url}/v2/team/app/manifests/v3", method="HEAD",
                                  headers={"Accept": mediatypes.ACCEPT_ALL_MANIFESTS})  # fmt: skip
    with urllib.request.urlopen(head) as answer:
        assert answer.status == 200
    after = time.time()
    # Events reach an endpoint in order: once the digest pull is in, the HEAD was delivered.
    poll(lambda: last_pull(service.db, "team/app", by_digest.digest) is not None,
         "the pull by digest is recorded")  # fmt: skip
    with PullHistory(service.db) as history:
        covered_since = history.covered_since
        assert covered_since is not None
        # Pushes are not sent (ignore: actions): coverage begins with the first pull's envelope.
        assert before <= covered_since <= time.time()
        for pushed in (by_tag, by_digest):
            at = history.last_pull("team/app", pushed.digest)
            assert at is not None
            assert before - 1 <= at <= after + 1  # registry and test share a clock
        tag = history.last_tag_pull("team/app", "v1")
        assert tag is not None
        assert tag.digest == by_tag.digest
        assert history.last_tag_pull("team/app", "v2") is None  # pulled by digest only
        assert history.last_pull("team/app", headed.digest) is None  # a HEAD is no pull
        assert history.last_tag_pull("team/app", "v3") is None
        assert history.last_pull("team/app", never.digest) is None

    # Killed like an evicted pod: what the registry sends meanwhile waits in its queue.
    service.kill()
    down_since = time.time()
    skopeo.pull("team/app", "v3")
    skopeo.pull("team/app", "v1")
    service.start()
    poll(lambda: last_pull(service.db, "team/app", headed.digest) is not None,
         "the pull made while the service was down is recorded after its restart")  # fmt: skip
    poll(lambda: (last_pull(service.db, "team/app", by_tag.digest) or 0) >= down_since,
         "the second pull of v1 is recorded")  # fmt: skip
    with PullHistory(service.db) as history:
        assert history.covered_since == covered_since  # a restart does not restart coverage
        assert history.last_pull("team/app", never.digest) is None

    # The same registry's log, imported into a fresh record: tags and no HEADs.
    imported = tmp_path / "imported.db"
    result = CliRunner().invoke(
        events_app, ["import-log", str(registry.log_path), "--db", str(imported)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "manifest pulls recorded" in result.output
    with PullHistory(imported) as history:
        assert history.covered_since is None  # a log alone never proves an absence
        assert history.last_pull("team/app", by_digest.digest) is not None
        tag = history.last_tag_pull("team/app", "v1")
        assert tag is not None
        assert tag.digest is None  # the log does not say which digest a tag served
        assert tag.at >= down_since - 1
        assert history.last_tag_pull("team/app", "v4") is None
        assert history.last_pull("team/app", never.digest) is None


def test_the_registry_is_refused_without_the_token(tmp_path: Path) -> None:
    """A registry configured with another token: its envelopes get 401, nothing is kept,
    and the registry keeps them queued (it retries)."""
    service = EventsService(tmp_path / "events", token=TOKEN)
    service.start()
    registry = NotifyingRegistry(tmp_path / "registry", endpoint=service.url, token="wrong")
    try:
        registry.start()
        api = RegistryAPI(registry.url)
        pushed = images.push_image(api, "team/app", "v1", seed="refused")
        api.get_manifest("team/app", "v1")
        poll(lambda: "401 Unauthorized" in registry.log_path.read_text(errors="replace"),
             "the registry logs the refusal and retries")  # fmt: skip
        assert last_pull(service.db, "team/app", pushed.digest) is None
    finally:
        registry.stop()
        service.kill()
