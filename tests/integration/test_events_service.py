"""``events serve`` as a process: authentication, refusals that record nothing, answers
only after the commit, group commit under concurrency, SIGTERM. No registry needed: these
envelopes are the ones 2.8.2 and 3.1.1 send (see tests/integration/test_events.py for the
real registry end to end)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from regcleaner.events.store import PullHistory
from testkit.events import EventsService

TOKEN = "s3cret-token"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def digest(number: int) -> str:
    return f"sha256:{number:064x}"


def pull(repository: str, number: int, tag: str | None = None) -> dict[str, Any]:
    target: dict[str, Any] = {
        "mediaType": MANIFEST, "digest": digest(number), "repository": repository,
        "url": f"http://r/v2/{repository}/manifests/{digest(number)}", "size": 1,
    }  # fmt: skip
    if tag:
        target["tag"] = tag
    return {"id": str(number), "timestamp": "2026-12-07T04:54:38.5Z", "action": "pull",
            "target": target, "request": {"method": "GET"}}  # fmt: skip


def post(service: EventsService, body: bytes, token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{service.url}/events", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[EventsService]:
    events = EventsService(tmp_path / "events", token=TOKEN)
    events.start()
    try:
        yield events
    finally:
        events.kill()


def recorded(db: Path, repository: str, number: int) -> float | None:
    with PullHistory(db) as history:
        return history.last_pull(repository, digest(number))


def test_only_the_bearer_token_gets_in(service: EventsService) -> None:
    body = envelope(pull("team/app", 1, "v1"))
    for token in (None, "wrong", TOKEN + "x", ""):
        status, text = post(service, body, token=token)
        assert status == 401, token
        assert TOKEN not in text
    status, _ = post(service, body)
    assert status == 200
    assert recorded(service.db, "team/app", 1) == 1796619278.5


def test_coverage_begins_with_the_first_envelope_not_with_the_start(
    service: EventsService,
) -> None:
    """A service up before the registry is told about it has seen nothing: no coverage."""
    with PullHistory(service.db) as history:
        assert history.covered_since is None
    before = time.time()
    status, _ = post(service, envelope())  # e.g. a push the registry announced
    assert status == 200
    with PullHistory(service.db) as history:
        assert history.covered_since is not None
        assert before <= history.covered_since <= time.time()
        first = history.covered_since
    service.stop()
    service.start()
    post(service, envelope(pull("team/app", 40)))
    with PullHistory(service.db) as history:
        assert history.covered_since == first  # a restart does not move it


def test_malformed_and_oversized_envelopes_are_refused_and_record_nothing(
    service: EventsService,
) -> None:
    bad_second = pull("team/app", 3)
    bad_second["target"]["digest"] = "sha256:nothex"
    status, text = post(service, envelope(pull("team/app", 2, "v1"), bad_second))
    assert status == 400
    assert "events[1].target.digest" in text
    status, text = post(service, b"{" * 10)
    assert status == 400
    assert "not JSON" in text
    huge = envelope(*(pull("team/app", n) for n in range(10, 8000)))
    assert len(huge) > 1024 * 1024
    status, text = post(service, huge)
    assert status == 413
    assert "over 1048576 bytes" in text
    assert recorded(service.db, "team/app", 2) is None
    assert recorded(service.db, "team/app", 10) is None


def test_an_answer_means_the_pulls_are_on_disk(service: EventsService) -> None:
    """Killed (SIGKILL) right after answering: what it answered 200 for is in the file."""
    for number in range(20, 30):
        status, _ = post(service, envelope(pull("team/app", number, f"t{number}")))
        assert status == 200
    service.kill()
    with PullHistory(service.db) as history:
        assert all(history.last_pull("team/app", digest(n)) for n in range(20, 30))
        tag = history.last_tag_pull("team/app", "t29")
        assert tag is not None
        assert tag.digest == digest(29)


async def _post_many(url: str, count: int, answered: asyncio.Event | None = None) -> list[int]:
    """POST ``count`` envelopes at once; their statuses (0: no answer). ``answered`` is set
    once 20 answers came back."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answers = 0
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(number: int) -> int:
            nonlocal answers
            try:
                body = envelope(pull("load/app", number))
                async with session.post(f"{url}/events", data=body) as answer:
                    answers += 1
                    if answered is not None and answers >= 20:
                        answered.set()
                    return answer.status
            except aiohttp.ClientError:
                return 0

        return await asyncio.gather(*(one(n) for n in range(count)))


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


def test_concurrent_envelopes_share_commits_and_all_land(service: EventsService) -> None:
    statuses = asyncio.run(_post_many(service.url, 300))
    assert statuses == [200] * 300
    with urllib.request.urlopen(f"{service.url}/metrics") as answer:
        metrics = answer.read().decode()
    commits = _metric(metrics, "regcleaner_events_commit_envelopes_count")
    assert _metric(metrics, "regcleaner_events_commit_envelopes_sum") == 300
    assert commits < 300, "every envelope had its own transaction: no group commit"
    assert _metric(metrics, "regcleaner_events_manifest_pulls_total") == 300
    assert _metric(metrics, 'regcleaner_events_envelopes_total{outcome="recorded"}') == 300
    with PullHistory(service.db) as history:
        assert len(history.repository_pulls("load/app")) == 300
    with urllib.request.urlopen(f"{service.url}/healthz") as answer:
        assert answer.status == 200


def test_sigterm_finishes_what_is_in_flight_and_exits_0(service: EventsService) -> None:
    async def scenario() -> list[int]:
        answered = asyncio.Event()
        sending = asyncio.create_task(_post_many(service.url, 1000, answered))
        await answered.wait()  # the signal comes with hundreds of requests in flight
        await asyncio.to_thread(service.stop_signal)
        return await sending

    statuses = asyncio.run(scenario())
    assert service.wait() == 0
    assert set(statuses) <= {200, 0}, "an answer other than 200 or a closed connection"
    accepted = [n for n, status in enumerate(statuses) if status == 200]
    assert len(accepted) >= 20
    with PullHistory(service.db) as history:
        pulls = history.repository_pulls("load/app")
    assert all(digest(n) in pulls for n in accepted)
    assert "stopped; the pull record" in service.log_path.read_text()


def test_without_a_token_it_warns_and_accepts(tmp_path: Path) -> None:
    events = EventsService(tmp_path / "open", token=None)
    events.start()
    try:
        status, _ = post(events, envelope(pull("team/app", 5)), token=None)
        assert status == 200
    finally:
        assert events.stop() == 0
    assert "REGCLEANER_EVENTS_TOKEN is not set" in events.log_path.read_text()
