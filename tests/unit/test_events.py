"""Pull recording's pure parts and its SQLite record: envelopes, log lines, the
pulled_within decision, and the record's keep-the-later-time writes."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from regcleaner.errors import ConfigError
from regcleaner.events.accesslog import LogSummary, parse_line, pull_from_line, read_pulls
from regcleaner.events.decision import (
    PullVerdict,
    decide_pulled_within,
    last_pull_of_tagged_digest,
)
from regcleaner.events.envelope import (
    EnvelopeError,
    ManifestPull,
    parse_envelope,
    parse_timestamp,
)
from regcleaner.events.store import PullHistory, PullStore, PullStoreError, merge_pulls

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DAY = 86400.0


def pull_event(**changes: Any) -> dict[str, Any]:
    """A manifest pull by tag as distribution 2.8.2 and 3.1.1 send it."""
    event: dict[str, Any] = {
        "id": "ba8a4579-d3f8-4217-81e1-fc32c4b3ac8c",
        "timestamp": "2026-12-07T04:54:38.691289094Z",
        "action": "pull",
        "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 422, "digest": DIGEST_A, "length": 422, "repository": "team/app",
            "url": f"http://127.0.0.1:5000/v2/team/app/manifests/{DIGEST_A}", "tag": "v1",
        },
        "request": {"id": "d7", "addr": "127.0.0.1:39712", "host": "127.0.0.1:5000",
                    "method": "GET", "useragent": "skopeo/1.9.3"},
        "actor": {},
        "source": {"addr": "vm:5000", "instanceID": "71a6"},
    }  # fmt: skip
    for key, value in changes.items():
        if key in event["target"] or key in ("tag",):
            event["target"][key] = value
        else:
            event[key] = value
    return event


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


# --- envelopes ---------------------------------------------------------------


def test_a_pull_by_tag_gives_repository_digest_tag_and_nanosecond_time() -> None:
    pulls, count = parse_envelope(envelope(pull_event()))
    assert count == 1
    assert pulls == [ManifestPull("team/app", DIGEST_A, "v1", pulls[0].at)]
    assert pulls[0].at == pytest.approx(1796619278.691289094, abs=1e-6)


def test_a_pull_by_digest_has_no_tag() -> None:
    event = pull_event()
    del event["target"]["tag"]
    (pull,), _ = parse_envelope(envelope(event))
    assert pull.tag is None
    assert pull.digest == DIGEST_A


def test_blob_pulls_heads_pushes_and_deletes_are_not_manifest_pulls() -> None:
    blob = pull_event(mediaType="application/octet-stream",
                      url=f"http://r/v2/team/app/blobs/{DIGEST_B}")  # fmt: skip
    del blob["target"]["tag"]
    head = pull_event()
    head["request"]["method"] = "HEAD"
    push = pull_event(action="push")
    delete = {"action": "delete", "target": {"repository": "team/app", "digest": DIGEST_A}}
    mount = {"action": "mount", "target": "anything: not ours to judge"}
    pulls, count = parse_envelope(envelope(blob, head, push, delete, mount))
    assert pulls == []
    assert count == 5


@pytest.mark.parametrize(
    ("media_type", "tag", "is_manifest"),
    [
        ("application/vnd.docker.distribution.manifest.v2+json", None, True),
        ("application/vnd.example.artifact.v1+json", None, True),
        (None, None, True),
        ("application/octet-stream", None, False),
        ("application/vnd.oci.image.layer.v1.tar+gzip", None, False),
        ("application/vnd.oci.image.config.v1+json", None, False),
        ("application/octet-stream", "v1", True),
    ],
)
def test_without_url_the_tag_and_media_type_tell_a_manifest(
    media_type: str | None, tag: str | None, is_manifest: bool
) -> None:
    event = pull_event()
    del event["target"]["url"]
    event["target"]["tag"] = tag
    if media_type is None:
        del event["target"]["mediaType"]
    else:
        event["target"]["mediaType"] = media_type
    assert len(parse_envelope(envelope(event))[0]) == int(is_manifest)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not an envelope"),
        (b'{"events": {}}', "events: missing or not a list"),
        (b'{"events": [1]}', "events[0]: not an object"),
        (envelope(pull_event(), pull_event(repository="Team/App")), "events[1].target.repository"),
        (envelope(pull_event(digest="sha256:short")), "events[0].target.digest"),
        (envelope(pull_event(digest=None)), "events[0].target.digest"),
        (envelope(pull_event(tag="-bad")), "events[0].target.tag"),
        (envelope(pull_event(timestamp="yesterday")), "events[0].timestamp"),
        (envelope(pull_event(timestamp=17)), "events[0].timestamp"),
        (envelope(pull_event(target=[])), "events[0].target"),
    ],
)
def test_malformed_envelopes_are_refused_whole(body: bytes, says: str) -> None:
    with pytest.raises(EnvelopeError, match=re.escape(says)):
        parse_envelope(body)


def test_timestamps_with_offsets_and_without_fractions() -> None:
    assert parse_timestamp("2026-12-07T06:54:38+02:00") == parse_timestamp("2026-12-07T04:54:38Z")
    assert (
        parse_timestamp("2026-12-07T04:54:38.5Z") == parse_timestamp("2026-12-07T04:54:38Z") + 0.5
    )
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_timestamp("2026-12-07 04:54:38")


# --- access logs -------------------------------------------------------------

LOG_282 = [
    'time="2026-12-07T04:54:38.691346129Z" level=info msg="response completed" '
    'go.version=go1.19.8 http.request.host="127.0.0.1:34365" http.request.id=d7 '
    'http.request.method=GET http.request.remoteaddr="127.0.0.1:39712" '
    "http.request.uri=/v2/team/app/manifests/v1 http.request.useragent=skopeo/1.9.3 "
    "http.response.contenttype=application/vnd.docker.distribution.manifest.v2+json "
    'http.response.duration="828.634µs" http.response.status=200 http.response.written=422',
    '127.0.0.1 - - [07/Dec/2026:04:54:38 +0000] "GET /v2/team/app/manifests/v1 HTTP/1.1" 200 '
    '422 "" "skopeo/1.9.3"',
]
LOG_311_HEAD = [
    'time="2026-12-07T04:54:46.097144172Z" level=info msg="response completed" '
    "go.version=go1.27.3 http.request.method=HEAD http.request.uri=/v2/team/app/manifests/v1 "
    "http.response.status=200 http.response.written=0 vars.name=team/app version=3.1.1",
    '127.0.0.1 - - [07/Dec/2026:04:54:46 +0000] "HEAD /v2/team/app/manifests/v1 HTTP/1.1" 200 '
    '0 "" "Python-urllib/3.11"',
]


def test_both_log_lines_of_a_get_by_tag_give_the_tag() -> None:
    request_line, access_line = (parse_line(line) for line in LOG_282)
    assert request_line is not None
    assert access_line is not None
    assert request_line.at == pytest.approx(1796619278.691346, abs=1e-5)
    assert access_line.at == 1796619278.0
    assert pull_from_line(request_line) == ManifestPull("team/app", None, "v1", request_line.at)
    assert pull_from_line(access_line) == ManifestPull("team/app", None, "v1", 1796619278.0)


def test_heads_failed_gets_blobs_and_other_lines_are_not_pulls() -> None:
    for text in LOG_311_HEAD:
        line = parse_line(text)
        assert line is not None
        assert pull_from_line(line) is None
    lines = [
        f'x [07/Dec/2026:04:54:46 +0000] "GET /v2/team/app/manifests/{DIGEST_A} HTTP/1.1" 404 9 ',
        f'x [07/Dec/2026:04:54:46 +0000] "GET /v2/team/app/blobs/{DIGEST_A} HTTP/1.1" 200 9 ',
        'x [07/Dec/2026:04:54:46 +0000] "GET /v2/_catalog HTTP/1.1" 200 9 ',
    ]
    for text in lines:
        line = parse_line(text)
        assert line is not None
        assert pull_from_line(line) is None
    assert parse_line('time="2026-12-07T04:54:46Z" level=info msg="listening on :5000"') is None


def test_a_json_request_log_and_a_prefixed_access_line_by_digest() -> None:
    json_line = json.dumps({
        "http.request.method": "GET", "http.request.uri": f"/v2/a/b/c/manifests/{DIGEST_B}?x=1",
        "http.response.status": 200, "msg": "response completed",
        "time": "2026-12-07T04:54:46.5Z",
    })  # fmt: skip
    prefixed = ("2026-12-07T04:54:46.1Z stdout F 10.0.0.1 - - [07/Dec/2026:04:54:46 +0000] "
                f'"GET /v2/a/b/c/manifests/{DIGEST_B} HTTP/1.1" 200 9 "" "containerd"')  # fmt: skip
    for text in (json_line, prefixed):
        line = parse_line(text)
        assert line is not None
        pull = pull_from_line(line)
        assert pull is not None
        assert (pull.repository, pull.digest, pull.tag) == (
            "a/b/c",
            DIGEST_B,
            None,
        )


def test_read_pulls_reads_gzip_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "registry.log.gz"
    path.write_bytes(gzip.compress(("\n".join(LOG_282 + LOG_311_HEAD) + "\nnoise\n").encode()))
    summary = LogSummary()
    pulls = list(read_pulls(path, summary))
    assert len(pulls) == 2
    assert (summary.lines, summary.requests, summary.pulls) == (5, 4, 2)
    assert summary.first == 1796619278.0
    assert summary.last == pytest.approx(1796619286.097144)


# --- the pulled_within decision ----------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("last_pull", "covered_since", "verdict"),
    [
        (NOW - 29 * DAY, NOW - 90 * DAY, PullVerdict.PULLED_WITHIN),
        (NOW - 30 * DAY, NOW - 90 * DAY, PullVerdict.PULLED_WITHIN),  # the boundary is in
        (NOW - 29 * DAY, NOW - 1 * DAY, PullVerdict.PULLED_WITHIN),  # recent recording, pulled
        (NOW - 31 * DAY, NOW - 90 * DAY, PullVerdict.NOT_PULLED),
        (None, NOW - 30 * DAY, PullVerdict.NOT_PULLED),  # covered exactly the period
        (None, NOW - 29 * DAY, PullVerdict.UNKNOWN_RECORDING_TOO_RECENT),
        (NOW - 40 * DAY, NOW - 29 * DAY, PullVerdict.UNKNOWN_RECORDING_TOO_RECENT),
        (None, None, PullVerdict.UNKNOWN_RECORDING_TOO_RECENT),
    ],
)
def test_pulled_within_has_three_answers(
    last_pull: float | None, covered_since: float | None, verdict: PullVerdict
) -> None:
    decision = decide_pulled_within(last_pull, covered_since, 30 * DAY, NOW)
    assert decision.verdict is verdict
    assert decision.keeps is (verdict is not PullVerdict.NOT_PULLED)


def test_the_reasons_say_when() -> None:
    pulled = decide_pulled_within(NOW - DAY, NOW - 90 * DAY, 30 * DAY, NOW)
    assert pulled.reason == "pulled 2027-01-14T08:00:00Z"
    never = decide_pulled_within(None, NOW - 90 * DAY, 30 * DAY, NOW)
    assert never.reason == "never pulled (recording since 2026-10-17T08:00:00Z)"
    recent = decide_pulled_within(None, NOW - DAY, 30 * DAY, NOW)
    assert recent.reason == (
        "pull recording began 2027-01-14T08:00:00Z: too recent to tell whether it was pulled"
    )
    assert "never started" in decide_pulled_within(None, None, 30 * DAY, NOW).reason


@pytest.mark.parametrize(
    ("digest_pull", "tag_at", "tag_digest", "pushed_at", "expected"),
    [
        (None, None, None, None, None),
        (10.0, None, None, None, 10.0),
        (10.0, 20.0, DIGEST_A, None, 20.0),  # an event: the tag served this digest
        (10.0, 20.0, DIGEST_B, 5.0, 10.0),  # the tag served another digest then
        (None, 20.0, None, 15.0, 20.0),  # a log line after the tag's last push
        (None, 20.0, None, 25.0, None),  # a log line before it: maybe another digest
        (None, 20.0, None, None, None),  # push time unknown: no claim
        (30.0, 20.0, None, 15.0, 30.0),
    ],
)
def test_a_tag_pull_counts_for_its_digest_only_when_it_served_it(
    digest_pull: float | None, tag_at: float | None, tag_digest: str | None,
    pushed_at: float | None, expected: float | None,
) -> None:  # fmt: skip
    assert last_pull_of_tagged_digest(DIGEST_A, digest_pull, tag_at, tag_digest, pushed_at) == (
        expected
    )


# --- the record ----------------------------------------------------------------


def test_a_batch_keeps_the_latest_pull_per_digest_and_tag() -> None:
    pulls = [
        ManifestPull("r", DIGEST_A, "v1", 10.0),
        ManifestPull("r", DIGEST_A, None, 30.0),
        ManifestPull("r", DIGEST_B, "v1", 20.0),
        ManifestPull("r", None, "v1", 20.0),  # a log line at the same time: digest stays
    ]
    by_digest, by_tag = merge_pulls(pulls)
    assert by_digest == {("r", DIGEST_A): 30.0, ("r", DIGEST_B): 20.0}
    assert by_tag == {("r", "v1"): (20.0, DIGEST_B)}


def test_the_record_never_moves_a_pull_back_and_reads_back(tmp_path: Path) -> None:
    db = tmp_path / "pulls.db"
    store = PullStore(db)
    assert store.mark_recording_started(100.0) == 100.0
    assert store.mark_recording_started(200.0) == 100.0  # a restart does not move it
    store.record([ManifestPull("team/app", DIGEST_A, "v1", 50.0)])
    store.record([ManifestPull("team/app", DIGEST_A, "v1", 40.0)])  # a late retry
    store.record([ManifestPull("team/app", None, "v1", 60.0)])  # a log line, later
    store.record([ManifestPull("other", DIGEST_B, None, 70.0)])
    store.close()
    with PullHistory(db) as history:
        assert history.covered_since == 100.0
        assert history.last_pull("team/app", DIGEST_A) == 50.0
        assert history.last_pull("team/app", DIGEST_B) is None
        tag = history.last_tag_pull("team/app", "v1")
        assert tag is not None
        assert (tag.at, tag.digest) == (60.0, DIGEST_A)
        assert history.repository_pulls("team/app") == {DIGEST_A: 50.0}
        assert history.last_pull_by_repository() == {"team/app": 60.0, "other": 70.0}


def test_the_first_commit_with_started_at_begins_coverage_once(tmp_path: Path) -> None:
    store = PullStore(tmp_path / "pulls.db")
    assert store.record([], started_at=100.0) == 0
    store.record([ManifestPull("r", DIGEST_A, None, 1.0)], started_at=200.0)
    assert store.recording_since() == 100.0
    store.close()


def test_coverage_moves_back_only_once_recording_has_started(tmp_path: Path) -> None:
    store = PullStore(tmp_path / "pulls.db")
    assert store.extend_coverage(10.0) is None
    assert store.recording_since() is None
    store.mark_recording_started(100.0)
    assert store.extend_coverage(10.0) == 10.0
    assert store.extend_coverage(50.0) == 10.0
    store.close()


def test_a_failed_batch_records_nothing(tmp_path: Path) -> None:
    db = tmp_path / "pulls.db"
    store = PullStore(db)
    with pytest.raises(TypeError):
        store.record([ManifestPull("r", DIGEST_A, None, 1.0),
                      ManifestPull("r", DIGEST_B, None, object())])  # type: ignore[arg-type]  # fmt: skip
    store.close()
    with PullHistory(db) as history:
        assert history.last_pull("r", DIGEST_A) is None


def test_missing_or_foreign_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(PullStoreError, match="no pull record here"):
        PullHistory(tmp_path / "absent.db")
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PullStoreError, match="not a pull record"):
        PullStore(foreign)


# --- the service's write path ----------------------------------------------------


class FlakyStore:
    """A pull record whose disk fails until ``healthy`` is set (disk full, I/O error)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.healthy = False
        self.batches: list[int] = []

    def record(self, pulls: list[ManifestPull], *, started_at: float | None = None) -> int:
        if not self.healthy:
            raise OSError(28, "No space left on device")
        self.batches.append(len(pulls))
        return len(pulls)


def test_a_failed_commit_answers_503_and_unhealthy_until_a_commit_succeeds(
    tmp_path: Path,
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from regcleaner.events.server import GroupCommitWriter, ServeConfig, ServiceMetrics, build_app

    async def scenario() -> list[tuple[int, str]]:
        store = FlakyStore(tmp_path / "pulls.db")
        metrics = ServiceMetrics()
        writer = GroupCommitWriter(store, metrics)  # type: ignore[arg-type]
        config = ServeConfig("127.0.0.1", 0, store.path, token=None)
        writing = asyncio.create_task(writer.run())
        seen: list[tuple[int, str]] = []
        async with TestClient(TestServer(build_app(config, writer, metrics))) as client:
            for step in ("down", "up"):
                store.healthy = step == "up"
                answer = await client.post("/events", data=envelope(pull_event()))
                seen.append((answer.status, await answer.text()))
                health = await client.get("/healthz")
                seen.append((health.status, await health.text()))
        writer.close()
        await writing
        assert store.batches == [1]
        return seen

    seen = asyncio.run(scenario())
    assert [status for status, _ in seen] == [503, 503, 200, 200]
    assert "retry later" in seen[0][1]
    assert "No space" not in seen[0][1]


def test_a_sqlite_file_of_something_else_is_not_read_as_a_pull_record(tmp_path: Path) -> None:
    other = tmp_path / "cache.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE blobs (digest TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(PullStoreError, match="not a pull record") as caught:
        PullHistory(other)
    assert isinstance(caught.value, ConfigError)  # the operator's file: exit 2
