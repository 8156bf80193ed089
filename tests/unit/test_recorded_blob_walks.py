"""gc's sweep takes the listing of the blobs made earlier in the same run
(``regcleaner/blobwalks.py``): in a window (``clean --direct --gc``) the scan's
listing that validates the cache, in ``gc`` the mark's. Where nothing writes meanwhile
it must sweep what a listing of its own would sweep, and refuse on the same strays;
where something wrote anyway, never sweep a blob the record does not hold nor prune
the link of one the mark found; it lists each fan-out folder once instead of twice;
and any failure of the record falls back to gc's own listing."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner.blobfolders import in_folder, replayed_blobs
from regcleaner.blobwalks import MAX_ODD, RecordedWalks
from regcleaner.cachedreads import CachedReads
from regcleaner.collector import Collector
from regcleaner.storage.base import FileInfo
from testkit.memory import MemoryStore, registered
from testkit.registry_writer import RegistryWriter
from tests.conftest import run_cli

V2 = "docker/registry/v2"


def build(store: MemoryStore) -> None:
    """Tagged images that stay, untagged history with blobs of its own that goes."""
    writer = RegistryWriter(store)
    for n in range(12):
        image = writer.image("app", f"config-{n}".encode(), [f"layer-{n}".encode()], oci=True)
        writer.tag("app", f"v{n}", image.descriptor.digest)
    for n in range(12):
        writer.image("app", f"old-config-{n}".encode(), [f"old-layer-{n}".encode()], oci=True)


@pytest.fixture
def memory() -> Iterator[MemoryStore]:
    store = MemoryStore()
    build(store)
    with registered(store):
        yield store


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each folder below blobs/sha256 was walked (all runs)."""
    counted: Counter[str] = Counter()
    walk = MemoryStore.walk

    async def counting(self: MemoryStore, prefix: str) -> AsyncGenerator[list[FileInfo], None]:
        if prefix.startswith(f"{V2}/blobs/sha256"):
            counted[prefix] += 1
        async for page in walk(self, prefix):
            yield page

    monkeypatch.setattr(MemoryStore, "walk", counting)
    monkeypatch.setattr(CachedReads, "blob_listing_pays_from", 0.05)  # list from a few
    return counted


def replay(walks: RecordedWalks, folder: str) -> list[FileInfo] | None:
    """The record's walk of ``folder`` as the files the walk listed (no ETag), or None."""
    found = walks.replay_records(folder)
    if found is None:
        return None
    plain, odd = found
    return [FileInfo(digest.hex() + "/data", mtime, size) for digest, size, mtime in plain] + odd


def window(tmp_path: Path, *extra: str, name: str = "window") -> dict[str, object]:
    answer = run_cli(
        ["clean", "--storage", "memory", "--direct", "--gc", "--registry-stopped",
         "--min-age", "0", "--min-blob-age", "0", "--cache", str(tmp_path / "cache.sqlite"),
         "--progress-interval", "0", *extra],
        report_path=tmp_path / f"{name}.json",
    )  # fmt: skip
    assert answer.report is not None, answer.output
    return answer.report


def swept(report: dict[str, object]) -> set[str]:
    gc = report["gc"]
    assert isinstance(gc, dict)
    return {entry["digest"] for entry in gc["swept"]}


def without_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CachedReads, "record_blob_walks", lambda self: None)


@pytest.mark.parametrize("page_size", [1000, 3, 1], ids=["one-page", "flat", "per-folder"])
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_a_window_lists_each_blob_folder_once_and_sweeps_what_two_listings_sweep(
    memory: MemoryStore, walks: Counter[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, page_size: int, warm: bool,
) -> None:  # fmt: skip
    """The same window twice on the same registry: with gc taking the listing the run
    made (the scan's when warm, the mark's when cold), and with gc listing on its own.
    The same blobs are swept; the folders are walked once, not twice. The validating
    listing is flat with pages of 3 keys, folder by folder with pages of 1; with pages
    of 1,000 gc lists every blob in one page of its own, and takes nothing recorded."""
    monkeypatch.setattr(MemoryStore, "page_size", page_size)
    twin = MemoryStore()
    build(twin)
    twin.objects, twin._sorted = dict(memory.objects), list(memory._sorted)
    if warm:
        window(tmp_path, "--dry-run", name="warm-up")
    walks.clear()
    report = window(tmp_path)
    recorded_walks = dict(walks)
    gone = swept(report)
    assert len(gone) == 36  # each history image: its manifest, config and layer

    # The same, gc listing for itself.
    memory.objects, memory._sorted = twin.objects, twin._sorted
    (tmp_path / "cache.sqlite").unlink()
    without_record(monkeypatch)
    if warm:
        window(tmp_path, "--dry-run", name="warm-up-again")
    walks.clear()
    again = window(tmp_path, name="again")
    assert swept(again) == gone
    fan_out = {prefix for prefix in walks if prefix.count("/") == 5}  # blobs/sha256/<hh>
    if page_size == 1000:
        assert recorded_walks == dict(walks)  # one page: nothing to save
        return
    assert fan_out, "gc walked no fan-out folder"
    # Without the record each fan-out folder is walked by gc (and, per folder, by the
    # validating listing too); with it, gc walks none of them.
    extra = 1 if page_size == 1 else 0
    assert all(walks[prefix] == 1 + extra for prefix in fan_out), walks
    assert all(recorded_walks.get(prefix, 0) == extra for prefix in fan_out), recorded_walks


def test_gc_takes_its_mark_s_listing_of_the_blobs(
    memory: MemoryStore, walks: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gc`` with a warm cache: the mark lists the blobs to validate the cached
    manifests, and the sweep takes that listing."""
    monkeypatch.setattr(MemoryStore, "page_size", 1)
    for n in range(5):  # blobs nothing references, written long ago
        hex_part = f"{n:02x}" * 32
        memory.put(f"{V2}/blobs/sha256/{hex_part[:2]}/{hex_part}/data", b"orphan", mtime=1.0)
    cache = str(tmp_path / "cache.sqlite")
    arguments = ["gc", "--storage", "memory", "--dry-run", "--cache", cache,
                 "--progress-interval", "0"]  # fmt: skip
    first = run_cli(arguments, report_path=tmp_path / "first.json")
    assert first.report is not None, first.output
    walks.clear()
    second = run_cli(arguments, report_path=tmp_path / "second.json")
    assert second.report is not None, second.output
    would = {e["digest"] for e in first.report["would_sweep"]}
    assert len(would) == 5
    assert {e["digest"] for e in second.report["would_sweep"]} == would
    # The first gc (empty cache) read the manifests and listed the blobs for its sweep;
    # the second validated the cache by a listing per fan-out folder (pages of 1) and
    # its sweep took that listing: each folder walked once.
    fan_out = [prefix for prefix in walks if prefix.count("/") == 5]
    assert fan_out
    assert all(walks[prefix] == 1 for prefix in fan_out), walks


def test_a_stray_in_a_recorded_folder_stops_the_sweep(
    memory: MemoryStore, walks: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file named ``data`` that is not a blob's, in a fan-out folder the scan listed:
    gc takes that folder from the record, finds the stray there and sweeps nothing."""
    monkeypatch.setattr(MemoryStore, "page_size", 1)  # folder by folder, as a large one
    digest = next(k for k in memory.objects if k.startswith(f"{V2}/blobs/sha256/"))
    folder = digest.rsplit("/", 2)[0]
    memory.put(f"{folder}/not-a-digest/data", b"stray")
    window(tmp_path, "--dry-run", name="warm-up")
    walks.clear()
    before = set(memory.objects)
    report = window(tmp_path)
    gc = report["gc"]
    assert isinstance(gc, dict)
    assert any("not-a-digest" in problem for problem in gc["problems"]), gc["problems"]
    assert walks[folder] == 1  # the scan's walk: gc took the folder from the record
    assert gc["summary"]["blobs_swept"] == 0
    assert {k for k in before if "/blobs/" in k} <= set(memory.objects)


def test_a_blob_written_after_the_listing_is_not_swept(
    memory: MemoryStore, walks: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob that appears after the scan listed the blobs (the gate says nothing
    writes; this one came anyway) is not in the record, so not swept, even unmarked and
    with ``--min-blob-age 0``. (A listing of gc's own would have swept it.) Pages of
    one key: the registry is listed folder by folder, as a large one is."""
    monkeypatch.setattr(MemoryStore, "page_size", 1)
    window(tmp_path, "--dry-run", name="warm-up")
    existing = next(k for k in memory.objects if k.startswith(f"{V2}/blobs/sha256/"))
    hh = existing.split("/")[-3]
    late = hh + "f" * 62
    sweep = Collector._list_blobs

    async def after_a_push(self: Collector) -> None:
        memory.put(f"{V2}/blobs/sha256/{hh}/{late}/data", b"pushed during the run")
        await sweep(self)

    monkeypatch.setattr(Collector, "_list_blobs", after_a_push)
    report = window(tmp_path)
    assert "sha256:" + late not in swept(report)
    assert f"{V2}/blobs/sha256/{hh}/{late}/data" in memory.objects
    assert len(swept(report)) == 36


# -- the record itself ------------------------------------------------------------------

hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
odd_keys = st.one_of(
    st.text(min_size=1, max_size=20).filter(lambda k: "\x00" not in k),
    hexes.map(lambda h: h.upper() + "/data"),
    hexes.map(lambda h: h + "/data/extra"),
    hexes.map(lambda h: h[:63] + "/data"),
)
files = st.lists(
    st.tuples(st.one_of(hexes.map(lambda h: h + "/data"), odd_keys),
              st.integers(0, 2**62), st.integers(0, 2**33).map(float), st.booleans()),
    max_size=40,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(pages=st.lists(files, max_size=4))
def test_a_replay_gives_back_what_was_walked(
    pages: list[list[tuple[str, int, float, bool]]],
) -> None:
    walks = RecordedWalks()
    walked: list[FileInfo] = []
    for page in pages:
        infos = [
            FileInfo(key, mtime, size, regular, '"etag"') for key, size, mtime, regular in page
        ]
        walks.add("sha256/ab", infos)
        walked += infos
    assert replay(walks, "sha256/ab") is None  # not walked to its end yet
    walks.complete("sha256/ab")
    replayed = replay(walks, "sha256/ab")
    assert replayed is not None
    assert sorted(replayed) == sorted(f._replace(etag=None) for f in walked)
    assert replay(walks, "sha256/cd") is None
    walks.close()
    assert replay(walks, "sha256/ab") is None


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.sampled_from(["ab", "00", "a"]),
    keys=st.lists(st.one_of(hexes.map(lambda h: h + "/data"),
                            hexes.map(lambda h: "ab" + h[2:] + "/data"), odd_keys),
                  max_size=30),
)  # fmt: skip
def test_blobs_from_a_record_are_those_a_walk_gives(prefix: str, keys: list[str]) -> None:
    """``replayed_blobs`` (plain records straight to blobs) against ``in_folder`` of
    the replayed walk: the same blobs and strays, in the same order."""
    walks = RecordedWalks()
    folder = f"sha256/{prefix}"
    walks.add(folder, [FileInfo(key, float(n), n) for n, key in enumerate(keys)])
    walks.complete(folder)
    replayed = replay(walks, folder)
    assert replayed is not None
    assert replayed_blobs(walks, "sha256", prefix) == in_folder("sha256", prefix, replayed)
    walks.close()


def test_a_flat_walk_is_recorded_by_fan_out_folder() -> None:
    walks = RecordedWalks()
    a, b = "ab" + "0" * 62, "cd" + "1" * 62
    walks.add_flat("sha256", [FileInfo(f"ab/{a}/data", 5.0, 7), FileInfo("stray", 1.0, 1),
                              FileInfo(f"cd/{b}/data", 6.0, 8)])  # fmt: skip
    assert replay(walks, "sha256/ab") is None
    walks.complete_flat("sha256")
    assert replay(walks, "sha256/ab") == [FileInfo(f"{a}/data", 5.0, 7)]
    assert replay(walks, "sha256/cd") == [FileInfo(f"{b}/data", 6.0, 8)]
    assert replay(walks, "sha256/ef") is None  # not seen: gc lists it
    walks.close()


def test_too_many_odd_keys_give_the_record_up() -> None:
    walks = RecordedWalks()
    walks.add("sha256/ab", [FileInfo(f"odd-{n}", 1.0, 1) for n in range(MAX_ODD + 1)])
    walks.complete("sha256/ab")
    assert walks.broken
    assert replay(walks, "sha256/ab") is None


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's temporary file is /dev/full: every write fails (ENOSPC)."""
    import tempfile

    real = tempfile.TemporaryFile

    def temporary(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("prefix") == "regcleaner-blobs-":
            return open("/dev/full", "w+b", buffering=kwargs.get("buffering", -1))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary)


def test_a_full_disk_gives_the_record_up(monkeypatch: pytest.MonkeyPatch) -> None:
    full_disk(monkeypatch)
    walks = RecordedWalks()
    walks.add("sha256/ab", [FileInfo("ab" + "0" * 62 + "/data", 1.0, 1)])  # does not raise
    walks.add("sha256/ab", [FileInfo("ab" + "1" * 62 + "/data", 1.0, 1)])
    walks.complete("sha256/ab")
    assert walks.broken
    assert replay(walks, "sha256/ab") is None
    walks.close()


def test_a_size_that_cannot_be_recorded_gives_the_record_up() -> None:
    walks = RecordedWalks()
    walks.add("sha256/ab", [FileInfo("ab" + "0" * 62 + "/data", 1.0, 2**63)])  # does not raise
    walks.complete("sha256/ab")
    assert walks.broken
    assert replay(walks, "sha256/ab") is None


def test_a_folder_walked_again_is_recorded_afresh() -> None:
    walks = RecordedWalks()
    first, second = "ab" + "0" * 62, "ab" + "1" * 62
    walks.begin("sha256/ab")
    walks.add("sha256/ab", [FileInfo(f"{first}/data", 1.0, 1), FileInfo("odd", 1.0, 1)])
    walks.complete("sha256/ab")
    walks.begin("sha256/ab")  # walked again: the first walk is forgotten
    walks.add("sha256/ab", [FileInfo(f"{second}/data", 2.0, 2)])
    assert replay(walks, "sha256/ab") is None  # not finished yet
    walks.complete("sha256/ab")
    assert replay(walks, "sha256/ab") == [FileInfo(f"{second}/data", 2.0, 2)]
    walks.begin_flat("sha256")
    assert replay(walks, "sha256/ab") is None
    walks.close()


def test_a_window_with_a_full_disk_sweeps_by_its_own_listing(
    memory: MemoryStore, walks: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryStore, "page_size", 1)
    window(tmp_path, "--dry-run", name="warm-up")
    full_disk(monkeypatch)
    answer = run_cli(
        ["clean", "--storage", "memory", "--direct", "--gc", "--registry-stopped",
         "--min-age", "0", "--min-blob-age", "0", "--cache", str(tmp_path / "cache.sqlite"),
         "--progress-interval", "0"],
        report_path=tmp_path / "full.json",
    )  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert answer.report is not None
    assert len(swept(answer.report)) == 36
    assert "gc lists the blobs itself" in answer.output


def test_a_layer_the_mark_finds_keeps_its_link_though_the_record_misses_its_blob(
    memory: MemoryStore, walks: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image pushed after the scan listed the blobs (the gate says nothing writes;
    this one came anyway), before gc's mark: the mark finds it, the record does not
    hold its layer. With --prune-layer-links the layer's link stays (a link is pruned
    only when its blob is neither listed nor marked), and the layer is not swept."""
    import hashlib

    from testkit.registry_writer import layer_link_key

    monkeypatch.setattr(MemoryStore, "page_size", 1)
    window(tmp_path, "--dry-run", name="warm-up")
    folders = {k.split("/")[-3] for k in memory.objects if k.startswith(f"{V2}/blobs/sha256/")}
    data = next(d for n in range(10_000) for d in [f"late layer {n}".encode()]
                if hashlib.sha256(d).hexdigest()[:2] in folders)  # fmt: skip
    hex_part = hashlib.sha256(data).hexdigest()
    mark = Collector._mark

    async def push_then_mark(self: Collector) -> None:
        writer = RegistryWriter(memory)
        image = writer.image("app", b"late-config", [data], oci=True)
        writer.tag("app", "late", image.descriptor.digest)
        await mark(self)

    monkeypatch.setattr(Collector, "_mark", push_then_mark)
    window(tmp_path, "--prune-layer-links", "--registry-version", "2.8.2")
    assert f"{V2}/blobs/sha256/{hex_part[:2]}/{hex_part}/data" in memory.objects
    assert layer_link_key("app", "sha256:" + hex_part) in memory.objects


def test_recorded_folders_in_random_order_replay_their_own_keys() -> None:
    rng = random.Random(5)
    walks = RecordedWalks()
    expected: dict[str, list[FileInfo]] = {}
    for _ in range(300):  # pages of 16 folders interleaved, as 16 listers write them
        hh = f"{rng.randrange(16):02x}"
        page = [FileInfo(hh + f"{rng.getrandbits(248):062x}" + "/data", float(rng.randrange(9)),
                         rng.randrange(99)) for _ in range(rng.randrange(1, 5))]  # fmt: skip
        walks.add(f"sha256/{hh}", page)
        expected.setdefault(hh, []).extend(page)
    for hh, page in expected.items():
        walks.complete(f"sha256/{hh}")
        assert replay(walks, f"sha256/{hh}") == page
    assert walks.replayed == len(expected)
    walks.close()


@pytest.mark.parametrize("how", ["flat", "per folder"])
def test_a_window_whose_listing_stopped_at_its_budget_sweeps_what_a_cold_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A cache warmed for one repository of a larger registry: the scan's listing of
    the blobs stops at its page budget (the HEADs are made), gc lists again or replays
    only the folders walked to their end, and the window leaves exactly what a window
    without a cache leaves."""
    # Flat: 24 cached manifests pay for 24 pages of 10 keys, the blobs take about 100.
    # Per folder: they pay for 300 (chosen from 0.0895), the blobs take about 640.
    monkeypatch.setattr(CachedReads, "blob_listing_pays_from", 1.0 if how == "flat" else 0.08)
    monkeypatch.setattr(MemoryStore, "page_size", 10)  # each run reopens the store
    if how != "flat":
        monkeypatch.setattr(MemoryStore, "listing_concurrency", 64)
    stores = []
    for _ in range(2):
        store = MemoryStore()
        build(store)
        writer = RegistryWriter(store)
        for n in range(12):  # another repository, not in the warmed cache
            writer.image("other", f"other-config-{n}".encode(), [f"other-{n}".encode()],
                         oci=True)  # fmt: skip
        for n in range(900 if how == "flat" else 5000):  # blobs nothing references: swept
            writer.blob(f"orphan-{n}".encode())
        stores.append(store)
    cold_store, warm_store = stores
    for name in ("cold", "warm"):
        (tmp_path / name).mkdir()
    with registered(cold_store):  # the reference: no cache, so gc lists for itself
        plain = run_cli(["clean", "--storage", "memory", "--direct", "--gc",
                         "--registry-stopped", "--min-age", "0", "--min-blob-age", "0",
                         "--progress-interval", "0"],
                        report_path=tmp_path / "cold" / "cold.json")  # fmt: skip
        assert plain.report is not None, plain.output
        cold = plain.report
        assert cold["summary"]["scan_cache"] is None
    with registered(warm_store):
        dry = run_cli(["clean", "--storage", "memory", "--dry-run", "--min-age", "0",
                       "--include", "app", "--cache", str(tmp_path / "warm" / "cache.sqlite"),
                       "--progress-interval", "0"])  # fmt: skip
        assert dry.exit_code == 0, dry.output
        warm = window(tmp_path / "warm", name="warm")
    assert warm_store.stored_keys() == cold_store.stored_keys()
    assert swept(warm) == swept(cold)
    # The orphans, and manifest, config and layer of the 24 untagged images.
    assert len(swept(cold)) == (900 if how == "flat" else 5000) + 3 * 24
    assert warm["summary"]["scan_cache"]["used"] > 0  # type: ignore[index]
    assert warm["summary"]["storage_requests"]["head"] > 0  # type: ignore[index]  # stopped
