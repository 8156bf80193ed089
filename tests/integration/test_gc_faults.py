"""``regcleaner gc`` under faults and with its options: S3 throttling and per-key
DeleteObjects failures, SIGTERM mid-sweep, the read-only gate, ``--dry-run``,
``--prune-layer-links``, ``--purge-uploads``, ``--min-blob-age``.

After every interrupted or failed run the registry must still serve every tag
completely, and a rerun must end where the registry's own garbage-collect ends.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from testkit import images
from testkit.api import RegistryAPI
from testkit.faults import FaultProxy, FaultScript, Seen
from testkit.registry import Flavour, RegistryProcess, running
from testkit.registry_writer import (
    DiskSink,
    RegistryWriter,
    blob_data_key,
    blobs_in_bucket,
    blobs_on_disk,
    layer_link_key,
    repository_key,
)
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.integration

S3_ROOT = "/gc"
S3_ENV = {"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
_buckets = itertools.count()


# -- content: real images pushed through the API, and garbage ------------------------------


@dataclass
class Content:
    """What was pushed: every tag must still pull after any run."""

    tags: list[tuple[str, str]] = field(default_factory=list)
    garbage_manifests: set[str] = field(default_factory=set)  # deleted through the API
    shared_manifest: str = ""  # deleted in one repository, still in another


def push_content(api: RegistryAPI, *, orphans: int = 4) -> Content:
    """Tagged images, a multi-arch index with a referrer, pushed-over tags (their old
    manifests stay as revisions: the registry marks them), manifests deleted through the
    API (their blobs become garbage), and blobs uploaded but never referenced."""
    content = Content()
    old = [images.push_image(api, "gc/app", "v1", seed=f"app-{i}", layers=2) for i in range(3)]
    images.push_image(api, "gc/app", "stable", seed="app-stable")
    index, _ = images.push_multiarch(api, "gc/team/multi", "latest", seed="multi", arches=3)
    images.push_referrer(api, "gc/team/multi", index, seed="sbom")
    gone_index, gone_children = images.push_multiarch(api, "gc/team/multi", None, seed="gone")
    shared = images.push_image(api, "gc/lib", "v1", seed="app-0", layers=2)  # app-0's blobs
    content.tags += [("gc/app", "v1"), ("gc/app", "stable"), ("gc/team/multi", "latest"),
                     ("gc/lib", "v1")]  # fmt: skip
    for pushed in (old[0], old[1], gone_index, *gone_children):
        answer = api.request("DELETE", f"/v2/{pushed.repository}/manifests/{pushed.digest}")
        assert answer.status == 202, answer
        content.garbage_manifests.add(pushed.digest)
    assert shared.digest == old[0].digest  # same bytes: still a revision of gc/lib
    content.garbage_manifests.discard(shared.digest)
    content.shared_manifest = shared.digest
    for number in range(orphans):
        api.push_blob("gc/app", f"uploaded, never referenced {number}".encode())
    return content


def assert_every_tag_pulls(api: RegistryAPI, content: Content) -> None:
    for repository, tag in content.tags:
        api.pull(repository, tag)


# -- what the registry's own garbage-collect sweeps ------------------------------------------

_ELIGIBLE = re.compile(r"blob eligible for deletion: (sha256:[0-9a-f]{64})")


def registry_plan(registry: RegistryProcess) -> set[str]:
    """The blobs the registry's own garbage-collect would sweep (its ``--dry-run``: the
    same mark and enumeration as a real run, without the deletions). 2.8.2 and 3.1.1
    print the same ``blob eligible for deletion`` line."""
    done = registry.run_garbage_collect(dry_run=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return set(_ELIGIBLE.findall(done.stdout))


# -- running regcleaner ----------------------------------------------------------------------


def disk_args(root: Path, *extra: str) -> list[str]:
    return ["gc", "--registry-dir", str(root), "--progress-interval", "0", *extra]


def s3_args(endpoint: str, bucket: str, *extra: str) -> list[str]:
    return [
        "gc", "--registry-stopped", "--storage", "s3", "--bucket", bucket,
        "--registry-dir", S3_ROOT, "--s3-endpoint", endpoint, "--region", REGION,
        "--progress-interval", "0", *extra,
    ]  # fmt: skip


def swept(result: CliResult, key: str = "swept") -> set[str]:
    assert result.report is not None, result.output
    return {entry["digest"] for entry in result.report[key]}


# -- S3: a proxy that answers as S3 does -----------------------------------------------------


def s3_error_body(code: str, message: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>")  # fmt: skip


@dataclass
class S3FaultProxy(FaultProxy):
    """testkit's FaultProxy, answering DeleteObjects (``POST /<bucket>?delete``) as S3:
    an int action answers that status with the script's body and content type; the
    action "partial" answers 200 with a per-key ``<Error>`` for each key ``fail_key``
    names (those are not deleted) and deletes the rest itself, straight in moto."""

    fail_key: Callable[[str], tuple[str, str] | None] = lambda key: None
    direct: Any = None  # a boto3 client on moto itself, not through the proxy

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in self.script.methods or "delete" not in request.query:
            return await self._forward(request, None)
        action = self.script.decide(len(self.seen) + 1, request.path_qs)
        record = Seen(time.monotonic(), request.path, 0)
        self.seen.append(record)
        if action == "stall":
            await asyncio.sleep(3600)
        if isinstance(action, int):
            record.answered = action
            return web.Response(status=action, text=self.script.body,
                                content_type=self.script.content_type)  # fmt: skip
        if action == "partial":
            record.answered = 200
            return await self._partial(request)
        return await self._forward(request, record)

    async def _partial(self, request: web.Request) -> web.Response:
        bucket = request.path.strip("/").split("/", 1)[0]
        tree = ET.fromstring(await request.read())  # noqa: S314 - our own client's request
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        keys = [str(node.text) for node in tree.iter(f"{ns}Key")]
        quiet = (tree.findtext(f"{ns}Quiet") or "").lower() == "true"
        failing = {key: why for key in keys if (why := self.fail_key(key)) is not None}
        doomed = [key for key in keys if key not in failing]
        if doomed:
            objects = [{"Key": key} for key in doomed]
            await asyncio.to_thread(self.direct.delete_objects, Bucket=bucket,
                                    Delete={"Objects": objects, "Quiet": True})  # fmt: skip
        parts = ['<?xml version="1.0" encoding="UTF-8"?>',
                 '<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">']  # fmt: skip
        if not quiet:
            parts += [f"<Deleted><Key>{escape(key)}</Key></Deleted>" for key in doomed]
        parts += [
            f"<Error><Key>{escape(key)}</Key><Code>{code}</Code><Message>{message}</Message>"
            "</Error>"
            for key, (code, message) in failing.items()
        ]
        parts.append("</DeleteResult>")
        return web.Response(status=200, text="".join(parts), content_type="application/xml")


@dataclass
class S3Setup:
    """A registry on a moto bucket, with content pushed, stopped."""

    moto: MotoS3
    registry: RegistryProcess
    bucket: str
    api: RegistryAPI
    content: Content

    def blobs(self) -> set[str]:
        return blobs_in_bucket(self.moto.client(), self.bucket, S3_ROOT)


@pytest.fixture
def s3_setup(moto_server: MotoS3, tmp_path: Path, registry_flavour: Flavour) -> Iterator[S3Setup]:
    bucket = f"gc-faults-{next(_buckets)}"
    moto_server.create_bucket(bucket)
    registry = RegistryProcess(
        tmp_path / "registry",
        flavour=registry_flavour,
        storage=moto_server.registry_storage(bucket, S3_ROOT),
    )
    api = RegistryAPI(registry.url)
    with running(registry):
        content = push_content(api, orphans=8)
    try:
        yield S3Setup(moto_server, registry, bucket, api, content)
    finally:
        registry.stop()


def test_s3_throttling_is_retried_and_the_run_completes(s3_setup: S3Setup, tmp_path: Path) -> None:
    plan = registry_plan(s3_setup.registry)
    before = s3_setup.blobs()
    assert plan
    assert plan < before

    proxy = S3FaultProxy(s3_setup.moto.url, direct=s3_setup.moto.client())
    proxy.script = FaultScript(
        lambda n, path: 503 if n <= 3 else None, methods=frozenset({"POST"}),
        body=s3_error_body("SlowDown", "x"), content_type="application/xml",
    )  # fmt: skip
    with running(proxy):
        result = run_cli(s3_args(proxy.url, s3_setup.bucket), env=S3_ENV,
                         report_path=tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [hit.answered for hit in proxy.seen] == [503, 503, 503, 200]
    assert swept(result) == plan
    assert result.report is not None
    assert result.report["summary"]["blobs_failed"] == 0
    assert s3_setup.blobs() == before - plan

    with running(s3_setup.registry):
        assert_every_tag_pulls(s3_setup.api, s3_setup.content)
    again = run_cli(s3_args(s3_setup.moto.url, s3_setup.bucket), env=S3_ENV,
                    report_path=tmp_path / "again.json")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert swept(again) == set()
    assert s3_setup.blobs() == before - plan
    assert registry_plan(s3_setup.registry) == set()


def test_s3_per_key_delete_errors_are_retried_or_reported_never_counted(
    s3_setup: S3Setup, tmp_path: Path
) -> None:
    plan = registry_plan(s3_setup.registry)
    before = s3_setup.blobs()
    assert len(plan) >= 6
    ordered = sorted(plan)
    refused = set(ordered[:2])  # AccessDenied every time: reported per key
    flaky = set(ordered[2:4])  # InternalError once, then deleted: retried
    refused_keys = {S3_ROOT.strip("/") + "/" + blob_data_key(d): d for d in refused}
    flaky_keys = {S3_ROOT.strip("/") + "/" + blob_data_key(d): d for d in flaky}
    failed_once: set[str] = set()

    def fail_key(key: str) -> tuple[str, str] | None:
        if key in refused_keys:
            return ("AccessDenied", "Access Denied")
        if key in flaky_keys and key not in failed_once:
            failed_once.add(key)
            return ("InternalError", "We encountered an internal error. Please try again.")
        return None

    proxy = S3FaultProxy(s3_setup.moto.url, fail_key=fail_key, direct=s3_setup.moto.client())
    proxy.script = FaultScript(lambda n, path: "partial", methods=frozenset({"POST"}))
    with running(proxy):
        result = run_cli(s3_args(proxy.url, s3_setup.bucket), env=S3_ENV,
                         report_path=tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert failed_once == set(flaky_keys), "the flaky keys were never sent"
    assert len(proxy.seen) >= 2, "the keys that failed with InternalError were not retried"
    assert result.report is not None
    summary = result.report["summary"]
    assert summary["blobs_failed"] == len(refused)
    assert summary["blobs_swept"] == len(plan) - len(refused)
    assert swept(result) == plan - refused  # the refused ones are never counted as swept
    assert s3_setup.blobs() == (before - plan) | refused
    assert "AccessDenied" in result.output

    with running(s3_setup.registry):
        assert_every_tag_pulls(s3_setup.api, s3_setup.content)
    again = run_cli(s3_args(s3_setup.moto.url, s3_setup.bucket), env=S3_ENV,
                    report_path=tmp_path / "again.json")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert swept(again) == refused
    assert s3_setup.blobs() == before - plan
    assert registry_plan(s3_setup.registry) == set()  # nothing left for the registry's gc


def test_s3_sigterm_with_a_stalled_delete_ends_after_the_grace(
    s3_setup: S3Setup, tmp_path: Path
) -> None:
    before = s3_setup.blobs()
    proxy = S3FaultProxy(s3_setup.moto.url, direct=s3_setup.moto.client())
    proxy.script = FaultScript(lambda n, path: "stall", methods=frozenset({"POST"}))
    report = tmp_path / "r.json"
    with running(proxy):
        process = subprocess.Popen(
            [sys.executable, "-m", "regcleaner",
             *s3_args(proxy.url, s3_setup.bucket, "--stop-grace", "1"), "--report", str(report)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **S3_ENV},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not proxy.seen and time.monotonic() < deadline:
                time.sleep(0.02)  # polling the proxy for the first DeleteObjects
            assert proxy.seen, "no DeleteObjects was sent"
            process.send_signal(signal.SIGTERM)
            try:
                _, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                pytest.fail("still running 10 s after SIGTERM with --stop-grace 1")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 143, stderr
    assert s3_setup.blobs() == before  # the stalled request never reached moto
    document = json.loads(report.read_text())
    assert document["stopped_by"] == "SIGTERM"
    assert document["swept"] == []  # nothing was confirmed
    summary = document["summary"]
    assert summary["blobs_to_sweep"] > 0
    assert summary["blobs_abandoned"] == summary["blobs_to_sweep"]  # one batch, in flight
    assert "abandon" in stderr


# -- SIGTERM mid-sweep -------------------------------------------------------------------------


def test_sigterm_mid_sweep_exits_143_keeps_every_tag_and_a_rerun_finishes(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    registry = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    api = RegistryAPI(registry.url)
    with running(registry):
        content = push_content(api)
    # Enough garbage for several sweep batches (1,000 blobs each): the signal lands in
    # the first or second, and a stop lets none start after it.
    writer = RegistryWriter(DiskSink(registry.root))
    garbage = [writer.blob(f"garbage {n}".encode()).digest for n in range(5000)]
    plan = registry_plan(registry)
    before = blobs_on_disk(registry.root)
    assert set(garbage) < plan < before

    report = tmp_path / "r.json"
    watched = [registry.root / blob_data_key(d) for d in garbage[::50]]
    process = subprocess.Popen(
        [sys.executable, "-m", "regcleaner", *disk_args(registry.root, "--registry-stopped"),
         "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while all(path.exists() for path in watched) and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.002)  # polling the storage for the first swept blob
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    document = json.loads(report.read_text())
    assert document["stopped_by"] == "SIGTERM"
    reported = {entry["digest"] for entry in document["swept"]}
    after = blobs_on_disk(registry.root)
    assert reported == before - after, "the report must say exactly what was swept"
    print(f"swept {len(reported)} of {len(plan)} before stopping")
    assert reported < plan, "the run was not stopped mid-sweep"
    assert reported, "SIGTERM came before anything was swept"

    with running(registry):
        assert_every_tag_pulls(api, content)
    again = run_cli(disk_args(registry.root, "--registry-stopped"),
                    report_path=tmp_path / "again.json")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert swept(again) == plan - reported
    assert blobs_on_disk(registry.root) == before - plan
    assert registry_plan(registry) == set()  # nothing left for the registry's gc


def test_a_stop_during_a_sweep_batch_starts_no_further_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, so that the stop lands inside the first batch for certain: the
    SIGTERM handler's own call (request_stop) is made from the first deletion."""
    from regcleaner.collector import Collector
    from regcleaner.config import GcSettings
    from regcleaner.reporting.collection import GcReport
    from regcleaner.storage.filesystem import FilesystemStore
    from regcleaner.view import RegistryView

    root = tmp_path / "storage"
    writer = RegistryWriter(DiskSink(root))
    writer.tag("app", "v1", writer.image("app", b"{}", [b"layer"], oci=True).digest)
    for number in range(1100):  # two batches of at most 1,000
        writer.blob(f"garbage {number}".encode())
    before = blobs_on_disk(root)
    store = FilesystemStore(root)
    report = GcReport(dry_run=False, storage=store.describe())
    settings = GcSettings(registry_url=None, registry_dir=root, registry_stopped=True)
    collector = Collector(settings, RegistryView(store), report, gate=None)
    batches: list[int] = []
    delete_many = store.delete_many

    async def first_one_stops(
        keys: Sequence[str], *, directories: Sequence[str] = ()
    ) -> list[str | None]:
        batches.append(len(keys))
        if len(batches) == 1:
            collector.request_stop("SIGTERM")
        return await delete_many(keys, directories=directories)

    monkeypatch.setattr(store, "delete_many", first_one_stops)
    try:
        asyncio.run(collector.run())
    finally:
        report.close()
        asyncio.run(store.aclose())
    assert report.stopped_by == "SIGTERM"
    assert len(before - blobs_on_disk(root)) == report.counters.swept
    assert batches == [1000], f"batches started: {batches}"


def test_a_second_signal_abandons_a_stalled_sweep_batch_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in clean: the first SIGTERM gives in-flight requests --stop-grace (an hour
    here), a second one abandons them now."""
    from regcleaner.collector import Collector
    from regcleaner.config import GcSettings
    from regcleaner.reporting.collection import GcReport
    from regcleaner.storage.filesystem import FilesystemStore
    from regcleaner.view import RegistryView

    root = tmp_path / "storage"
    writer = RegistryWriter(DiskSink(root))
    writer.tag("app", "v1", writer.image("app", b"{}", [b"layer"], oci=True).digest)
    for number in range(10):
        writer.blob(f"garbage {number}".encode())
    before = blobs_on_disk(root)
    store = FilesystemStore(root)
    report = GcReport(dry_run=False, storage=store.describe())
    settings = GcSettings(registry_url=None, registry_dir=root, registry_stopped=True,
                          stop_grace_s=3600.0)  # fmt: skip
    collector = Collector(settings, RegistryView(store), report, gate=None)

    async def stalls_after_two_signals(
        keys: Sequence[str], *, directories: Sequence[str] = ()
    ) -> list[str | None]:
        collector.request_stop("SIGTERM")
        collector.request_stop("SIGTERM")
        await asyncio.sleep(3600)  # a request that never answers
        raise AssertionError("not abandoned")

    monkeypatch.setattr(store, "delete_many", stalls_after_two_signals)
    try:
        asyncio.run(asyncio.wait_for(collector.run(), 60))
    finally:
        report.close()
        asyncio.run(store.aclose())
    assert report.stopped_by == "SIGTERM"
    assert report.counters.swept == 0
    assert report.summary()["blobs_abandoned"] == 10
    assert blobs_on_disk(root) == before


# -- the gate ----------------------------------------------------------------------------------


def test_gate_refuses_a_writable_registry_and_runs_on_a_read_only_one(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    registry = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    api = RegistryAPI(registry.url)
    with running(registry):
        content = push_content(api)
        plan = registry_plan(registry)
        before = blobs_on_disk(registry.root)
        refused = run_cli(disk_args(registry.root, "--registry-url", registry.url),
                          report_path=tmp_path / "refused.json")  # fmt: skip
        assert refused.exit_code == 2, refused.output
        assert "not read-only" in refused.output
        assert blobs_on_disk(registry.root) == before

    registry.readonly = True
    with running(registry):
        result = run_cli(disk_args(registry.root, "--registry-url", registry.url),
                         report_path=tmp_path / "r.json")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert swept(result) == plan
        assert blobs_on_disk(registry.root) == before - plan
    registry.readonly = False
    with running(registry):
        assert_every_tag_pulls(api, content)


# -- options -----------------------------------------------------------------------------------


def test_dry_run_deletes_nothing_and_lists_what_a_real_run_sweeps(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    registry = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    with running(registry):
        content = push_content(RegistryAPI(registry.url), orphans=6)
    plan = registry_plan(registry)
    before = blobs_on_disk(registry.root)

    assert content.garbage_manifests < plan
    assert content.shared_manifest not in plan

    dry = run_cli(disk_args(registry.root, "--registry-stopped", "--dry-run"),
                  report_path=tmp_path / "dry.json")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert blobs_on_disk(registry.root) == before
    would = swept(dry, "would_sweep")
    assert dry.report is not None
    assert dry.report["summary"]["blobs_to_sweep"] == len(would)

    real = run_cli(disk_args(registry.root, "--registry-stopped"),
                   report_path=tmp_path / "real.json")  # fmt: skip
    assert real.exit_code == 0, real.output
    assert swept(real) == would == plan
    assert blobs_on_disk(registry.root) == before - would


def _small_registry(root: Path) -> tuple[RegistryWriter, dict[str, str]]:
    """app: a tagged image; garbage uploaded into app and into lib; lib also links a
    layer of app's image (in use)."""
    writer = RegistryWriter(DiskSink(root))
    image = writer.image("app", b'{"config":1}', [b"layer a", b"layer b"], oci=True)
    writer.tag("app", "v1", image.digest)
    blobs = {
        "in use": image.references[1],
        "garbage in app": writer.upload("app", b"garbage one", "application/octet-stream").digest,
        "garbage in lib": writer.upload("lib", b"garbage two", "application/octet-stream").digest,
    }
    writer.link_layer("lib", blobs["in use"])
    return writer, blobs


def test_prune_layer_links_removes_the_links_of_swept_blobs_only(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    _, blobs = _small_registry(root)
    result = run_cli(disk_args(root, "--registry-stopped", "--prune-layer-links"),
                     report_path=tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert swept(result) == {blobs["garbage in app"], blobs["garbage in lib"]}
    assert result.report is not None
    assert result.report["summary"]["layer_links_removed"] == 2
    assert not (root / layer_link_key("app", blobs["garbage in app"])).exists()
    assert not (root / layer_link_key("lib", blobs["garbage in lib"])).exists()
    assert (root / layer_link_key("lib", blobs["in use"])).exists()
    assert (root / layer_link_key("app", blobs["in use"])).exists()
    assert len(list((root / layer_link_key("app", blobs["in use"])).parent.parent.iterdir())) == 3


def test_purge_uploads_removes_only_stale_uploads(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    writer, _ = _small_registry(root)
    now = datetime.now(UTC)
    writer.unfinished_upload("app", "0b1e4f9a-stale", now - timedelta(hours=2), b"partial")
    writer.unfinished_upload("app", "7c2d3e4f-fresh", now, b"partial")
    result = run_cli(disk_args(root, "--registry-stopped", "--purge-uploads", "1h"),
                     report_path=tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.report is not None
    assert result.report["summary"]["uploads_removed"] == 1
    assert not (root / repository_key("app", "_uploads/0b1e4f9a-stale")).exists()
    assert (root / repository_key("app", "_uploads/7c2d3e4f-fresh/startedat")).exists()
    assert (root / repository_key("app", "_uploads/7c2d3e4f-fresh/data")).exists()


def test_min_blob_age_keeps_fresh_garbage_and_sweeps_old(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    writer, _ = _small_registry(root)
    old = [writer.blob(f"old garbage {n}".encode()).digest for n in range(3)]
    fresh = [writer.blob(f"fresh garbage {n}".encode()).digest for n in range(2)]
    two_hours_ago = time.time() - 7200
    for path in (root / "docker/registry/v2/blobs").glob("sha256/*/*/data"):
        os.utime(path, (two_hours_ago, two_hours_ago))
    for digest in fresh:
        os.utime(root / blob_data_key(digest))  # now
    before = blobs_on_disk(root)
    result = run_cli(disk_args(root, "--registry-stopped", "--min-blob-age", "1h"),
                     report_path=tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.report is not None
    assert result.report["summary"]["blobs_kept_young"] == len(fresh)
    gone = before - blobs_on_disk(root)
    assert set(old) <= gone
    assert not gone & set(fresh)
    assert swept(result) == gone
