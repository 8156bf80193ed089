"""The scale model (bench/scale.py): what the issue asks it to print, that it is driven
by the measured run, and that the in-memory run's registry has TARGET's shape."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from bench.generate import generate
from bench.scale import (
    ASSUMPTIONS,
    MEASURED_CPU,
    MEASURED_RUN,
    SHAPES,
    TARGET,
    as_s3_is_reached,
    blob_listing,
    model,
    moto_check,
)
from regcleaner import layout
from regcleaner.cachedreads import CachedReads
from regcleaner.engine import Engine
from regcleaner.removers import direct
from testkit.memory import MemoryStore, registered
from testkit.registry_writer import RegistryWriter
from tests.conftest import run_cli

HERE = Path(__file__).resolve().parents[2]


def test_python_m_bench_scale_prints_the_figures_the_issue_names() -> None:
    answer = subprocess.run([sys.executable, "-m", "bench.scale"], cwd=HERE, check=True,
                            capture_output=True, text=True)  # fmt: skip
    printed = json.loads(answer.stdout)
    for name in ("window_cold_s", "window_warm_s", "registry_gc_s", "requests_per_manifest_warm"):
        assert isinstance(printed[name], float)
        assert printed[name] > 0
    assert printed["registry_gc_s"] > 10 * printed["window_cold_s"]


def test_the_window_is_its_phases_and_follows_the_measured_engine() -> None:
    figures = model()
    phases = figures["phases"]
    for window, parts in (
        ("window_warm_s", ("validating_warm", "planning_and_delete_warm", "gc_warm", "reports")),
        ("window_cold_s", ("scan_and_delete_cold", "gc_cold", "reports")),
    ):
        assert abs(figures[window] - sum(phases[p]["seconds"] for p in parts)) < 0.2  # fmt: skip
    # The deletions run beside the planning: the window is shorter than its phases one
    # after the other, the planning with the deletions beside it shorter than the two
    # in turn; never shorter than S3's time for the window's writes (199 s at one prefix).
    one_after_another = sum(phases[p]["seconds"] for p in ("scan_warm", "delete", "gc_warm"))
    assert figures["window_warm_s"] < one_after_another
    together = phases["planning_and_delete_warm"]["seconds"]
    assert together < phases["planning_warm"]["seconds"] + phases["delete"]["seconds"] - 10
    assert figures["window_warm_s"] >= figures["writes_s"]
    writes = model()["requests"]["delete"]["deleted_keys"] + 500_000  # and gc's sweep
    assert figures["writes_s"] == pytest.approx(
        writes / ASSUMPTIONS["s3_write_per_s_per_prefix"], abs=0.1
    )
    # The dry run lists the blobs, then plans: no shorter than the two at once.
    assert figures["dry_run_warm_s"] >= phases["scan_warm"]["seconds"] - 0.1
    free = figures["without_s3_rate_bound"]
    assert free["window_warm_s"] < figures["window_warm_s"]
    assert free["window_cold_s"] < figures["window_cold_s"]
    slower = copy.deepcopy(MEASURED_RUN)
    slower["warm"]["engine_cpu_s"] *= 2
    assert model(slower)["window_warm_s"] > figures["window_warm_s"]
    more_deletes = copy.deepcopy(MEASURED_RUN)
    more_deletes["window"]["keys_deleted"] *= 10
    assert (model(more_deletes)["requests"]["delete"]["delete"]
            > figures["requests"]["delete"]["delete"])  # fmt: skip


def test_the_model_takes_the_client_cpu_over_tls_with_a_registrys_keys() -> None:
    """MEASURED_CPU was measured over plain HTTP with short keys; S3 is reached over
    TLS with keys of 100 characters and more, which cost more (MEASURED_TLS_FACTORS):
    the model takes the latter, the check against the plain-HTTP moto run the former."""
    figures = model()
    cpu = figures["inputs"]["client_cpu_ms"]
    assert cpu == as_s3_is_reached(MEASURED_CPU)
    assert all(cpu[kind] >= MEASURED_CPU[kind] for kind in MEASURED_CPU)
    assert model(cpu=MEASURED_CPU)["window_cold_s"] < figures["window_cold_s"]


def test_direct_removal_is_modelled_without_a_read_a_deletion() -> None:
    """The window's deletions make no GET or HEAD (the gate proved nothing else writes:
    removers/direct.py has no last look by request); the model takes the measured
    window's requests, so a read there would show here."""
    delete = model()["requests"]["delete"]
    assert delete.get("get", 0) == 0
    assert delete.get("head", 0) == 0
    assert MEASURED_RUN["window"]["get"] == MEASURED_RUN["warm"]["get"]
    assert MEASURED_RUN["window"]["head"] == MEASURED_RUN["warm"]["head"]


def test_s3_s_write_rate_counts_each_key_a_deleteobjects_carries() -> None:
    """1,000 keys in one DeleteObjects are 1,000 writes against S3's 3,500 a second."""
    delete = model()["phases"]["delete"]
    keys = model()["requests"]["delete"]["deleted_keys"]
    assert keys > 100_000
    assert delete["rate_bound_s"] >= keys / ASSUMPTIONS["s3_write_per_s_per_prefix"] - 0.1
    assert delete["seconds"] >= delete["rate_bound_s"]


def test_a_run_whose_gc_listed_the_blobs_itself_is_not_taken_for_one_that_did_not() -> None:
    listed = copy.deepcopy(MEASURED_RUN)
    listed["window"]["gc_replayed_folders"] = 0
    with pytest.raises(ValueError, match="listed the blobs itself"):
        model(listed)


def test_a_blob_listing_is_flat_when_small_and_by_fan_out_folder_when_large() -> None:
    small = blob_listing(3_000, ASSUMPTIONS)
    assert small == {"list": 3.0, "keys": 3_000.0}
    large = blob_listing(5_000_000, ASSUMPTIONS)
    assert large["list"] == 1 + 256 * 20  # 19,532 keys a folder: 20 pages each
    assert large["keys"] == 5_000_000 + 256


def test_the_moto_check_predicts_the_moto_run_within_a_third() -> None:
    for name, figures in moto_check().items():
        if name == "command":
            continue
        measured, predicted = figures["measured_cpu_s"], figures["predicted_cpu_s"]
        assert abs(predicted - measured) <= measured / 3, (name, figures)


def test_the_target_shape_makes_target_s_registry() -> None:
    keys: dict[str, bytes] = {}
    made = generate(Path("/g"), 10, sink=keys.__setitem__, **SHAPES["target"])
    assert made.manifests * 1000 == TARGET["manifests"]
    assert made.tags * 1000 == TARGET["tags"]
    blobs = sum(1 for key in keys if "/blobs/" in key)
    assert abs(blobs * 1000 - TARGET["blobs"]) <= TARGET["blobs"] * 0.02
    assert not Path("/g").exists()  # nothing written to disk


def test_a_window_deletes_beside_the_planning_once_the_blobs_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the model takes from the engine: in a window the removers take each
    repository as it is planned, so the deletions run beside the planning (the first
    before the last repository is planned), and, warm, only after the listing of the
    blobs that validates the cache (every manifest read waits for it)."""
    store = MemoryStore(name="overlap")
    writer = RegistryWriter(store)
    for r in range(40):
        for n in range(3):
            image = writer.image(
                f"app{r}", f"c-{r}-{n}".encode(), [f"l-{r}-{n}".encode()], oci=True
            )
            if n == 2:
                writer.tag(f"app{r}", "latest", image.descriptor.digest)
    events: list[str] = []
    plan, delete_many, walk = Engine._plan, MemoryStore.delete_many, MemoryStore.walk

    async def planned(self: Engine, name: str, keys: Any) -> Any:
        job = await plan(self, name, keys)
        events.append("plan")
        return job

    async def deleting(self: MemoryStore, keys: Any, **kwargs: Any) -> Any:
        events.append("delete")
        return await delete_many(self, keys, **kwargs)

    async def walking(self: MemoryStore, prefix: str) -> AsyncGenerator[Any, None]:
        async for page in walk(self, prefix):
            yield page
        if prefix.startswith(layout.BLOBS_SHA256):
            events.append("blobs listed")

    monkeypatch.setattr(Engine, "_plan", planned)
    monkeypatch.setattr(MemoryStore, "delete_many", deleting)
    monkeypatch.setattr(MemoryStore, "walk", walking)
    monkeypatch.setattr(CachedReads, "blob_listing_pays_from", 0.05)  # list from a few
    # A DeleteObjects of 4 keys, not 1,000: at a million manifests one fills every 500
    # or so; here that would be one request at the end.
    monkeypatch.setattr(direct, "MAX_KEYS", 4)
    cache = str(tmp_path / "cache.sqlite")
    common = ["clean", "--storage", "memory", "--direct", "--min-age", "0", "--cache", cache,
              "--progress-interval", "0"]  # fmt: skip
    with registered(store):
        warming = run_cli([*common, "--dry-run"], report_path=tmp_path / "dry.json")
        assert warming.exit_code == 0, warming.output
        events.clear()
        answer = run_cli([*common, "--registry-stopped"], report_path=tmp_path / "window.json")
    assert answer.exit_code == 0, answer.output
    assert answer.report is not None
    assert answer.report["summary"]["deleted"] == 80
    last_plan = len(events) - 1 - events[::-1].index("plan")
    assert "blobs listed" in events
    assert events.index("blobs listed") < events.index("plan")  # the warm scan validated
    assert events.index("plan") < events.index("delete") < last_plan  # side by side
