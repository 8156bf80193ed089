"""``clean --direct`` on S3: DeleteObjects faults between regcleaner and moto, and how
few write requests a run needs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, unescape

import pytest
from aiohttp import web

from testkit.faults import FaultProxy, FaultScript, Seen
from testkit.registry import Flavour, running
from testkit.s3 import MotoS3
from tests.conftest import run_cli
from tests.integration.test_clean_s3 import s3_error
from tests.integration.test_direct import (
    FLEET_REPOSITORIES,
    REPOSITORIES,
    S3_ROOT,
    V2,
    Key,
    Site,
    Sites,
    Template,
    blobs,
    children_missing,
    collected_by_the_registry,
    fleet_name,
    fleet_template_in,
    history,
    pull_everything,
    report_set,
    revision_key,
    revisions,
    scenario_template_in,
)

pytestmark = pytest.mark.integration

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@pytest.fixture(scope="session")
def scenario_template(
    tmp_path_factory: pytest.TempPathFactory, registry_flavour: Flavour
) -> Template:
    return scenario_template_in(tmp_path_factory.mktemp("s3-scenario-template"), registry_flavour)


@pytest.fixture(scope="session")
def fleet_template(tmp_path_factory: pytest.TempPathFactory, registry_flavour: Flavour) -> Template:
    return fleet_template_in(tmp_path_factory.mktemp("s3-fleet-template"), registry_flavour)


@pytest.fixture
def sites(
    request: pytest.FixtureRequest, tmp_path: Path, registry_flavour: Flavour
) -> Iterator[Sites]:
    made = Sites("s3", tmp_path, request, registry_flavour)
    try:
        yield made
    finally:
        made.close()


@dataclass
class DeleteObjectsProxy(FaultProxy):
    """A FaultProxy in front of moto for DeleteObjects (``POST /<bucket>?delete``).

    An int from the script answers the whole request with that status and the script's
    body and content type. Otherwise ``refuse(request number, key)`` may name an S3
    error code for a key: then the proxy deletes only the other keys (through moto)
    and answers 200 with a per-key ``<Error>`` for each refused one, as S3 does."""

    moto: MotoS3 | None = None
    refuse: Callable[[int, str], str | None] = lambda number, key: None
    requests: list[list[str]] = field(default_factory=list)
    """The keys of each DeleteObjects received."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in self.script.methods or "delete" not in request.query:
            return await self._forward(request, None)
        number = len(self.seen) + 1
        record = Seen(time.monotonic(), request.path, 0)
        self.seen.append(record)
        body = await request.read()
        keys = [unescape(k) for k in re.findall(r"<Key>(.*?)</Key>", body.decode())]
        self.requests.append(keys)
        action = self.script.decide(number, request.path_qs)
        if action == "stall":
            await asyncio.sleep(3600)  # until the client gives up
        if isinstance(action, int):
            record.answered = action
            return web.Response(status=action, body=self.script.body.encode(),
                                headers={"Content-Type": self.script.content_type})  # fmt: skip
        refused = {key: code for key in keys if (code := self.refuse(number, key)) is not None}
        if not refused:
            return await self._forward(request, record)
        bucket = request.path.strip("/").split("/")[0]
        others = [key for key in keys if key not in refused]
        if others:
            await asyncio.get_running_loop().run_in_executor(None, self._delete, bucket, others)
        quiet = "<Quiet>true</Quiet>" in body.decode().replace(" ", "")
        parts = [] if quiet else [f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in others]
        parts += [
            f"<Error><Key>{escape(key)}</Key><Code>{code}</Code>"
            f"<Message>injected: {code}</Message></Error>"
            for key, code in refused.items()
        ]
        record.answered = 200
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="{S3_NS}">'
               + "".join(parts) + "</DeleteResult>")  # fmt: skip
        return web.Response(status=200, body=xml.encode(),
                            headers={"Content-Type": "application/xml"})  # fmt: skip

    def _delete(self, bucket: str, keys: list[str]) -> None:
        assert self.moto is not None
        answer = self.moto.client().delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        assert not answer.get("Errors"), answer


def through(site: Site, proxy: FaultProxy) -> list[str]:
    """The site's direct-clean arguments with S3 reached through ``proxy``, no URL."""
    argv = site.args("--registry-stopped", url=None)
    argv[argv.index("--s3-endpoint") + 1] = proxy.url
    return argv


def proxy_for(moto_server: MotoS3) -> DeleteObjectsProxy:
    proxy = DeleteObjectsProxy(moto_server.url, moto=moto_server)
    proxy.script = FaultScript(methods=frozenset({"POST"}))
    return proxy


def s3_key(repository: str, digest: str) -> str:
    return f"{S3_ROOT}/{revision_key(repository, digest)}"


def test_slowdown_answers_to_delete_objects_are_retried(
    sites: Sites, scenario_template: Template, moto_server: MotoS3, tmp_path: Path
) -> None:
    site = sites.make(scenario_template, start=False)
    with running(proxy_for(moto_server)) as proxy:
        proxy.script = FaultScript(
            lambda n, path: 503 if n in (1, 2, 4) else None,
            methods=frozenset({"POST"}),
            body=s3_error("SlowDown", "Please reduce your request rate."),
            content_type="application/xml",
        )
        result = run_cli(through(site, proxy), env=site.env, report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert sum(1 for hit in proxy.seen if hit.answered == 503) == 3
    assert result.report is not None
    assert result.report["summary"]["failed"] == 0
    assert report_set(result.report, "deleted") == site.expectation.delete
    assert not revisions(site.storage.key_set()) & site.expectation.delete


def _manifest(site: Site, digest: str) -> dict[str, object]:
    data = site.storage.read(f"{V2}/blobs/sha256/{digest[7:9]}/{digest[7:]}/data")
    assert data is not None
    document = json.loads(data)
    assert isinstance(document, dict)
    return document


def test_per_key_errors_are_retried_or_failed_never_counted_and_a_rerun_finishes(
    sites: Sites, scenario_template: Template, moto_server: MotoS3, tmp_path: Path
) -> None:
    site = sites.make(scenario_template, start=False)
    ex = site.expectation
    before = revisions(site.storage.key_set())
    # An untagged index whose link S3 will not delete: its children must stay too.
    index = next(
        (r, d) for r, d in sorted(ex.delete)
        if r == "multi/oci" and "manifests" in _manifest(site, d)
    )  # fmt: skip
    children_value = _manifest(site, index[1])["manifests"]
    assert isinstance(children_value, list)
    children = {(index[0], str(child["digest"])) for child in children_value}
    assert children <= ex.delete
    denied = next((r, d) for r, d in sorted(ex.delete) if r == "a/b")
    flaky = next((r, d) for r, d in sorted(ex.delete) if r == "app")
    refused_once: set[str] = set()

    def refuse(number: int, key: str) -> str | None:
        del number
        if key in (s3_key(*index), s3_key(*denied)):
            return "AccessDenied"
        if key == s3_key(*flaky) and key not in refused_once:
            refused_once.add(key)
            return "InternalError"  # S3 says: try again
        return None

    with running(proxy_for(moto_server)) as proxy:
        proxy.refuse = refuse
        first = run_cli(through(site, proxy), env=site.env, report_path=tmp_path / "1.json")
    assert first.exit_code == 1, first.output
    assert first.report is not None
    deleted = report_set(first.report, "deleted")
    failed = report_set(first.report, "failed")
    assert failed == {index, denied}
    assert flaky in deleted, "a retryable per-key error was not retried"
    assert refused_once == {s3_key(*flaky)}
    assert deleted == ex.delete - failed - children
    assert not deleted & failed
    summary = first.report["summary"]
    assert summary["deleted"] == len(deleted)
    assert summary["failed"] == 2
    kept = {(r["name"], k["digest"]): k["reason"] for r in first.report["repositories"]
            for k in r["kept"]}  # fmt: skip
    assert all(kept[child].startswith("parent-not-deleted") for child in children), kept
    errors = [f["error"] for r in first.report["repositories"] for f in r["failed"]]
    assert all("AccessDenied" in error for error in errors), errors
    now = revisions(site.storage.key_set())
    assert now == before - deleted, "the report and the bucket disagree"
    assert children_missing(site.storage) == []

    with running(proxy_for(moto_server)) as proxy:
        second = run_cli(through(site, proxy), env=site.env, report_path=tmp_path / "2.json")
    assert second.exit_code == 0, second.output
    assert report_set(second.report, "deleted") == failed | children
    assert revisions(site.storage.key_set()) == before - ex.delete


def test_delete_objects_requests_are_shared_across_repositories(
    sites: Sites, fleet_template: Template, moto_server: MotoS3, tmp_path: Path
) -> None:
    assert FLEET_REPOSITORIES >= 50
    site = sites.make(fleet_template, start=False)
    ex = site.expectation
    with running(proxy_for(moto_server)) as proxy:
        result = run_cli(through(site, proxy), env=site.env, report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert result.report is not None
    summary = result.report["summary"]
    deleted: set[Key] = report_set(result.report, "deleted")
    assert deleted == ex.delete
    assert len({r for r, _ in deleted}) == FLEET_REPOSITORIES
    requests = summary["storage_requests"]["delete"]
    assert requests == len(proxy.seen) == summary["delete_requests"]
    assert summary["storage_requests"]["keys_deleted"] == sum(len(k) for k in proxy.requests)
    ratio = requests / summary["deleted"]
    assert ratio <= 0.05, (
        f"{requests} DeleteObjects for {summary['deleted']} manifests in "
        f"{FLEET_REPOSITORIES} repositories ({ratio:.3f} a manifest); keys a request: "
        f"{sorted(len(k) for k in proxy.requests)}"
    )
    assert {fleet_name(n) for n in range(FLEET_REPOSITORIES)} == {r for r, _ in ex.delete}


def test_a_refused_tag_history_key_is_not_counted_and_a_rerun_removes_it(
    sites: Sites, scenario_template: Template, moto_server: MotoS3, tmp_path: Path
) -> None:
    site = sites.make(scenario_template, start=False)
    ex = site.expectation
    repository, tag, digest = min(e for e in history(site.storage.key_set()) if e[::2] in ex.delete)
    entry = f"{REPOSITORIES}{repository}/_manifests/tags/{tag}/index/sha256/{digest[7:]}/link"
    with running(proxy_for(moto_server)) as proxy:
        proxy.refuse = lambda number, key: "AccessDenied" if key == f"{S3_ROOT}/{entry}" else None
        first = run_cli(through(site, proxy), env=site.env, report_path=tmp_path / "1.json")
    with running(proxy_for(moto_server)) as proxy:
        second = run_cli(through(site, proxy), env=site.env, report_path=tmp_path / "2.json")
    assert second.exit_code == 0, second.output
    assert not site.storage.exists(entry), "a rerun left the refused history entry"
    assert first.exit_code == 1, first.output
    assert (repository, digest) not in report_set(first.report, "deleted")
    assert (repository, digest) in report_set(first.report, "failed")


def test_sigterm_with_stalled_delete_objects_ends_after_the_grace(
    sites: Sites, scenario_template: Template, moto_server: MotoS3, tmp_path: Path
) -> None:
    # The DeleteObjects requests carry many repositories' keys and belong to the
    # remover's session, not to one repository: the stop's deadline must reach them.
    site = sites.make(scenario_template, start=False)
    before = site.storage.key_set()
    proxy = proxy_for(moto_server)
    proxy.script = FaultScript(lambda n, path: "stall", methods=frozenset({"POST"}))
    report = tmp_path / "r.json"
    with running(proxy):
        argv = [*through(site, proxy), "--stop-grace", "1", "--report", str(report)]
        process = subprocess.Popen(
            [sys.executable, "-m", "regcleaner", *argv], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **site.env},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not proxy.requests and time.monotonic() < deadline:
                time.sleep(0.02)  # polling the proxy for the first DeleteObjects
            assert proxy.requests, "no DeleteObjects was sent"
            process.send_signal(signal.SIGTERM)
            try:
                _, stderr = process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                pytest.fail("still running 15 s after SIGTERM with --stop-grace 1")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 143, stderr
    assert "abandon" in stderr
    assert site.storage.key_set() == before  # the stalled requests never reached moto
    document = json.loads(report.read_text())
    assert document["stopped_by"] == "SIGTERM"
    assert document["summary"]["deleted"] == 0
    assert len(proxy.requests) == 1, "a request was sent after the stop"


def test_a_warm_window_whose_gc_takes_the_scan_s_listing_frees_what_garbage_collect_frees(
    sites: Sites, scenario_template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``clean --direct --gc --cache`` on S3 with a warm cache: the scan lists the blobs
    to validate the manifests it takes from the cache, and gc's sweep takes that listing
    (regcleaner/blobwalks.py) instead of its own. Forced here as on a large registry:
    the listing pays from any cache, and gc lists folder by folder (its one flat page
    is what a registry of more than 1,000 blobs does not have)."""
    from regcleaner import blobfolders
    from regcleaner.blobwalks import RecordedWalks
    from regcleaner.cachedreads import CachedReads

    by_api, window, before = collected_by_the_registry(sites, scenario_template, tmp_path)

    async def no_flat_page(*_: object) -> None:
        return None

    monkeypatch.setattr(CachedReads, "blob_listing_pays_from", 0.0)
    monkeypatch.setattr(blobfolders, "_flat", no_flat_page)
    replayed: list[str] = []
    replay = RecordedWalks.replay_records

    def counting(self: RecordedWalks, folder: str) -> Any:
        found = replay(self, folder)
        if found is not None:
            replayed.append(folder)
        return found

    monkeypatch.setattr(RecordedWalks, "replay_records", counting)
    cache = ("--cache", str(tmp_path / "cache.sqlite"))
    warm_up = window.clean(*cache, "--dry-run", report=tmp_path / "warm-up.json")
    assert warm_up.exit_code == 0, warm_up.output
    replayed.clear()
    run = window.clean(*cache, "--gc", report=tmp_path / "window.json")
    assert run.exit_code == 0, run.output
    assert run.report is not None
    assert replayed, "gc listed every blob folder itself"
    assert report_set(run.report, "deleted") == window.expectation.delete
    swept = {blob["digest"] for blob in run.report["gc"]["swept"]}
    assert swept, "the scenario should leave blobs to collect"
    left = blobs(window.storage.key_set())
    assert left == blobs(by_api.storage.key_set()), "not what garbage-collect frees"
    assert blobs(before) - left == swept

    window.restart()
    pull_everything(window)
