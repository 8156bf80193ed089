"""The scan cache (regcleaner/scancache.py) through the registry view, on the in-memory
store: warm runs make the same decisions as cold runs (a property, on random
registries mutated between the runs), read only what changed, and a cache that does
not belong to this storage and version is ignored with a warning."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcleaner import gomanifest, scancache
from regcleaner import layout as paths
from regcleaner.cachedreads import CachedMarks, CachedReads
from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.manifests import MAX_MANIFEST_BYTES, ManifestInfo, ManifestRefs
from regcleaner.planner import Policy, RepositoryPlan, needed_manifests, plan_repository
from regcleaner.scancache import NotThisCache, ScanCache
from regcleaner.storage.base import Blob, ByteStore
from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.view import RegistryView
from testkit.memory import MemoryStore

OCI_IMAGE = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class Clock:
    """Whole seconds that move on when told (each mutation is a later second)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Registry:
    """A registry in a MemoryStore, written as distribution writes it."""

    store: MemoryStore
    clock: Clock
    manifests: dict[Digest, bytes] = field(default_factory=dict)
    seeds: int = 0

    def blob(self, data: bytes) -> Digest:
        digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        self.store.put(paths.blob_data(digest), data)
        return digest

    def image(self, subject: Digest | None = None) -> Digest:
        self.seeds += 1
        config = self.blob(f"config {self.seeds}".encode())
        layer = self.blob(f"layer {self.seeds}".encode())
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer, "size": 7}],
        }  # fmt: skip
        if subject is not None:
            document["subject"] = {"mediaType": OCI_IMAGE, "digest": subject, "size": 1}
        return self._manifest(document)

    def index(self, children: list[Digest]) -> Digest:
        self.seeds += 1
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_IMAGE, "digest": c, "size": 1} for c in children],
            "annotations": {"seed": str(self.seeds)},
        }
        return self._manifest(document)

    def _manifest(self, document: dict[str, Any]) -> Digest:
        data = json.dumps(document).encode()
        digest = self.blob(data)
        self.manifests[digest] = data
        return digest

    def link(self, repository: str, digest: Digest) -> None:
        self.store.put(paths.revision_link(repository, digest), digest.encode())

    def tag(self, repository: str, tag: str, digest: Digest) -> None:
        self.link(repository, digest)
        self.store.put(paths.tag_current_link(repository, tag), digest.encode())
        self.store.put(f"{paths.tag_history_entry(repository, tag, digest)}/link", digest.encode())

    def manifests_of(self, repository: str) -> list[Digest]:
        prefix = paths.revisions_dir(repository) + "/"
        return sorted(
            Digest("sha256:" + key[len(prefix) :].split("/")[0])
            for key in self.store.stored_keys()
            if key.startswith(prefix)
        )


REPOSITORIES = ("app", "team/api", "base")


def build(layout: list[tuple[int, int, bool]], *, etags: bool = True) -> Registry:
    """Per repository: how many images, how many of them are tagged, and whether an
    index over them (tagged) and a signature-like referrer exist (``etags``: False for
    a store that gives none)."""
    clock = Clock()
    registry = Registry(MemoryStore(clock=clock, name="property", etags=etags), clock)
    for repository, (images, tagged, extra) in zip(REPOSITORIES, layout, strict=False):
        digests = [registry.image() for _ in range(images)]
        for number, digest in enumerate(digests):
            if number < tagged:
                registry.tag(repository, f"v{number}", digest)
            else:
                registry.link(repository, digest)
        if extra and digests:
            index = registry.index(digests[:2])
            registry.tag(repository, "multi", index)
            referrer = registry.image(subject=digests[0])
            registry.link(repository, referrer)
    return registry


@dataclass(frozen=True)
class Outcome:
    """Everything a run decides from: what the view said and what the planner made."""

    snapshots: dict[str, Any]
    manifests: dict[str, dict[Digest, ManifestInfo]]
    plans: dict[str, tuple[Any, ...]]
    revision_links: dict[str, Any]
    marks: dict[str, list[tuple[str, Any]]]
    """What gc marks for each revision (or the problem it reports)."""


def gc_marks(digest: Digest, found: CachedMarks | bytes | StorageError | None) -> Any:
    """What gc.py's marking makes of one manifest_marks answer (its checks, in order):
    the blobs it marks, and whether it names the manifest as schema1."""
    if isinstance(found, CachedMarks):
        return ("marks", sorted(found.references), found.schema1)
    if found is None:
        return "missing"
    if isinstance(found, StorageError):
        return "unreadable"
    if len(found) > MAX_MANIFEST_BYTES:
        return "too large"
    if "sha256:" + hashlib.sha256(found).hexdigest() != digest:
        return "does not match"
    try:
        decoded = gomanifest.decode_manifest(found)
    except gomanifest.GoManifestError as exc:
        return f"error: {exc}"
    return ("marks", sorted({r.digest for r in decoded.references if r.digest}),
            decoded.kind == "schema1")  # fmt: skip


def _plan_key(plan: RepositoryPlan) -> tuple[Any, ...]:
    return (dict(plan.keep), plan.waves, plan.tagged, plan.warnings, dict(plan.dependents))


MODES = ("head", "flat", "folders")
"""How a warm run checks that cached manifests are still there: a HEAD each, one flat
listing of the blobs, or a listing per fan-out folder (small pages make it pay)."""


async def scan(store: ByteStore, cache: ScanCache | None, mode: str = "head") -> Outcome:
    """A dry run's reads: repositories, snapshots (with history, as direct removal takes
    them), manifests, plans, and gc's revision links."""
    view = RegistryView(store, cache)
    # A listing of the blobs pays here from a few cached manifests: "head" forbids it,
    # "flat" and "folders" force it, "weighed" leaves the choice to the view.
    if mode != "weighed":
        view.reads.blob_listing_pays_from = math.inf if mode == "head" else 0.0
    if mode == "folders" and isinstance(store, MemoryStore):
        store.page_size = 2
        store.listing_concurrency = 64
    names: list[str] = []

    async def found(name: str) -> None:
        names.append(name)

    await view.repositories(found)
    snapshots: dict[str, Any] = {}
    manifests: dict[str, dict[Digest, ManifestInfo]] = {}
    plans: dict[str, tuple[Any, ...]] = {}
    links: dict[str, Any] = {}
    marks: dict[str, list[tuple[str, Any]]] = {}
    for name in sorted(names):
        snapshot = await view.snapshot(name, history=True)
        plain = await view.snapshot(name)
        read = await view.read_manifests(needed_manifests(snapshot))
        snapshots[name] = (snapshot, plain)
        manifests[name] = read
        plans[name] = _plan_key(plan_repository(snapshot, read, Policy(), 1_900_000_000.0))
        links[name] = await view.revision_link_files(name)
        revisions = sorted(snapshot.revisions)
        answers = await view.manifest_marks(revisions)
        marks[name] = [(d, gc_marks(d, a)) for d, a in zip(revisions, answers, strict=True)]
    return Outcome(snapshots, manifests, plans, links, marks)


def run(store: ByteStore, cache: ScanCache | None, mode: str = "head") -> Outcome:
    return asyncio.run(scan(store, cache, mode))


# -- mutations between the runs ------------------------------------------------------

MUTATIONS = (
    "push", "push_tagged", "retag", "repush_same", "untag", "delete_revision",
    "corrupt_manifest", "remove_manifest_blob", "garbage_tag_link", "unreadable_manifest",
    "same_size_corruption",
)  # fmt: skip


def mutate(registry: Registry, kind: str, pick: int) -> None:
    """One change made by someone else between two runs (a later second each)."""
    registry.clock.now += 1
    store = registry.store
    repository = REPOSITORIES[pick % len(REPOSITORIES)]
    digests = sorted(registry.manifests)
    tag_keys = sorted(k for k in store.stored_keys() if k.endswith("/current/link"))
    if kind in ("push", "push_tagged"):
        digest = registry.image()
        if kind == "push_tagged":
            registry.tag(repository, f"new{pick}", digest)
        else:
            registry.link(repository, digest)
    elif kind == "retag" and digests and tag_keys:
        key = tag_keys[pick % len(tag_keys)]
        repo = key.split("/repositories/")[1].split("/_manifests/")[0]
        tag = key.split("/_manifests/tags/")[1].split("/")[0]
        registry.tag(repo, tag, digests[pick % len(digests)])
    elif kind == "repush_same" and tag_keys:
        key = tag_keys[pick % len(tag_keys)]
        store.put(key, store.objects[key].data)  # same bytes and ETag, a later mtime
    elif kind == "untag" and tag_keys:
        key = tag_keys[pick % len(tag_keys)]
        for other in [k for k in store.stored_keys() if k.startswith(key[: -len("current/link")])]:
            store.remove(other)
    elif kind == "delete_revision":
        links = sorted(k for k in store.stored_keys() if "/_manifests/revisions/" in k)
        if links:
            store.remove(links[pick % len(links)])
    elif kind == "corrupt_manifest" and digests:
        store.put(paths.blob_data(digests[pick % len(digests)]), b'{"schemaVersion": 2}')
    elif kind == "same_size_corruption" and digests:
        key = paths.blob_data(digests[pick % len(digests)])
        if key not in store.objects:
            return
        data = bytearray(store.objects[key].data)
        data[-2] = ord("x") if data[-2] != ord("x") else ord("y")
        store.put(key, bytes(data))
    elif kind == "remove_manifest_blob" and digests:
        store.remove(paths.blob_data(digests[pick % len(digests)]))
    elif kind == "garbage_tag_link" and tag_keys:
        store.put(tag_keys[pick % len(tag_keys)], b"sha256:nothex")
    elif kind == "unreadable_manifest" and digests:
        store.failing.add(paths.blob_data(digests[pick % len(digests)]))


registries = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 3), st.booleans()), min_size=1, max_size=3
)
changes = st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 50)), max_size=6)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=registries, mutations=changes)
def test_warm_runs_decide_exactly_as_cold_runs(
    mode: str, layout: list[tuple[int, int, bool]], mutations: list[tuple[str, int]]
) -> None:
    registry = build(layout)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cache.sqlite"
        cache = ScanCache.open(path, registry.store.describe())
        first = run(registry.store.reopen(), cache, mode)
        assert first == run(registry.store.reopen(), None)  # a cache being filled changes nothing
        for kind, pick in mutations:
            if kind == "unreadable_manifest" and mode != "head":
                continue  # a listing cannot see a GET refused: see the test below
            mutate(registry, kind, pick)
        cold = run(registry.store.reopen(), None)
        cache.close()
        cache = ScanCache.open(path, registry.store.describe())  # the next run opens it
        warm = run(registry.store.reopen(), cache, mode)
        assert warm == cold
        cache.close()
        cache = ScanCache.open(path, registry.store.describe())
        assert run(registry.store.reopen(), cache, mode) == cold  # warm after warm, too
        cache.close()


def test_a_warm_run_of_an_unchanged_registry_reads_no_manifest_and_no_link(
    tmp_path: Path,
) -> None:
    registry = build([(4, 2, True), (3, 3, False), (2, 0, True)])
    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    cold_store = registry.store.reopen()
    run(cold_store, cache)
    warm_store = registry.store.reopen()
    assert run(warm_store, cache) == run(registry.store.reopen(), None)
    assert cold_store.stats.get > 0
    assert warm_store.stats.get == 0
    assert warm_store.stats.list == cold_store.stats.list
    manifests = sum(1 for k in registry.store.stored_keys() if "/_manifests/revisions/" in k)
    assert 0 < warm_store.stats.head <= 3 * manifests  # one HEAD a manifest blob a read


def test_a_warm_run_that_lists_the_blobs_makes_no_head_and_no_get(tmp_path: Path) -> None:
    registry = build([(4, 2, True), (3, 3, False), (2, 0, True)])
    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    cold_store = registry.store.reopen()
    run(cold_store, cache, "flat")
    warm_store = registry.store.reopen()
    assert run(warm_store, cache, "flat") == run(registry.store.reopen(), None)
    assert (warm_store.stats.get, warm_store.stats.head) == (0, 0)
    assert warm_store.stats.list == cold_store.stats.list  # the cold run listed them too
    assert cache.noted("blob_keys") == str(
        sum(1 for k in registry.store.stored_keys() if "/blobs/" in k)
    )


@pytest.mark.parametrize("mode", MODES)
def test_an_object_that_lists_unchanged_but_refuses_a_get(tmp_path: Path, mode: str) -> None:
    """The one difference a cache makes, by design: bytes verified before are not read
    again, so a GET that S3 would refuse now for an object it still lists unchanged
    (a permission or key revoked for GET alone) is not seen. With HEADs, a refused
    HEAD reads everything as without a cache; a listing cannot see it."""
    registry = build([(2, 1, False)])
    path = tmp_path / "c.sqlite"
    run(registry.store.reopen(), ScanCache.open(path, registry.store.describe()), mode)
    registry.store.failing.add(paths.blob_data(sorted(registry.manifests)[0]))
    cold = run(registry.store.reopen(), None)
    warm = run(registry.store.reopen(), ScanCache.open(path, registry.store.describe()), mode)
    assert (warm == cold) is (mode == "head")
    assert any("cannot read manifest blob" in str(m) for m in cold.manifests["app"].values())


def test_a_tag_moved_in_the_second_it_was_read_is_read_again_on_a_store_without_etags(
    tmp_path: Path,
) -> None:
    """An object store that gives no ETag dates objects to the second: a tag link
    rewritten in the second a run read it keeps its time and its 71 bytes. What such a
    store shows is never cached, so the next run reads the tag again (a warm window
    had removed the manifest the tag had just moved to)."""
    registry = build([(2, 1, False)], etags=False)
    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    before = run(registry.store.reopen(), cache)
    first, second = registry.manifests_of("app")
    tagged = first if before.snapshots["app"][1].tags["v0"] == first else second
    registry.tag("app", "v0", second if tagged == first else first)  # the same second
    cold = run(registry.store.reopen(), None)
    assert cold != before
    assert run(registry.store.reopen(), cache) == cold


def test_a_file_read_in_the_tick_it_was_written_is_not_cached_on_a_disk(tmp_path: Path) -> None:
    """A disk stamps a file with the kernel's clock tick: a rewrite of the same size in
    the tick of a read keeps mtime and size (here set back by hand, as that tick would
    leave them). Bytes read within RACY_S of their modification are not cached."""
    root = tmp_path / "disk"
    key = paths.tag_current_link("app", "v1")
    path = root / key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"sha256:" + b"a" * 64)
    stamp = path.stat().st_mtime_ns
    cache = ScanCache.open(tmp_path / "c.sqlite", "disk")

    async def read() -> bytes:
        store = FilesystemStore(root)
        listed = await store.stat_many([key])
        found = (await CachedReads(store, cache).links([key], listed))[0]
        assert isinstance(found, Blob)
        return found.data

    assert asyncio.run(read()) == b"sha256:" + b"a" * 64
    path.write_bytes(b"sha256:" + b"b" * 64)
    os.utime(path, ns=(stamp, stamp))
    assert asyncio.run(read()) == b"sha256:" + b"b" * 64
    old = stamp - 10**10  # ten seconds before: cached, and taken from the cache
    os.utime(path, ns=(old, old))
    assert asyncio.run(read()) == b"sha256:" + b"b" * 64
    path.write_bytes(b"sha256:" + b"c" * 64)
    os.utime(path, ns=(old, old))
    assert asyncio.run(read()) == b"sha256:" + b"b" * 64  # the cache, as designed


def test_a_manifest_blob_outside_its_fanout_folder_validates_nothing(tmp_path: Path) -> None:
    """The registry reads a blob at blobs/sha256/<first two hex digits>/<hex>/data
    only: a copy anywhere else is no evidence that the cached manifest is there."""
    registry = build([(2, 1, False)])
    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    run(registry.store.reopen(), cache, "flat")
    victim = sorted(registry.manifests)[0]
    key = paths.blob_data(victim)
    hex_part = victim.removeprefix("sha256:")
    moved = key.replace(f"/{hex_part[:2]}/", f"/{hex_part[0]}/")  # a folder of one digit
    registry.clock.now += 1
    registry.store.put(moved, registry.store.objects[key].data)
    registry.store.remove(key)
    cold = run(registry.store.reopen(), None)
    assert any(not isinstance(m, ManifestRefs) for m in cold.manifests["app"].values())
    assert run(registry.store.reopen(), cache, "flat") == cold


def test_a_flat_listing_longer_than_the_heads_it_saves_stops_and_heads_are_made(
    tmp_path: Path,
) -> None:
    """Until a listing has counted the blobs, their number is guessed from the cache (5
    a manifest): low when the cache holds a few repositories of a large registry. The
    flat listing stops once it has cost the HEADs it would save, and notes how far it
    got; the HEADs are made, and the next run weighs the listing by that count."""
    registry = build([(4, 2, False)])  # 4 manifests: the guess is one page of blobs
    for n in range(2500):  # the rest of a large registry: blobs no cached manifest names
        registry.blob(f"someone else's layer {n}".encode())
    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    cold = run(registry.store.reopen(), cache, "head")
    assert cache.manifest_count() == 4
    warm_store = registry.store.reopen()
    assert run(warm_store, cache, "weighed") == cold
    assert warm_store.stats.head >= 4  # the HEADs were made
    assert cache.noted("blob_keys") == "1001"  # one page of 1,000 and more: it stopped
    again = registry.store.reopen()
    assert run(again, cache, "weighed") == cold
    assert again.stats.list < warm_store.stats.list  # no listing tried this time
    assert again.stats.head == warm_store.stats.head


def test_a_listing_per_folder_longer_than_the_heads_it_saves_stops_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bound across the walks of the 256 fan-out folders, several at once: the
    folders walked to their end are recorded for gc, the one cut short is not."""
    monkeypatch.setattr(CachedReads, "blob_listing_pays_from", 0.01)  # lists from a few
    registry = build([(4, 2, False)])
    for n in range(1200):  # the rest of a large registry, over every fan-out folder
        registry.blob(f"someone else's layer {n}".encode())

    def store() -> MemoryStore:
        found = registry.store.reopen()
        found.page_size, found.listing_concurrency = 2, 64  # the per-folder listing pays
        return found

    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    cold_store = store()
    cold = run(cold_store, cache, "head")
    warm_store = store()
    assert run(warm_store, cache, "weighed") == cold
    budget = int(4 / 0.01)  # pages: 4 cached manifests at 0.01 a page
    listing = warm_store.stats.list - cold_store.stats.list
    assert budget <= listing <= budget + 64 + 1  # stopped (a page in flight a walk)
    assert warm_store.stats.head >= 4  # the HEADs were made
    assert int(cache.noted("blob_keys") or 0) > budget * 2
    again = store()
    assert run(again, cache, "weighed") == cold
    assert again.stats.list == cold_store.stats.list  # no listing this time


def test_a_changed_manifest_blob_is_read_and_refused_again(tmp_path: Path) -> None:
    registry = build([(2, 1, False)])
    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    run(registry.store.reopen(), cache)
    victim = sorted(registry.manifests)[0]
    registry.clock.now += 1
    registry.store.put(paths.blob_data(victim), b"{}")
    warm = run(registry.store.reopen(), cache)
    problems = [
        info for info in warm.manifests["app"].values() if not isinstance(info, ManifestRefs)
    ]
    assert len(problems) == 1
    assert "does not match its digest" in str(problems[0])
    assert warm.plans["app"][1] == ()  # blocked: nothing deleted
    assert run(registry.store.reopen(), cache) == warm  # and again: the refusal is not cached


def test_a_run_stopped_half_way_leaves_a_warm_cache(tmp_path: Path) -> None:
    registry = build([(4, 1, True), (4, 1, True), (4, 1, True)])
    path = tmp_path / "c.sqlite"
    store = registry.store.reopen()

    async def first_repository_only() -> None:
        view = RegistryView(store, ScanCache.open(path, store.describe()))
        snapshot = await view.snapshot("app", history=True)
        await view.read_manifests(needed_manifests(snapshot))
        # stopped here: no close, no final commit

    asyncio.run(first_repository_only())
    read_before = store.stats.get
    again = registry.store.reopen()
    cache = ScanCache.open(path, again.describe())
    asyncio.run(RegistryView(again, cache).read_manifests(registry.manifests_of("app")))
    assert read_before > 0
    assert again.stats.get == 0
    assert cache.hits == len(registry.manifests_of("app"))


def test_a_cache_of_another_storage_is_left_as_it_is(tmp_path: Path) -> None:
    """A typo in the bucket, or a second storage given the same file, must not cost
    the first storage its warm cache (the runner goes on without one, and says so)."""
    registry = build([(2, 1, False)])
    path = tmp_path / "c.sqlite"
    cache = ScanCache.open(path, "s3://one/root")
    run(registry.store.reopen(), cache)
    cache.close()
    before = path.read_bytes()
    with pytest.raises(NotThisCache, match="it is the scan cache of s3://one/root"):
        ScanCache.open(path, "s3://other/root")
    assert path.read_bytes() == before
    assert ScanCache.open(path, "s3://one/root").manifests(sorted(registry.manifests))


def test_a_cache_of_another_version_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite"
    registry = build([(2, 1, False)])
    run(registry.store.reopen(), ScanCache.open(path, "memory"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '0.0.1' WHERE key = 'version'")
    db.close()
    with caplog.at_level(logging.WARNING, "regcleaner.scancache"):
        cache = ScanCache.open(path, "memory")
    assert "written by regcleaner 0.0.1" in caplog.text
    assert cache.manifests(sorted(registry.manifests)) == {}


def test_a_cache_written_by_another_manifest_reader_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same version, same schema, but the code that parses manifests or decides what
    is cached changed (an upgrade that forgot to bump SCHEMA): start afresh."""
    path = tmp_path / "c.sqlite"
    registry = build([(2, 1, False)])
    run(registry.store.reopen(), ScanCache.open(path, "memory"))
    monkeypatch.setattr(scancache, "READER", "0123456789abcdef")
    with caplog.at_level(logging.WARNING, "regcleaner.scancache"):
        cache = ScanCache.open(path, "memory")
    assert "reads manifests differently (reader " in caplog.text
    assert cache.manifests(sorted(registry.manifests)) == {}


def test_the_reader_fingerprint_follows_the_manifest_parser_s_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = scancache._reader_fingerprint()
    assert original == scancache.READER
    real = Path.read_bytes

    def edited(self: Path) -> bytes:
        data = real(self)
        return data + b"# edited" if self.name == "gomanifest.py" else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert scancache._reader_fingerprint() != original


def test_an_empty_file_becomes_a_cache(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"")
    registry = build([(2, 1, True)])
    cache = ScanCache.open(path, registry.store.describe())
    assert run(registry.store.reopen(), cache) == run(registry.store.reopen(), None)
    assert cache.manifest_count() > 0


def _another_sqlite_file(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:  # a pull record, say
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        db.execute("CREATE TABLE pulls (digest TEXT, at REAL)")
        db.commit()


def _another_meta_table(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE meta (name TEXT, schema_version INTEGER)")
        db.commit()


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.write_bytes(b"rules:\n  - keep_last: 5\n" * 100), "SQLite cannot read it"),
        (_another_sqlite_file, "it is not a regcleaner scan cache"),
        (_another_meta_table, "it is not a regcleaner scan cache"),
    ],
    ids=["not-sqlite", "another-sqlite-file", "another-meta-table"],
)
def test_a_file_that_is_not_a_scan_cache_is_left_as_it_is(
    tmp_path: Path, make: Callable[[Path], object], said: str
) -> None:
    """``--cache policy.yaml`` or the pull record by mistake: refused as a cache,
    and not a byte of it changed (it had been replaced by an empty cache)."""
    path = tmp_path / "mistake"
    make(path)
    before = path.read_bytes()
    with pytest.raises(NotThisCache, match=said):
        ScanCache.open(path, "memory")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mistake"]


def test_a_cached_entry_that_cannot_be_decoded_is_read_again(tmp_path: Path) -> None:
    registry = build([(2, 1, False)])
    path = tmp_path / "c.sqlite"
    cache = ScanCache.open(path, registry.store.describe())
    run(registry.store.reopen(), cache)
    cache._db.execute("UPDATE manifests SET refs = '[\"nonsense\"]'")
    store = registry.store.reopen()
    assert run(store, cache) == run(registry.store.reopen(), None)
    assert store.stats.get > 0


def test_a_foreign_wal_file_left_by_a_crashed_writer_is_not_checkpointed(
    tmp_path: Path,
) -> None:
    """Another program's SQLite file in WAL mode, its last changes still in -wal (the
    writer died): looking at it must not fold them into the file or delete the -wal
    (a read-write probe did both on closing)."""
    import shutil

    live = tmp_path / "live"
    live.mkdir()
    writer = sqlite3.connect(live / "other.db")
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE pulls (digest TEXT)")
    writer.execute("INSERT INTO pulls VALUES ('sha256:x')")
    writer.commit()
    for name in ("other.db", "other.db-wal", "other.db-shm"):  # as the crash left them
        shutil.copy(live / name, tmp_path / name)
    writer.close()
    path = tmp_path / "other.db"
    before = {name: (tmp_path / name).read_bytes() for name in ("other.db", "other.db-wal")}
    assert before["other.db-wal"]  # the changes are in the -wal
    with pytest.raises(NotThisCache, match="it is not a regcleaner scan cache"):
        ScanCache.open(path, "memory")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_cache_sqlite_cannot_open_now_is_an_os_error_not_a_foreign_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A good cache on a read-only volume, or locked: "unable to open" is not "this is
    not a scan cache" (that warning would tell the operator to remove a good cache)."""
    path = tmp_path / "c.sqlite"
    ScanCache.open(path, "memory").close()
    before = path.read_bytes()

    def refused(*_: object, **__: object) -> sqlite3.Connection:
        error = sqlite3.OperationalError("unable to open database file")
        error.sqlite_errorname = "SQLITE_CANTOPEN"
        raise error

    monkeypatch.setattr(sqlite3, "connect", refused)
    with pytest.raises(OSError, match="cannot read it: unable to open database file"):
        ScanCache.open(path, "memory")
    assert path.read_bytes() == before


def test_a_directory_in_place_of_the_file_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "c.sqlite").mkdir()
    with pytest.raises(OSError, match=r"c\.sqlite"):
        ScanCache.open(tmp_path / "c.sqlite", "memory")


def test_a_second_listing_on_one_connection_forgets_the_first(tmp_path: Path) -> None:
    registry = build([(3, 1, False)])
    cache = ScanCache.open(tmp_path / "c.sqlite", registry.store.describe())
    run(registry.store.reopen(), cache, "flat")
    run(registry.store.reopen(), cache, "flat")  # the listing notes every cached blob
    victim = sorted(registry.manifests)[0]
    registry.clock.now += 1
    registry.store.put(paths.blob_data(victim), b"{}")
    assert run(registry.store.reopen(), cache, "flat") == run(registry.store.reopen(), None)
