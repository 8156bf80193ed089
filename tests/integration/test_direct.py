"""``clean --direct``: links removed straight from storage, on disk and on S3.

Content is pushed once per session through the real registry into a disk template
(the standard scenario, and a fleet of repositories with multi-arch history), then
copied into each test's storage: a disk root, or a moto bucket under ``/root``. Both
scenarios are deterministic, so two copies are two registries with identical content.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web

from regcleaner import mediatypes
from testkit import images
from testkit.api import Pushed, RegistryAPI, sha256
from testkit.faults import FaultProxy, FaultScript, Seen
from testkit.registry import Flavour, RegistryProcess, running
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from testkit.scenario import Expectation, build_scenario
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.integration

V2 = "docker/registry/v2"
REPOSITORIES = f"{V2}/repositories/"
S3_ROOT = "root"  # the registry's s3 rootdirectory is /root
FLEET_REPOSITORIES = 60
FLEET_GENERATIONS = 5

Key = tuple[str, str]  # (repository, digest)


# -- what a storage holds -------------------------------------------------------------


class Storage(Protocol):
    """A registry's storage as the tests read it: keys relative to the storage root."""

    def key_set(self) -> set[str]: ...
    def read(self, key: str) -> bytes | None: ...
    def exists(self, key: str) -> bool: ...


@dataclass
class DiskStorage:
    root: Path

    def key_set(self) -> set[str]:
        base = os.fspath(self.root)
        found: set[str] = set()
        for folder, _, files in os.walk(base):
            found.update(os.path.relpath(os.path.join(folder, f), base) for f in files)
        return found

    def directories(self) -> set[str]:
        base = os.fspath(self.root)
        return {os.path.relpath(folder, base) for folder, _, _ in os.walk(base)}

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()


@dataclass
class BucketStorage:
    """A moto bucket, read (and seeded) through moto's in-process backend: the server
    thread serves the same objects, and the HTTP path costs ~10 ms an object here."""

    bucket: str
    prefix: str = S3_ROOT

    @staticmethod
    def _backend() -> Any:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def _bucket(self) -> Any:
        return self._backend().get_bucket(self.bucket)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        backend = self._backend()
        for key, data in items:
            backend.put_object(self.bucket, f"{self.prefix}/{key}", data)

    def key_set(self) -> set[str]:
        prefix = f"{self.prefix}/"
        return {n[len(prefix) :] for n in list(self._bucket().keys) if n.startswith(prefix)}

    def read(self, key: str) -> bytes | None:
        store = self._bucket().keys
        name = f"{self.prefix}/{key}"
        return bytes(store[name].value) if name in store else None

    def exists(self, key: str) -> bool:
        return f"{self.prefix}/{key}" in self._bucket().keys


def revision_key(repository: str, digest: str) -> str:
    return f"{REPOSITORIES}{repository}/_manifests/revisions/sha256/{digest[7:]}/link"


def _parts(key: str) -> tuple[str, list[str]] | None:
    if not key.startswith(REPOSITORIES) or "/_manifests/" not in key:
        return None
    repository, _, rest = key[len(REPOSITORIES) :].partition("/_manifests/")
    return repository, rest.split("/")


def revisions(keys: Iterable[str]) -> set[Key]:
    """Every (repository, digest) with a revision link."""
    found: set[Key] = set()
    for key in keys:
        parsed = _parts(key)
        if parsed is not None:
            repository, p = parsed
            if len(p) == 4 and p[0] == "revisions" and p[1] == "sha256" and p[3] == "link":
                found.add((repository, "sha256:" + p[2]))
    return found


def history(keys: Iterable[str]) -> set[tuple[str, str, str]]:
    """Every (repository, tag, digest) in a tag's ``index/`` history."""
    found: set[tuple[str, str, str]] = set()
    for key in keys:
        parsed = _parts(key)
        if parsed is not None:
            repository, p = parsed
            if len(p) == 6 and p[0] == "tags" and p[2] == "index" and p[5] == "link":
                found.add((repository, p[1], "sha256:" + p[4]))
    return found


def blobs(keys: Iterable[str]) -> set[str]:
    prefix = f"{V2}/blobs/sha256/"
    return {
        "sha256:" + key.split("/")[-2]
        for key in keys
        if key.startswith(prefix) and key.endswith("/data")
    }


def children_missing(storage: Storage) -> list[str]:
    """Indexes whose revision link is there while a child's is not (what the waves must
    never leave behind)."""
    present = revisions(storage.key_set())
    problems: list[str] = []
    for repository, digest in sorted(present):
        data = storage.read(f"{V2}/blobs/sha256/{digest[7:9]}/{digest[7:]}/data")
        assert data is not None, f"{repository}@{digest}: manifest blob missing"
        for child in json.loads(data).get("manifests") or []:
            if (repository, child["digest"]) not in present:
                problems.append(f"{repository}@{digest} lost its child {child['digest']}")
    return problems


# -- templates: content pushed once, copied per test ----------------------------------


@dataclass(frozen=True)
class Template:
    """A registry storage root pushed through the registry, and what cleaning it must do."""

    root: Path
    expectation: Expectation

    def files(self, repositories: set[str] | None = None) -> Iterator[str]:
        """Relative keys of every file: every blob, and the selected repositories."""
        for key in DiskStorage(self.root).key_set():
            # Name components never start with "_": the first "/_" ends the name.
            name = key[len(REPOSITORIES) :].split("/_", 1)[0]
            if repositories is None or not key.startswith(REPOSITORIES) or name in repositories:
                yield key

    def copy_to(self, root: Path, repositories: set[str] | None = None) -> None:
        """Copy the tree (the selected repositories only) to ``root``."""

        def ignore(folder: str, names: list[str]) -> set[str]:
            relative = os.path.relpath(folder, self.root) + "/"
            if repositories is None or not relative.startswith(REPOSITORIES):
                return set()
            below = relative[len(REPOSITORIES) :]
            if below.startswith("_") or "/_" in below:
                return set()  # inside a repository's own folders
            return {
                name for name in names
                if not name.startswith("_")
                and not any(r == below + name or r.startswith(below + name + "/")
                            for r in repositories)
            }  # fmt: skip

        shutil.copytree(self.root, root, ignore=ignore, dirs_exist_ok=True)


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def push_history_repository(api: RegistryAPI, repository: str, *, nested: bool) -> Expectation:
    """Multi-arch ``latest`` and single-arch ``v`` pushed over ``FLEET_GENERATIONS``
    times (two blobs shared by every image); with ``nested``, an untagged index of an
    index of two images (three waves)."""
    ex = Expectation()
    config = _json({"architecture": "amd64", "os": "linux", "repo": repository,
                    "rootfs": {"type": "layers", "diff_ids": []}})  # fmt: skip
    layer = f"the one layer of {repository}".encode() * 8
    config_digest, layer_digest = (
        api.push_blob(repository, config),
        api.push_blob(repository, layer),
    )

    def image(label: str, tag: str | None = None) -> Pushed:
        body = _json({
            "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(layer)}],
            "annotations": {"label": label},
        })  # fmt: skip
        digest = api.put_manifest(repository, tag or sha256(body), body, mediatypes.OCI_MANIFEST)
        return Pushed(repository, digest, mediatypes.OCI_MANIFEST, len(body),
                      (config_digest, layer_digest), (), (tag,) if tag else ())  # fmt: skip

    for generation in range(FLEET_GENERATIONS):
        last = generation == FLEET_GENERATIONS - 1
        kids = [image(f"latest-{generation}-{arch}") for arch in range(2)]
        index = images.push_index(api, repository, "latest", kids)
        single = image(f"v-{generation}", "v")
        (ex.kept if last else ex.deleted)(index, *kids, single)
    ex.tags |= {(repository, "latest"), (repository, "v")}
    if nested:
        kids = [image(f"nested-{arch}") for arch in range(2)]
        inner = images.push_index(api, repository, None, kids)
        outer = images.push_index(api, repository, None, [inner])
        ex.deleted(outer, inner, *kids)
    return ex


def fleet_name(number: int) -> str:
    return f"fleet/r{number:03d}"


def build_fleet(root: Path, flavour: Flavour) -> Expectation:
    """``FLEET_REPOSITORIES`` repositories: two pushed through the registry, the others
    copies of their folders (a repository folder holds no name; blobs are shared)."""
    expectation = Expectation()
    with running(RegistryProcess(root, flavour=flavour)) as registry:
        api = RegistryAPI(registry.url)
        prototypes = [push_history_repository(api, f"proto/p{n}", nested=n == 1) for n in (0, 1)]
    base = registry.root / REPOSITORIES
    for number in range(FLEET_REPOSITORIES):
        name, source = fleet_name(number), f"proto/p{number % 2}"
        shutil.copytree(base / source, base / name)
        prototype = prototypes[number % 2]
        expectation.keep |= {(name, d) for _, d in prototype.keep}
        expectation.delete |= {(name, d) for _, d in prototype.delete}
        expectation.tags |= {(name, t) for _, t in prototype.tags}
    shutil.rmtree(base / "proto")
    return expectation


def scenario_template_in(workdir: Path, flavour: Flavour) -> Template:
    """The standard scenario, pushed through a registry of ``flavour`` on disk."""
    with running(RegistryProcess(workdir, flavour=flavour)) as registry:
        expectation = build_scenario(RegistryAPI(registry.url))
    return Template(registry.root, expectation)


def fleet_template_in(workdir: Path, flavour: Flavour) -> Template:
    expectation = build_fleet(workdir, flavour)
    return Template(workdir / "storage", expectation)


@pytest.fixture(scope="session")
def scenario_template(
    tmp_path_factory: pytest.TempPathFactory, registry_flavour: Flavour
) -> Template:
    return scenario_template_in(tmp_path_factory.mktemp("scenario-template"), registry_flavour)


@pytest.fixture(scope="session")
def fleet_template(tmp_path_factory: pytest.TempPathFactory, registry_flavour: Flavour) -> Template:
    return fleet_template_in(tmp_path_factory.mktemp("fleet-template"), registry_flavour)


# -- sites: a registry over a copy of a template ----------------------------------------


@dataclass
class Site:
    """One registry (disk or S3) with its storage, and the arguments to clean it."""

    registry: RegistryProcess
    storage: DiskStorage | BucketStorage
    expectation: Expectation
    storage_args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> RegistryAPI:
        return RegistryAPI(self.registry.url)

    def args(self, *extra: str, url: str | None = "registry", direct: bool = True) -> list[str]:
        """``clean`` arguments; ``url`` "registry" means this registry's URL, None none."""
        argv = ["clean", *self.storage_args, "--progress-interval", "0", "--min-age", "0"]
        if direct:
            argv.append("--direct")
        if url is not None:
            argv += ["--registry-url", self.registry.url if url == "registry" else url]
        return argv + list(extra)

    def clean(self, *extra: str, report: Path, url: str | None = "registry",
              direct: bool = True) -> CliResult:  # fmt: skip
        return run_cli(self.args(*extra, url=url, direct=direct), env=self.env,
                       report_path=report)  # fmt: skip

    def restart(self, *, readonly: bool = False, delete_enabled: bool = True) -> None:
        self.registry.readonly = readonly
        self.registry.delete_enabled = delete_enabled
        self.registry.restart()


_buckets = itertools.count()


class Sites:
    """Makes sites of one kind and stops their registries at the end of the test."""

    def __init__(
        self, kind: str, workdir: Path, request: pytest.FixtureRequest, flavour: Flavour
    ) -> None:
        self.kind = kind
        self.flavour = flavour
        self.workdir = workdir
        self.request = request
        self.made: list[Site] = []

    def make(
        self,
        template: Template,
        *,
        repositories: set[str] | None = None,
        start: bool = True,
        readonly: bool = False,
        delete_enabled: bool = True,
    ) -> Site:
        workdir = self.workdir / f"site-{len(self.made)}"
        expectation = template.expectation
        if repositories is not None:
            expectation = Expectation(
                keep={k for k in expectation.keep if k[0] in repositories},
                delete={k for k in expectation.delete if k[0] in repositories},
                tags={k for k in expectation.tags if k[0] in repositories},
            )
        if self.kind == "disk":
            registry = RegistryProcess(
                workdir, flavour=self.flavour, readonly=readonly, delete_enabled=delete_enabled
            )
            template.copy_to(registry.root, repositories)
            storage: DiskStorage | BucketStorage = DiskStorage(registry.root)
            site = Site(registry, storage, expectation, ["--registry-dir", str(registry.root)])
        else:
            moto: MotoS3 = self.request.getfixturevalue("moto_server")
            bucket = f"direct-{next(_buckets)}"
            moto.create_bucket(bucket)
            registry = RegistryProcess(
                workdir, flavour=self.flavour,
                storage=moto.registry_storage(bucket, f"/{S3_ROOT}"),
                readonly=readonly, delete_enabled=delete_enabled,
            )  # fmt: skip
            storage = BucketStorage(bucket)
            storage.put_many(
                (key, (template.root / key).read_bytes()) for key in template.files(repositories)
            )
            site = Site(
                registry, storage, expectation,
                ["--storage", "S3", "--bucket", bucket, "--registry-dir", f"/{S3_ROOT}",
                 "--s3-endpoint", moto.url, "--region", REGION],
                {"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY},
            )  # fmt: skip
        self.made.append(site)
        if start:
            registry.start()
        return site

    def close(self) -> None:
        for site in self.made:
            site.registry.stop()


@pytest.fixture(params=["disk", "s3"])
def sites(
    request: pytest.FixtureRequest, tmp_path: Path, registry_flavour: Flavour
) -> Iterator[Sites]:
    made = Sites(str(request.param), tmp_path, request, registry_flavour)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def disk_sites(
    request: pytest.FixtureRequest, tmp_path: Path, registry_flavour: Flavour
) -> Iterator[Sites]:
    """For what does not depend on the storage (the gate talks to the registry only)."""
    made = Sites("disk", tmp_path, request, registry_flavour)
    try:
        yield made
    finally:
        made.close()


def report_set(report: dict[str, Any] | None, name: str) -> set[Key]:
    assert report is not None
    return {(r["name"], item["digest"]) for r in report["repositories"] for item in r[name]}


def removal_keys(before: set[str], gone: set[Key]) -> set[str]:
    """The keys a direct removal of ``gone`` removes: revision links and history entries."""
    return {key for key in before if _removes(key, gone)}


def _removes(key: str, gone: set[Key]) -> bool:
    parsed = _parts(key)
    if parsed is None:
        return False
    repository, p = parsed
    if len(p) == 4 and p[0] == "revisions":
        return (repository, "sha256:" + p[2]) in gone
    if len(p) == 6 and p[0] == "tags" and p[2] == "index":
        return (repository, "sha256:" + p[4]) in gone
    return False


def pull_everything(site: Site, *, threads: int = 6) -> None:
    """Every tag the registry lists (and every expected tag) pulls completely, and so
    does every kept manifest no tag reaches (referrers)."""
    api = site.api
    ex = site.expectation
    tags: set[tuple[str, str]] = set()
    for repository in sorted(ex.repositories()):
        tags |= {(repository, tag) for tag in api.tags(repository)}
    assert ex.tags <= tags, f"tags gone: {sorted(ex.tags - tags)[:5]}"
    served: set[Key] = set()
    with ThreadPoolExecutor(threads) as pool:
        pulled = pool.map(lambda ref: api.pull(*ref), sorted(tags))
        for (repository, _), got in zip(sorted(tags), pulled, strict=True):
            served |= {(repository, digest) for digest in got}
        list(pool.map(lambda ref: api.pull(*ref), sorted(ex.keep - served)))


def refusal_line(result: CliResult) -> str:
    """The refusal: a short error line, then an indented line that says how to fix it."""
    lines = result.stderr.splitlines()
    found = [i for i, line in enumerate(lines) if "refusing to write storage" in line]
    assert len(found) == 1, result.output
    error, hint = lines[found[0]], lines[found[0] + 1]
    assert hint.startswith("  to fix: "), result.output
    assert len(error) < 300, error
    return error + "\n" + hint


# -- 1. the gate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "extra", "why"),
    [
        ("writable", (), "a DELETE of an unknown manifest answered 404"),
        ("deletes-disabled", (), "deletion is disabled, but that does not stop pushes"),
        ("writable", ("--registry-stopped",), "a DELETE of an unknown manifest answered 404"),
    ],
    ids=["writable", "deletes-disabled", "registry-stopped-but-running"],
)
def test_gate_refuses_a_registry_that_can_write(
    sites: Sites,
    scenario_template: Template,
    tmp_path: Path,
    setup: str,
    extra: tuple[str, ...],
    why: str,
) -> None:
    site = sites.make(scenario_template, delete_enabled=setup != "deletes-disabled")
    before = site.storage.key_set()
    result = site.clean(*extra, report=tmp_path / "r.json")
    assert result.exit_code == 2, result.output
    line = refusal_line(result)
    assert "read-only mode" in line
    assert "maintenance: readonly: enabled: true" in line
    assert why in line
    assert site.storage.key_set() == before, "the gate let something be removed"
    assert "Traceback" not in result.output


def test_direct_without_url_or_registry_stopped_exits_2_before_anything(
    sites: Sites, scenario_template: Template, tmp_path: Path
) -> None:
    site = sites.make(scenario_template)
    before = site.storage.key_set()
    result = site.clean(report=tmp_path / "r.json", url=None)
    assert result.exit_code == 2, result.output
    assert "--registry-stopped" in result.stderr
    assert "--registry-url" in result.stderr
    assert site.storage.key_set() == before
    # Before anything: storage that does not exist is not even looked at.
    argv = site.args(url=None)
    flag = "--registry-dir" if sites.kind == "disk" else "--bucket"
    argv[argv.index(flag) + 1] = "/no/such/root" if sites.kind == "disk" else "no-such-bucket"
    again = run_cli(argv, env=site.env)
    assert again.exit_code == 2, again.output
    assert "--registry-stopped" in again.stderr
    assert "no-such" not in again.stderr


@pytest.mark.parametrize("url", [None, "registry"], ids=["no-url", "url-of-stopped-registry"])
def test_registry_stopped_runs(
    sites: Sites, scenario_template: Template, tmp_path: Path, url: str | None
) -> None:
    site = sites.make(scenario_template, start=False)
    result = site.clean("--registry-stopped", report=tmp_path / "r.json", url=url)
    assert result.exit_code == 0, result.output
    assert report_set(result.report, "deleted") == site.expectation.delete
    assert "Restart the registry" in result.stdout
    assert not revisions(site.storage.key_set()) & site.expectation.delete
    said = "does not answer: stopped" if url else "nothing was probed"
    assert said in result.stderr


@dataclass
class RecordingProxy(FaultProxy):
    """A FaultProxy that notes the client port of each scripted request (a fresh
    connection has a port of its own), and whose int answers carry the script's body and
    content type (read-only mode's plain text)."""

    ports: list[int] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in self.script.methods:
            return await self._forward(request, None)
        assert request.transport is not None
        self.ports.append(int(request.transport.get_extra_info("peername")[1]))
        action = self.script.decide(len(self.seen) + 1, request.path_qs)
        record = Seen(time.monotonic(), request.path, 0)
        self.seen.append(record)
        if isinstance(action, int):
            record.answered = action
            return web.Response(status=action, body=self.script.body.encode(),
                                headers={"Content-Type": self.script.content_type})  # fmt: skip
        return await self._forward(request, record)


def test_gate_probes_every_round_on_fresh_connections(
    disk_sites: Sites, scenario_template: Template, tmp_path: Path
) -> None:
    site = disk_sites.make(scenario_template, readonly=True)
    with running(RecordingProxy(site.registry.url)) as proxy:
        proxy.script = FaultScript(methods=frozenset({"DELETE", "PUT"}))
        result = site.clean("--gate-probes", "2", "--dry-run", report=tmp_path / "d.json",
                            url=proxy.url)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert not report_set(result.report, "deleted")
        # A dry run runs the same probes, report-only (a writable registry is a warning).
        dry_probes, dry_ports = len(proxy.seen), len(proxy.ports)
        result = site.clean("--gate-probes", "2", report=tmp_path / "r.json", url=proxy.url)
    assert result.exit_code == 0, result.output
    for seen, ports in ((proxy.seen[:dry_probes], proxy.ports[:dry_ports]),
                        (proxy.seen[dry_probes:], proxy.ports[dry_ports:])):  # fmt: skip
        paths = [hit.path for hit in seen]
        assert len(paths) == 4, paths
        assert sum(path.endswith("/manifests/sha256:" + "0" * 64) for path in paths) == 2, paths
        assert sum(path.endswith("/manifests/regcleaner-read-only-probe") for path in paths) == 2
        assert all(hit.answered == 405 for hit in seen)
        assert len(set(ports)) == 4, "probes shared a connection"
    assert report_set(result.report, "deleted") == site.expectation.delete


@pytest.mark.parametrize(
    ("decide", "why"),
    [
        # A proxy that blocks DELETE alone, in front of a registry that takes pushes.
        (lambda n, path: 405 if n % 2 == 1 else None, "a manifest PUT answered 400"),
        # One replica of two is read-only: round 1 lands on it, round 2 does not.
        (lambda n, path: 405 if n <= 2 else None, "probe round 2"),
    ],
    ids=["delete-blocked-only", "one-replica-writable"],
)
def test_gate_needs_every_probe_refused_as_read_only_mode_does(
    disk_sites: Sites,
    scenario_template: Template,
    tmp_path: Path,
    decide: Callable[[int, str], int | None],
    why: str,
) -> None:
    site = disk_sites.make(scenario_template)
    before = site.storage.key_set()
    with running(RecordingProxy(site.registry.url)) as proxy:
        proxy.script = FaultScript(
            decide, methods=frozenset({"DELETE", "PUT"}),
            body="Method not allowed\n", content_type="text/plain; charset=utf-8",
        )  # fmt: skip
        result = site.clean(report=tmp_path / "r.json", url=proxy.url)
    assert result.exit_code == 2, result.output
    assert why in refusal_line(result)
    assert site.storage.key_set() == before


# -- 2. the state after a direct run --------------------------------------------------------


def test_direct_run_on_a_read_only_registry_leaves_every_tag_whole(
    sites: Sites, scenario_template: Template, tmp_path: Path
) -> None:
    site = sites.make(scenario_template, readonly=True)
    ex = site.expectation
    before = site.storage.key_set()
    old_history = {(r, d) for r, _, d in history(before)} & ex.delete
    assert len(old_history) >= 5, "the scenario should leave tag history to remove"

    result = site.clean(report=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert result.report is not None
    assert result.report["mode"] == "direct"
    assert report_set(result.report, "deleted") == ex.delete
    summary = result.report["summary"]
    assert summary["deleted"] == len(ex.delete)
    assert summary["failed"] == 0
    assert summary["delete_requests"] == summary["storage_requests"]["delete"] > 0
    assert "Restart the registry" in result.stdout

    after = site.storage.key_set()
    assert before - after == removal_keys(before, ex.delete), "other keys were removed"
    assert after <= before
    assert revisions(after) == revisions(before) - ex.delete
    assert not {(r, d) for r, _, d in history(after)} & ex.delete
    if isinstance(site.storage, DiskStorage):
        for repository, digest in ex.delete:
            folder = revision_key(repository, digest).rsplit("/", 1)[0]
            assert not (site.storage.root / folder).exists(), f"{folder} left behind"

    site.restart()  # writable again, caches dropped
    pull_everything(site)
    for repository, digest in ex.delete:
        answer = site.api.get_manifest(repository, digest)
        assert answer.status == 404, f"{repository}@{digest} still served after the run"


def test_read_only_mode_set_by_environment_variable_passes_the_gate(
    disk_sites: Sites, scenario_template: Template, tmp_path: Path
) -> None:
    # docs/maintenance.md and docs/kubernetes.md: on Kubernetes, read-only mode can be
    # turned on with the environment variable instead of the config file.
    site = disk_sites.make(scenario_template, start=False)
    assert not site.registry.readonly
    site.registry.env_overrides["REGISTRY_STORAGE_MAINTENANCE_READONLY"] = '{"enabled": true}'
    site.registry.start()
    result = site.clean(report=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert report_set(result.report, "deleted") == site.expectation.delete


# -- 3. garbage-collect frees the same as after an API run ------------------------------------


def test_garbage_collect_frees_the_same_blobs_as_after_an_api_run(
    sites: Sites, scenario_template: Template, tmp_path: Path
) -> None:
    by_api = sites.make(scenario_template)
    direct = sites.make(scenario_template, readonly=True)
    assert by_api.storage.key_set() == direct.storage.key_set()
    at_start = blobs(direct.storage.key_set())

    api_run = by_api.clean(report=tmp_path / "api.json", direct=False)
    assert api_run.exit_code == 0, api_run.output
    direct_run = direct.clean(report=tmp_path / "direct.json")
    assert direct_run.exit_code == 0, direct_run.output
    assert report_set(api_run.report, "deleted") == report_set(direct_run.report, "deleted")

    for site in (by_api, direct):
        site.registry.stop()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda site: site.registry.garbage_collect(), (by_api, direct)))
    left_by_api = blobs(by_api.storage.key_set())
    left_by_direct = blobs(direct.storage.key_set())
    assert left_by_direct == left_by_api
    freed = at_start - left_by_direct
    assert {d for _, d in direct.expectation.delete} <= freed
    assert not {d for _, d in direct.expectation.keep} & freed
    assert revisions(by_api.storage.key_set()) == revisions(direct.storage.key_set())

    direct.restart()
    pull_everything(direct)


def collected_by_the_registry(
    sites: Sites, template: Template, tmp_path: Path
) -> tuple[Site, Site, set[str]]:
    """Two copies of ``template``: one cleaned through the API and then collected by
    the registry's own garbage-collect, and one read-only for a window; with the
    window's keys before it runs."""
    by_api = sites.make(template)
    window = sites.make(template, readonly=True)
    before = window.storage.key_set()
    api_run = by_api.clean(report=tmp_path / "api.json", direct=False)
    assert api_run.exit_code == 0, api_run.output
    by_api.registry.stop()
    by_api.registry.garbage_collect()
    return by_api, window, before


def test_one_window_clean_direct_gc_frees_what_garbage_collect_frees_after_an_api_run(
    sites: Sites, scenario_template: Template, tmp_path: Path
) -> None:
    by_api, window, before = collected_by_the_registry(sites, scenario_template, tmp_path)

    # The dry run of the window writes nothing, and marks as if the removals were done.
    dry = window.clean("--gc", "--dry-run", report=tmp_path / "dry.json")
    assert dry.exit_code == 0, dry.output
    assert window.storage.key_set() == before
    assert dry.report is not None
    would = {blob["digest"] for blob in dry.report["gc"]["would_sweep"]}

    run = window.clean("--gc", report=tmp_path / "window.json")
    assert run.exit_code == 0, run.output
    assert run.report is not None
    assert report_set(run.report, "deleted") == window.expectation.delete
    swept = {blob["digest"] for blob in run.report["gc"]["swept"]}
    assert swept, "the scenario should leave blobs to collect"
    assert swept == would, "the dry run did not list what the run swept"
    left = blobs(window.storage.key_set())
    assert left == blobs(by_api.storage.key_set()), "not what garbage-collect frees"
    assert blobs(before) - left == swept

    window.restart()
    pull_everything(window)


def test_the_window_collects_no_blob_after_a_failed_removal(
    disk_sites: Sites, scenario_template: Template, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from regcleaner.storage.filesystem import FilesystemStore

    site = disk_sites.make(scenario_template, readonly=True)
    before = blobs(site.storage.key_set())
    delete_many_sync = FilesystemStore._delete_many_sync

    def refuse_one(
        self: FilesystemStore, keys: Sequence[str], directories: Sequence[str]
    ) -> list[str | None]:
        results = delete_many_sync(self, keys[1:], directories)
        return ["EACCES: refused by the test", *results]

    monkeypatch.setattr(FilesystemStore, "_delete_many_sync", refuse_one)
    result = site.clean("--gc", report=tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    assert result.report is not None
    assert result.report["summary"]["failed"] >= 1
    assert "gc" not in result.report or not result.report["gc"].get("swept")
    assert blobs(site.storage.key_set()) == before, "blobs were collected after a failure"


# -- 4. a run stopped half-way, then rerun ----------------------------------------------


def _is_revision_link(key: str) -> bool:
    return "/_manifests/revisions/" in key and key.endswith("/link")


def test_sigterm_mid_run_leaves_storage_consistent_and_a_rerun_completes(
    sites: Sites, fleet_template: Template, tmp_path: Path
) -> None:
    # On S3 (moto, ~10 ms a request) fewer repositories take long enough.
    count = FLEET_REPOSITORIES if sites.kind == "disk" else 40
    chosen = {fleet_name(n) for n in range(count)}
    site = sites.make(fleet_template, repositories=chosen, start=False)
    one_shot = sites.make(fleet_template, repositories=chosen, start=False)
    ex = site.expectation
    before = site.storage.key_set()
    watched = [revision_key(r, d) for r, d in sorted(ex.delete) if r <= fleet_name(4)]
    assert all(site.storage.exists(key) for key in watched)

    report = tmp_path / "stopped.json"
    argv = site.args("--registry-stopped", "--concurrency", "2", "--per-repository", "1",
                     "--report", str(report), url=None)  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "regcleaner", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **site.env},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while all(site.storage.exists(key) for key in watched):
            assert process.poll() is None, "the run ended before anything was seen removed"
            assert time.monotonic() < deadline, "nothing removed in 60 s"
            time.sleep(0.001)  # polling the storage, not waiting for a server
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    document = json.loads(report.read_text())
    assert document["stopped_by"] == "SIGTERM"
    assert document["summary"]["failed"] == 0, "in-flight removals were abandoned"
    deleted = report_set(document, "deleted")
    middle = site.storage.key_set()
    assert deleted == revisions(before) - revisions(middle), "the report and storage disagree"
    assert 0 < len(deleted) < len(ex.delete), "the stop did not land mid-run"
    assert deleted <= ex.delete
    assert before - middle == removal_keys(before, deleted)
    assert children_missing(site.storage) == []

    site.restart()
    pull_everything(site)
    site.registry.stop()

    rerun = site.clean("--registry-stopped", report=tmp_path / "rerun.json", url=None)
    assert rerun.exit_code == 0, rerun.output
    assert report_set(rerun.report, "deleted") == ex.delete - deleted

    whole = one_shot.clean("--registry-stopped", report=tmp_path / "one-shot.json", url=None)
    assert whole.exit_code == 0, whole.output
    assert report_set(whole.report, "deleted") == ex.delete
    assert site.storage.key_set() == one_shot.storage.key_set()
    if isinstance(site.storage, DiskStorage) and isinstance(one_shot.storage, DiskStorage):
        assert site.storage.directories() == one_shot.storage.directories()


# -- 6. waves stay in order ------------------------------------------------------------------


def test_a_stop_between_waves_leaves_the_children_of_a_removed_index(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regcleaner.engine import Engine
    from regcleaner.storage import filesystem
    from regcleaner.storage.filesystem import FilesystemStore

    kids = [images.push_image(api, "waves", None, seed=f"w-{i}", oci=True) for i in range(2)]
    inner = images.push_index(api, "waves", None, kids)
    outer = images.push_index(api, "waves", None, [inner])
    old_list, old_kids = images.push_multiarch(api, "waves", "multi", seed="w-old", oci=False)
    live_list, live_kids = images.push_multiarch(api, "waves", "multi", seed="w-new")
    storage = DiskStorage(registry.root)
    pulled_before = api.pull("waves", "multi")
    registry.stop()

    # A slow disk: every batch goes to the store's disk thread, so the event loop runs
    # (and sees the signal) while a wave's unlinks are under way.
    monkeypatch.setattr(filesystem, "_INLINE_CALL_LIMIT_S", -1.0)
    stop_seen = threading.Event()
    request_stop = Engine.request_stop

    def noting_stop(self: Engine, why: str) -> None:
        request_stop(self, why)
        stop_seen.set()

    monkeypatch.setattr(Engine, "request_stop", noting_stop)
    calls: list[list[str]] = []

    def link_calls() -> list[list[str]]:
        return [keys for keys in calls if any(_is_revision_link(k) for k in keys)]

    armed = threading.Event()
    armed.set()
    delete_many_sync = FilesystemStore._delete_many_sync

    def first_wave_then_sigterm(
        self: FilesystemStore, keys: Sequence[str], directories: Sequence[str]
    ) -> list[str | None]:
        calls.append(list(keys))
        try:
            return delete_many_sync(self, keys, directories)
        finally:
            # A wave removes its tag-history entries first, then its revision links:
            # stop once the first wave's revision links are gone.
            if armed.is_set() and len(link_calls()) == 1 and link_calls()[0] is calls[-1]:
                os.kill(os.getpid(), signal.SIGTERM)
                # Hold the wave until the engine has taken the stop.
                assert stop_seen.wait(10), "SIGTERM never reached the engine"

    monkeypatch.setattr(FilesystemStore, "_delete_many_sync", first_wave_then_sigterm)
    args = ["clean", "--direct", "--registry-stopped", "--registry-dir", str(registry.root),
            "--progress-interval", "0", "--min-age", "0"]  # fmt: skip
    stopped = run_cli(args, report_path=tmp_path / "stopped.json")
    assert stopped.exit_code == 143, stopped.output
    assert len(link_calls()) == 1, "a wave started after the stop"
    present = revisions(storage.key_set())
    first_wave = {("waves", outer.digest), ("waves", old_list.digest)}
    assert not present & first_wave, "the first wave is the indexes nothing points at"
    rest = {("waves", p.digest) for p in (inner, *kids, *old_kids)}
    assert rest <= present, "a child went with or before its index"
    assert children_missing(storage) == []
    assert report_set(stopped.report, "deleted") == first_wave
    assert stopped.report is not None
    kept = {k["digest"]: k["reason"] for r in stopped.report["repositories"] for k in r["kept"]}
    assert all(kept[d] == "not-attempted:run stopped" for _, d in rest), kept

    registry.start()
    assert api.pull("waves", "multi") == pulled_before
    registry.stop()

    armed.clear()
    calls.clear()
    rerun = run_cli(args, report_path=tmp_path / "rerun.json")
    assert rerun.exit_code == 0, rerun.output
    assert report_set(rerun.report, "deleted") == rest

    def call_of(digest: str) -> int:
        key = revision_key("waves", digest)
        return next(i for i, keys in enumerate(calls) if key in keys)

    assert all(call_of(inner.digest) < call_of(kid.digest) for kid in kids), calls
    assert revisions(storage.key_set()) == {("waves", p.digest) for p in (live_list, *live_kids)}
