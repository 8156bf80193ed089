"""Scale on object storage: a real run on moto, the real engine at a million manifests
in memory, and a model of the maintenance window at that size on S3.

``python -m bench.scale`` prints the model as JSON: the maintenance window
(``clean --direct --gc``) cold and warm, and distribution's garbage-collect, for
1,000,000 manifests in 10,000 repositories (100,000 tags, 5,000,000 blobs) at 20 ms a
request. Its inputs are measured: the requests, keys listed and engine CPU of the real
engine on a registry of that shape (``MEASURED_RUN``), and the S3 client's CPU per
request and key (``MEASURED_CPU``). Every assumption is in ``ASSUMPTIONS`` and
docs/scale.md; ``moto_check`` compares the arithmetic with the moto run.

``python -m bench.scale target`` makes ``MEASURED_RUN``: bench.generate's registry in
TARGET's shape, generated into the in-memory store (testkit.memory: it pages and counts
requests as S3 does) in each run's own process, then a cold dry run, a warm dry run
with the same cache, and the warm window (``clean --direct --gc``): requests by kind,
keys listed, the process's CPU less the store's own and less generating the registry,
and the run's peak memory over the store's. ``python -m bench.scale memory N`` does the
same for N repositories of the default shape (32 manifests each).

``python -m bench.scale run [REPOSITORIES]`` makes the real run on moto: the default
registry (32 manifests a repository) written into moto (bench.s3.FastMoto), then
``regcleaner clean --dry-run`` on S3 twice with one scan cache (cold, then warm), each
counting its requests by kind; it prints what ``MEASURED_MOTO`` holds.
``python -m bench.scale cpu`` measures the client CPU of a GET, a HEAD and a LIST page
of 1,000 keys through regcleaner's S3 store (moto's CPU is in another process).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TypedDict

HERE = Path(__file__).resolve().parent.parent

# -- what was measured here (re-measure with the commands above) ------------------------

MEASURED_RUN: dict[str, Any] = {
    "command": "python -m bench.scale target",
    "repositories": 10_000,
    "manifests": 1_000_000,
    "tags": 100_000,
    "cache_file_mb": 737.4,
    "cold": {
        "list": 2_062, "get": 1_100_000, "head": 0, "listed_keys": 2_060_048,
        "engine_cpu_s": 129.5, "store_cpu_s": 13.1, "over_store_mb": 3.3,
    },
    "warm": {
        "list": 7_178, "get": 0, "head": 0, "listed_keys": 7_000_304, "engine_cpu_s": 60.5,
        "store_cpu_s": 24.6, "over_store_mb": 3.4,
    },
    "window": {
        "list": 7_178, "get": 0, "head": 0, "listed_keys": 7_162_614, "engine_cpu_s": 119.6,
        "store_cpu_s": 49.4, "over_store_mb": 39.0, "deleted": 870_000, "delete": 2_033,
        "keys_deleted": 1_720_000, "clean_cpu_s": 81.1, "gc_cpu_s": 32.9, "report_cpu_s": 5.7,
        "gc_listed_keys": 162_310, "gc_replayed_folders": 256, "gc_sweep_cpu_s": 9.6,
        "gc_list_blobs_cpu_s": 16.8, "gc_manifests_marked": 130_000, "manifests_kept": 130_000,
        "blobs": 4_940_000, "blobs_swept": 4_320_000,
        "gc_requests": {"list": 20_057, "get": 0, "head": 0, "delete": 4_320,
                        "keys_deleted": 4_320_000},
    },
    "gc": {
        "list": 25_173, "get": 0, "head": 0, "manifests_marked": 1_000_000, "blobs": 4_940_000,
        "gc_cpu_s": 82.7, "gc_list_blobs_cpu_s": 11.6, "gc_validation_cpu_s": 16.4,
        "gc_mark_cpu_s": 54.7, "over_store_mb": 29.4, "gc_replayed_folders": 256,
    },
}  # fmt: skip
"""The real engine on a registry of TARGET's shape in memory (``python -m bench.scale
target``, 2026-12-07 21:02-21:19, commit 2c6f8c5: the scan by one flat listing of
repositories/, the space estimate spilled to a plain file): requests as S3 counts them,
keys listed, the engine's CPU (the store's own and generating the registry left out),
memory over the store's. The run before (18:36-18:55, the estimate in SQLite) gave
187.0 s cold, 101.0 s warm, clean 114.4 s and gc 33.9 s in the window, gc alone 65.7 s
(its mark 40.8 s; gc's code did not change: this machine's spread)."""

MEASURED_DEFAULT_SHAPE: dict[str, Any] = {
    "command": "python -m bench.scale memory 31250",
    "repositories": 31_250,
    "manifests": 1_000_000,
    "tags": 187_500,
    "cold": {"list": 2_065, "get": 1_187_500, "head": 0, "listed_keys": 2_062_548,
             "engine_cpu_s": 116.8, "store_cpu_s": 9.2, "over_store_mb": 18.8},
    "warm": {"list": 3_341, "get": 0, "head": 0, "listed_keys": 3_125_304,
             "engine_cpu_s": 62.3, "store_cpu_s": 11.2, "over_store_mb": 18.8},
}  # fmt: skip
"""The in-memory run of bench.generate's default registry (32 manifests a repository,
one shared layer: the moto run's shape) at a million manifests, 2026-12-07 19:05-19:11,
with the flat listing: the engine's CPU a manifest for ``moto_check`` (at 16:03-16:10,
each repository walked: 93.4 s cold and 45.5 s warm, 62,553 and 63,829 LIST)."""

MEASURED_MOTO: dict[str, Any] = {
    "command": "python -m bench.scale run 3200",
    "repositories": 3200,
    "manifests": 102_400,
    "blobs": 108_800,
    "cold": {"list": 214, "get": 121_600, "head": 2, "wall_s": 402.5, "cpu_s": 60.5,
             "peak_rss_mb": 80.5},
    "warm": {"list": 471, "get": 0, "head": 2, "wall_s": 56.4, "cpu_s": 8.4,
             "peak_rss_mb": 81.2},
}  # fmt: skip
"""The same on moto (kept alive, as S3 keeps connections), 2026-12-07 18:55-19:04, with
regcleaner's own reads (storage/s3fast.py) and the flat listing of repositories/:
client CPU of the whole run, and its own peak memory (wall time is moto's: one Python
process answering on the same 2 cores)."""

MEASURED_CPU: dict[str, float] = {"get_ms": 0.396, "head_ms": 0.420, "list_page_ms": 5.34}
"""Client CPU per request through regcleaner's S3 store (``python -m bench.scale
cpu``, the median of six runs on this machine, 2026-12-07 13:20-13:24; botocore's path,
``python -m bench.scale cpu botocore``, six runs in the same minutes: 1.35-2.01 ms a GET,
1.25-1.88 ms a HEAD, 10.8-17.9 ms a page). A LIST page of 1,000 keys (read by
``s3listing.scan_listing``); a listing of a few keys costs about a GET."""

MEASURED_TLS_FACTORS: dict[str, float] = {"get_ms": 1.23, "head_ms": 1.30, "list_page_ms": 1.01}
"""Client CPU over TLS with a registry's keys (``docker/registry/v2/blobs/sha256/ab/<64
hex>/data``, 102 characters) against plain HTTP with 15-character keys, the same
requests through regcleaner's own reads: the ratio of the medians of ten runs each of
``python -m bench.scale cpu tls registry-keys`` and ``python -m bench.scale cpu``,
alternating, in two rounds (2026-12-07 20:46-20:54 and 21:54-22:01; GET 0.639 against
0.519 ms, HEAD 0.667 against 0.513 ms, a 1,000-key page 6.78 against 6.69 ms; the
rounds alone gave 1.20, 1.44, 1.03 and 1.08, 0.96, 0.90: noisy). This machine was
slower than when MEASURED_CPU was made, so the model takes the ratio, not these
figures."""


def as_s3_is_reached(cpu: dict[str, float]) -> dict[str, float]:
    """Client CPU measured over plain HTTP with short keys, as over TLS with a
    registry's keys (MEASURED_TLS_FACTORS)."""
    return {kind: round(ms * MEASURED_TLS_FACTORS[kind], 3) for kind, ms in cpu.items()}


# -- the model's inputs ---------------------------------------------------------------

TARGET = {
    "manifests": 1_000_000,
    "repositories": 10_000,
    "tags": 100_000,
    "blobs": 5_000_000,
}
ASSUMPTIONS: dict[str, Any] = {
    "latency_s": 0.020,
    "get_in_flight": 64,
    "list_in_flight": 16,
    "delete_in_flight": 8,
    "s3_get_per_s_per_prefix": 5500,
    "s3_write_per_s_per_prefix": 3500,
    "prefixes": 1,
    "deleted_share": 0.10,
    "swept_blob_share": 0.10,
    "page_keys": 1000,
    "fanout_folders": 256,
    "registry_gc_requests_per_manifest": 4,
    "registry_gc_requests_per_repository": 3,
    "shards": 8,
    "notes": [
        "latency_s: every request waits 20 ms (the issue's figure); requests in flight "
        "overlap their waits: up to get_in_flight GET/HEAD, list_in_flight LIST (the "
        "ranges of the flat listing of repositories/, the listing of the blobs' "
        "folders) and delete_in_flight DeleteObjects at once (regcleaner's defaults).",
        "S3 serves 5,500 GET/HEAD/LIST requests and 3,500 PUT/DELETE a second per "
        "partitioned prefix (AWS's published rates); a DeleteObjects counts as one "
        "DELETE a key it carries; prefixes=1 assumes S3 has not partitioned the bucket "
        "(the worst case); without_s3_rate_bound is the window with no rate bound at all "
        "(latency and CPU only: regcleaner's own part, which the window approaches as S3 "
        "partitions the bucket; AWS does that in the background under sustained load). "
        "writes_s is S3's time for the window's writes alone (the deletions' and gc's "
        "sweep's keys) at the assumed rate: no tool's window is shorter.",
        "CPU: one event loop, so CPU adds up across concurrent requests. A phase's CPU "
        "is the engine's (MEASURED_RUN: the process's CPU less generating the registry "
        "and less the in-memory store's own work) plus the S3 client's (MEASURED_CPU, "
        "measured against moto over plain HTTP with keys of 15 characters, times "
        "MEASURED_TLS_FACTORS: over TLS with a registry's keys of 102 characters, "
        "measured against the same moto kept alive behind a TLS front): get_ms a GET, "
        "head_ms a HEAD, get_ms a LIST "
        "request and key_ms a key it returns (a 1,000-key page's cost above a GET's, a "
        "thousandth), and list_page_ms a DeleteObjects of 1,000 keys (not measured: "
        "taken as a listing page's).",
        "A phase takes the largest of its latency-bound, CPU-bound and rate-bound "
        "times (they overlap; the largest is the floor).",
        "MEASURED_RUN has TARGET's shape (10,000 repositories of 100 manifests, 100,000 "
        "tags, 4,940,000 blobs): requests and CPU scale to TARGET by at most 1.2 %. Its "
        "window deletes 87 % of the manifests and sweeps 87 % of the blobs; the model's "
        "deleted_share and swept_blob_share are 10 %, so each part is scaled by what it "
        "works through: the deletions' DeleteObjects and CPU by the manifests deleted, "
        "gc's mark CPU by the manifests that stay (from gc alone on the whole registry, "
        "its own validating listing left out: in a window the scan makes it), gc's "
        "listing by the blobs (an upper bound: it includes spooling the run's many "
        "candidates), gc's sweep by the blobs swept, gc's listing keys by the "
        "manifests that stay, and the reports written after gc by the manifests "
        "deleted plus the blobs swept.",
        "The window is clean --direct --gc --cache as the run's window made it: the "
        "scan (its listing of the blobs validates the cache and is recorded), the "
        "deletions (no HEAD or listing for a deletion: the gate proved nothing else "
        "writes), gc (taking the scan's listing of the blobs), the reports. Cold, the "
        "scan starts with an empty cache and lists no blobs; gc lists them once, to "
        "validate the manifests it takes from the cache the scan filled and to sweep "
        "(its engine CPU for that listing taken from gc alone's validating listing). "
        "distribution 3 and --prune-layer-links are left out: those list every "
        "repository's _layers (about 10,000 more LIST requests and 5 million keys).",
        "with_shards: clean --shard I/N in `shards` processes (an Indexed Job, or "
        "processes on one machine with that many cores): the scan and the deletions "
        "divide their CPU and latency by the shards, but each shard lists "
        "repositories/ whole and, when warm, all the blobs (and its engine notes "
        "them); S3's rate bound is shared; gc runs "
        "after them as one process of its own, which lists the blobs itself (the "
        "cold window's gc).",
        "distribution's garbage-collect: sequential requests (one at a time), "
        "registry_gc_requests_per_manifest per manifest (read the revision link, stat "
        "and read the manifest blob, the tag lookups of --delete-untagged counted as "
        "one), registry_gc_requests_per_repository per repository, the blob listing, "
        "and one request per swept blob; latency only, no CPU or rate bound: a lower "
        "bound.",
    ],
}


def _phase(
    requests: dict[str, float],
    engine_cpu_s: float,
    cpu: dict[str, float],
    a: dict[str, Any],
    shards: int = 1,
) -> dict[str, float]:
    """Seconds for one phase: the largest of latency, CPU and S3's rate bound.
    ``requests`` counts ``get``, ``head``, ``list`` (LIST requests, list_in_flight at
    once), ``keys`` (what listings return), ``delete`` (DeleteObjects) and
    ``deleted_keys``."""
    latency = a["latency_s"]
    reads = requests.get("get", 0.0) + requests.get("head", 0.0)
    lists = requests.get("list", 0.0)
    deletes = requests.get("delete", 0.0)
    latency_bound = (
        reads * latency / a["get_in_flight"]
        + lists * latency / a["list_in_flight"]
        + deletes * latency / a["delete_in_flight"]
    )
    key_ms = (cpu["list_page_ms"] - cpu["get_ms"]) / a["page_keys"]
    client_cpu = (
        requests.get("get", 0.0) * cpu["get_ms"]
        + requests.get("head", 0.0) * cpu["head_ms"]
        + lists * cpu["get_ms"]
        + requests.get("keys", 0.0) * key_ms
        + deletes * cpu["list_page_ms"]
    ) / 1000
    # Shards are processes of their own: their CPU and their requests in flight add up.
    latency_bound /= shards
    cpu_bound = (engine_cpu_s + client_cpu) / shards
    rate_bound = (reads + lists) / (a["s3_get_per_s_per_prefix"] * a["prefixes"]) + requests.get(
        "deleted_keys", 0.0
    ) / (a["s3_write_per_s_per_prefix"] * a["prefixes"])
    return {
        "seconds": max(latency_bound, cpu_bound, rate_bound),
        "latency_bound_s": latency_bound,
        "cpu_bound_s": cpu_bound,
        "engine_cpu_s": engine_cpu_s,
        "client_cpu_s": client_cpu,
        "rate_bound_s": rate_bound,
    }


def blob_listing(blobs: int, a: dict[str, Any]) -> dict[str, float]:
    """LIST requests and keys of one listing of ``blobs/sha256`` with ``blobs`` blobs:
    flat when it fits in fewer pages than there are fan-out folders, else one listing
    of the folders and each folder's pages."""
    flat = math.ceil(blobs / a["page_keys"])
    folders = a["fanout_folders"]
    if flat <= folders:
        return {"list": float(max(1, flat)), "keys": float(blobs)}
    per_folder = math.ceil(blobs / folders / a["page_keys"])
    return {"list": float(1 + folders * per_folder), "keys": float(blobs + folders)}


def _scaled(phase: dict[str, float], factor: float) -> dict[str, float]:
    return {kind: count * factor for kind, count in phase.items()}


def _plus(*phases: dict[str, float]) -> dict[str, float]:
    total: dict[str, float] = {}
    for phase in phases:
        for kind, count in phase.items():
            total[kind] = total.get(kind, 0.0) + count
    return total


def model(
    run: dict[str, Any] | None = None,
    cpu: dict[str, float] | None = None,
    assumptions: dict[str, Any] | None = None,
    target: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The window cold and warm, and distribution's garbage-collect, at ``target``."""
    run = run or MEASURED_RUN
    cpu = cpu or as_s3_is_reached(MEASURED_CPU)
    a = assumptions or ASSUMPTIONS
    target = target or TARGET
    repositories, manifests = target["repositories"], target["manifests"]
    tags, blobs = target["tags"], target["blobs"]
    cold, warm, window, alone = run["cold"], run["warm"], run["window"], run["gc"]
    per_repository = repositories / run["repositories"]
    per_manifest = manifests / run["manifests"]
    growth = max(per_manifest, blobs / window["blobs"])
    blobs_listed = blob_listing(blobs, a)
    # The scan's listing of repositories/ (the top-level folders, then the flat listing
    # in ranges side by side), in entries that grow with the manifests; the cold scan
    # lists no blobs.
    scan_lists = {"list": cold["list"] * per_manifest, "keys": cold["listed_keys"] * per_manifest}
    scan_cold = _plus(scan_lists, {"get": cold["get"] * (manifests + tags)
                                   / (run["manifests"] + run["tags"])})  # fmt: skip
    scan_warm = _plus(
        scan_lists,
        blobs_listed,
        {"get": warm["get"] * per_manifest, "head": warm["head"] * per_manifest},
    )
    deleted = manifests * a["deleted_share"]
    kept = manifests - deleted
    keys_a_deleted = window["keys_deleted"] / window["deleted"]
    delete_phase = {
        "delete": float(math.ceil(deleted * keys_a_deleted / a["page_keys"])),
        "deleted_keys": deleted * keys_a_deleted,
    }
    delete_cpu_each = (window["clean_cpu_s"] - warm["engine_cpu_s"]) / window["deleted"]
    swept = blobs * a["swept_blob_share"]
    gc_own = window["gc_requests"]
    keys_a_swept = gc_own["keys_deleted"] / window["blobs_swept"]
    stays = kept / window["manifests_kept"]
    # gc took every fan-out folder from the scan's listing: its own LIST requests are
    # the repositories' (and blobs/ and blobs/sha256/), its keys their revisions.
    if window["gc_replayed_folders"] < a["fanout_folders"]:
        raise ValueError("the measured window's gc listed the blobs itself")
    gc_warm = {
        "list": gc_own["list"] * per_repository,
        "keys": window["gc_listed_keys"] * stays,
        "delete": float(math.ceil(swept * keys_a_swept / a["page_keys"])),
        "deleted_keys": swept * keys_a_swept,
    }
    gc_cold = _plus(gc_warm, blobs_listed)  # gc lists the blobs (validation and sweep)
    mark_each = alone["gc_mark_cpu_s"] / alone["manifests_marked"]
    gc_engine = (
        mark_each * kept
        + window["gc_list_blobs_cpu_s"] * growth
        + window["gc_sweep_cpu_s"] * swept / window["blobs_swept"]
    )
    gc_cold_engine = gc_engine + alone["gc_validation_cpu_s"] * growth
    report_cpu = (
        window["report_cpu_s"] * (deleted + swept) / (window["deleted"] + window["blobs_swept"])
    )
    scan_warm_engine = warm["engine_cpu_s"] * growth
    delete_engine = delete_cpu_each * deleted
    # The warm scan lists the blobs first (every manifest read waits for the listing that
    # validates the cache; its engine CPU, noting the listed blobs, is gc alone's
    # validating listing), then plans. The removers take each repository as it is
    # planned: the deletions run beside the planning (beside the whole scan when cold).
    validating_engine = alone["gc_validation_cpu_s"] * growth
    planning = _plus(scan_lists, {"get": scan_warm["get"], "head": scan_warm["head"]})
    planning_engine = scan_warm_engine - validating_engine
    phases = {
        "scan_cold": _phase(scan_cold, cold["engine_cpu_s"] * growth, cpu, a),
        "scan_warm": _phase(scan_warm, scan_warm_engine, cpu, a),
        "delete": _phase(delete_phase, delete_engine, cpu, a),
        "gc_cold": _phase(gc_cold, gc_cold_engine, cpu, a),
        "gc_warm": _phase(gc_warm, gc_engine, cpu, a),
        "reports": _phase({}, report_cpu, cpu, a),
        "scan_and_delete_cold": _phase(
            _plus(scan_cold, delete_phase), cold["engine_cpu_s"] * growth + delete_engine, cpu, a
        ),
        "validating_warm": _phase(blobs_listed, validating_engine, cpu, a),
        "planning_warm": _phase(planning, planning_engine, cpu, a),
        "planning_and_delete_warm": _phase(
            _plus(planning, delete_phase), planning_engine + delete_engine, cpu, a
        ),
    }
    window_cold = sum(phases[p]["seconds"] for p in ("scan_and_delete_cold", "gc_cold", "reports"))
    window_warm = sum(
        phases[p]["seconds"]
        for p in ("validating_warm", "planning_and_delete_warm", "gc_warm", "reports")
    )
    dry_run_warm = sum(phases[p]["seconds"] for p in ("validating_warm", "planning_warm"))
    # S3's time for the window's writes alone (the deletions and gc's sweep share the
    # rate): no tool makes the window shorter than this.
    writes_s = (delete_phase["deleted_keys"] + gc_warm["deleted_keys"]) / (
        a["s3_write_per_s_per_prefix"] * a["prefixes"]
    )
    # clean --shard I/N in N processes, then gc in one of its own (it lists the blobs:
    # the cold window's gc). Each shard lists all the blobs when warm, and its engine
    # notes them all: that part of the engine's CPU is not divided.
    n = a["shards"]
    # Each shard lists repositories/ whole too (it keeps the keys of its own).
    sharded_scan_warm = _plus(scan_warm, _scaled(_plus(blobs_listed, scan_lists), n - 1))
    sharded_scan_cold = _plus(scan_cold, _scaled(scan_lists, n - 1))
    noting = alone["gc_validation_cpu_s"] * growth
    sharded_warm_engine = scan_warm_engine + noting * (n - 1)
    sharded = {
        "scan_cold": _phase(sharded_scan_cold, cold["engine_cpu_s"] * growth, cpu, a, n),
        "scan_warm": _phase(sharded_scan_warm, sharded_warm_engine, cpu, a, n),
        "scan_and_delete_cold": _phase(
            _plus(sharded_scan_cold, delete_phase),
            cold["engine_cpu_s"] * growth + delete_engine, cpu, a, n,
        ),
        "scan_and_delete_warm": _phase(
            _plus(sharded_scan_warm, delete_phase), sharded_warm_engine + delete_engine, cpu, a, n
        ),
    }  # fmt: skip
    after_shards = phases["gc_cold"]["seconds"] + phases["reports"]["seconds"]
    sharded_cold = sharded["scan_and_delete_cold"]["seconds"] + after_shards
    sharded_warm = sharded["scan_and_delete_warm"]["seconds"] + after_shards
    registry_requests = (
        manifests * a["registry_gc_requests_per_manifest"]
        + repositories * a["registry_gc_requests_per_repository"]
        + math.ceil(blobs / a["page_keys"])
        + swept
    )
    scan_requests = scan_warm["list"] + scan_warm["get"] + scan_warm["head"]
    window_requests = (scan_requests + delete_phase["delete"] + gc_warm["list"]
                       + gc_warm["delete"])  # fmt: skip
    figures: dict[str, Any] = {
        "window_cold_s": round(window_cold, 1),
        "window_warm_s": round(window_warm, 1),
        "registry_gc_s": round(registry_requests * a["latency_s"], 1),
        "requests_per_manifest_warm": round(scan_requests / manifests, 4),
        "requests_per_manifest_warm_window": round(window_requests / manifests, 4),
        "gets_per_manifest_warm": round(scan_warm["get"] / manifests, 4),
        "list_requests_warm_per_1000_keys": round(
            scan_warm["list"] / (scan_warm["keys"] / 1000), 2
        ),
        "with_shards": {
            "shards": n,
            "window_cold_s": round(sharded_cold, 1),
            "window_warm_s": round(sharded_warm, 1),
            "dry_run_cold_s": round(sharded["scan_cold"]["seconds"], 1),
            "dry_run_warm_s": round(sharded["scan_warm"]["seconds"], 1),
        },
        "dry_run_warm_s": round(dry_run_warm, 1),
        "writes_s": round(writes_s, 1),
        "dry_run_cold_s": round(phases["scan_cold"]["seconds"], 1),
        "targets": {"window_cold_s": 900, "window_warm_s": 120, "gets_per_manifest_warm": 0.05},
        "target_registry": target,
        "phases": {name: {k: round(v, 1) for k, v in p.items()} for name, p in phases.items()},
        "requests": {
            "scan_cold": scan_cold,
            "scan_warm": scan_warm,
            "delete": delete_phase,
            "gc_cold": gc_cold,
            "gc_warm": gc_warm,
            "registry_gc": registry_requests,
        },
        "inputs": {"memory_run": run, "moto_run": MEASURED_MOTO, "client_cpu_ms": cpu},
        "assumptions": a,
    }
    if not math.isinf(a["prefixes"]):
        # regcleaner's own part: the window were S3 never the bound (the latency and
        # the CPU only), which it approaches as S3 partitions the bucket.
        free = model(run, cpu, {**a, "prefixes": math.inf}, target)
        figures["without_s3_rate_bound"] = {
            "window_cold_s": free["window_cold_s"],
            "window_warm_s": free["window_warm_s"],
            "with_shards_window_warm_s": free["with_shards"]["window_warm_s"],
        }
    return figures


def moto_check(
    run: dict[str, Any] | None = None, cpu: dict[str, float] | None = None
) -> dict[str, Any]:
    """The model's CPU arithmetic (engine CPU plus the client's per request and key)
    against a measurement it was not fitted to: the moto run's CPU (MEASURED_MOTO: the
    default registry on S3 through regcleaner's own reads), predicted from the
    in-memory run of that shape (``run``: the engine's CPU a manifest), the moto run's
    own request counts, and MEASURED_CPU. It checks that CPU adds up so, not the
    request counts, the scaling, or the latency and rate bounds."""
    run = run or MEASURED_DEFAULT_SHAPE
    cpu = cpu or MEASURED_CPU
    moto = MEASURED_MOTO
    key_ms = (cpu["list_page_ms"] - cpu["get_ms"]) / ASSUMPTIONS["page_keys"]
    ratio = moto["manifests"] / run["manifests"]
    result: dict[str, Any] = {"command": moto["command"]}
    for name in ("cold", "warm"):
        measured, engine = moto[name], run[name]
        client = (
            measured["get"] * cpu["get_ms"]
            + measured["head"] * cpu["head_ms"]
            + measured["list"] * cpu["get_ms"]
            + engine["listed_keys"] * ratio * key_ms
        ) / 1000
        predicted = engine["engine_cpu_s"] * ratio + client
        result[name] = {"measured_cpu_s": measured["cpu_s"], "predicted_cpu_s": round(predicted, 1)}
    return result


# -- the real run -----------------------------------------------------------------------


def _dry_run(url: str, cache: Path, report: Path) -> dict[str, Any]:
    """``regcleaner clean --direct --dry-run --cache CACHE`` in a process of its own: the
    requests it made, its wall and CPU time, and its own peak memory (its report's)."""
    from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY

    env = {**os.environ, "ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
    arguments = [
        "clean", "--storage", "s3", "--bucket", "bench", "--registry-dir", "/root",
        "--region", REGION, "--s3-endpoint", url, "--direct", "--min-age", "0",
        "--dry-run", "--progress-interval", "0", "--report", str(report),
        "--cache", str(cache),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "regcleaner", *arguments], check=False, env=env,
                   stdout=subprocess.DEVNULL, cwd=HERE)  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(report.read_text())["summary"]
    requests = summary["storage_requests"]
    return {
        "list": requests["list"],
        "get": requests["get"],
        "head": requests["head"],
        "wall_s": round(wall, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "peak_rss_mb": summary["peak_rss_mb"],
        "would_delete": summary["would_delete"],
    }


def real_run(repositories: int) -> dict[str, Any]:
    """Generate, upload, and dry-run twice with one cache; the counts and times."""
    from bench.generate import generate
    from bench.s3 import FastMoto

    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir) / "storage"
        started = time.perf_counter()
        synthetic = generate(root, repositories)
        files = [p for p in root.rglob("*") if p.is_file()]
        blobs = sum(1 for p in files if "/blobs/" in str(p))
        moto = FastMoto(load=("bench", "root", str(root)), keep_alive=True)
        moto.start(timeout_s=3600.0)
        try:
            loaded = time.perf_counter() - started
            print(f"loaded {len(files):,} keys in {loaded:.0f} s", file=sys.stderr)
            cache = Path(workdir) / "scan-cache.sqlite"
            cold = _dry_run(moto.url, cache, Path(workdir) / "cold.json")
            print(f"cold: {cold}", file=sys.stderr)
            warm = _dry_run(moto.url, cache, Path(workdir) / "warm.json")
            print(f"warm: {warm}", file=sys.stderr)
            cache_mb = round(cache.stat().st_size / 1e6, 1)
        finally:
            moto.stop()
    return {
        "command": f"python -m bench.scale run {repositories}",
        "repositories": repositories,
        "manifests": synthetic.manifests,
        "tags": synthetic.tags,
        "keys": len(files),
        "blobs": blobs,
        "cache_file_mb": cache_mb,
        "load_s": round(loaded, 1),
        "cold": cold,
        "warm": warm,
    }


class Shape(TypedDict, total=False):
    per_repo: int
    layers_per_image: int
    tagged: int


SHAPES: dict[str, Shape] = {
    "": {},
    "target": {"per_repo": 100, "layers_per_image": 4, "tagged": 8},
}
"""Registries bench.generate makes for the in-memory runs: its default (32 manifests a
repository, 6 tags, one shared layer), and TARGET's shape (100 manifests a repository
with 4 layers each and 10 tags: 10,000 repositories make 1,000,000 manifests, 100,000
tags and 4,940,000 blobs)."""

MEMORY_MTIME = 1_700_000_000.0
"""The modification time of every object of the in-memory runs (each run generates the
same registry again: same keys, bytes and times)."""


def _resident_mb() -> float:
    """This process's resident memory now (MB), from /proc/self/statm."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_clean(
    repositories: int, cache: str, report: str, *, window: bool = False, shape: str = "",
    gc_only: bool = False, estimate: bool = True,
) -> None:  # fmt: skip
    """``regcleaner clean --direct --dry-run`` on a MemoryStore holding bench.generate's
    registry of ``repositories`` repositories (the real engine, no server, no disk;
    ``shape``: ``SHAPES``' name for the generator's other arguments),
    with the scan cache at ``cache``; with ``window``, ``clean --direct --gc``
    (``--registry-stopped``: nothing serves this store). Prints a JSON line after
    loading (resident memory and CPU seconds: what the store itself takes), and one at
    the end: the process's CPU seconds when gc began (window) and at the end, and the
    keys all listings returned."""
    from bench.generate import generate
    from regcleaner import collector, runner
    from regcleaner.cachedreads import CachedReads
    from regcleaner.cli import main
    from regcleaner.scancache import ScanCache
    from regcleaner.storage.base import ByteStore
    from regcleaner.view import RegistryView
    from testkit.memory import MemoryStore

    store = MemoryStore(name="scale")

    def sink(key: str, data: bytes) -> None:
        store.put_unsorted(key, data, mtime=MEMORY_MTIME)

    generate(Path("/generated"), repositories, sink=sink, **SHAPES[shape])
    store.sort_keys()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    loaded_now = _resident_mb()
    print(json.dumps({"loaded_rss_mb": round(usage.ru_maxrss / 1024, 1),
                      "loaded_now_rss_mb": round(loaded_now, 1),
                      "loaded_cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}),
          flush=True)  # fmt: skip
    # The process's peak (ru_maxrss) may be generating's, above the run's: the run's
    # own peak is sampled from /proc every 10 ms.
    peak = [loaded_now]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], _resident_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    views: list[RegistryView] = []

    def view_with_cache(_: ByteStore) -> RegistryView:
        views.append(RegistryView(store, ScanCache.open(Path(cache), store.describe())))
        return views[-1]

    gc_began: list[float] = []

    sweep: list[float] = []
    listing: list[float] = []

    gc_ended: list[float] = []
    validation: list[float] = []

    class TimedCollector(collector.Collector):
        async def run(self) -> None:
            gc_began.extend((time.process_time(), store.listed_keys, store.cpu_s))
            await super().run()
            gc_ended.extend((time.process_time(), store.cpu_s))  # the report comes after

        async def _list_blobs(self) -> None:
            began, store_began = time.process_time(), store.cpu_s
            await super()._list_blobs()
            listing.append(time.process_time() - began - (store.cpu_s - store_began))

        async def _sweep(self) -> None:
            began, store_began = time.process_time(), store.cpu_s
            await super()._sweep()
            sweep.append(time.process_time() - began - (store.cpu_s - store_began))

    listing_if_it_pays = CachedReads._list_blobs_if_it_pays

    async def timed_validation(self: CachedReads) -> bool:
        began, store_began = time.process_time(), store.cpu_s
        try:
            return await listing_if_it_pays(self)
        finally:  # the listing validating the cache (the scan's, or gc's own)
            validation.append(time.process_time() - began - (store.cpu_s - store_began))

    CachedReads._list_blobs_if_it_pays = timed_validation  # type: ignore[method-assign]
    runner.__dict__["make_store"] = lambda _: store
    runner.__dict__["RegistryView"] = view_with_cache
    collector.__dict__["Collector"] = TimedCollector  # the runner imports it from there
    how = ["--gc", "--registry-stopped"] if window else ["--dry-run"]
    if not estimate:
        how.append("--no-estimate-space")
    sys.argv = ["regcleaner", "clean", "--storage", "s3", "--bucket", "memory", "--direct",
                "--min-age", "0", *how, "--progress-interval", "0",
                "--report", report]  # fmt: skip
    if gc_only:  # gc alone, a dry run: every manifest stays, so every one is marked
        sys.argv = ["regcleaner", "gc", "--storage", "s3", "--bucket", "memory", "--dry-run",
                    "--progress-interval", "0", "--report", report]  # fmt: skip
    try:
        main()
    finally:
        done.set()
        sampler.join()
        print(json.dumps({"run_peak_rss_mb": round(max(peak[0], _resident_mb()), 1),
                          "gc_began_cpu_s": gc_began[0] if gc_began else None,
                          "listed_keys_at_gc": gc_began[1] if gc_began else None,
                          "store_cpu_at_gc_s": gc_began[2] if gc_began else None,
                          "store_cpu_s": store.cpu_s,
                          "sweep_cpu_s": sweep[0] if sweep else None,
                          "gc_ended_cpu_s": gc_ended[0] if gc_ended else None,
                          "store_cpu_at_gc_end_s": gc_ended[1] if gc_ended else None,
                          "validation_cpu_s": sum(validation),
                          "list_blobs_cpu_s": listing[0] if listing else None,
                          "ended_cpu_s": time.process_time(),
                          "listed_keys": store.listed_keys,
                          "gc_replayed_folders": sum(
                              v.reads.recorded.replayed for v in views
                              if v.reads.recorded is not None)}), flush=True)  # fmt: skip


def _clean_apart(
    name: str, repositories: int, cache: Path, report: Path, **options: object
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``_memory_clean`` in a process of its own (each run generates its registry
    anew); its first and last JSON lines (after loading, at the end). SystemExit with
    its errors if it wrote no report."""
    given = "".join(f", {option}={value!r}" for option, value in options.items())
    code = (f"from bench.scale import _memory_clean; "
            f"_memory_clean({repositories}, {str(cache)!r}, {str(report)!r}{given})")  # fmt: skip
    report.unlink(missing_ok=True)
    answer = subprocess.run([sys.executable, "-c", code], check=False, cwd=HERE,
                            capture_output=True, text=True)  # fmt: skip
    if not report.exists():
        raise SystemExit(f"the {name} run failed:\n{answer.stderr[-3000:]}")
    lines = [json.loads(line) for line in answer.stdout.splitlines() if line.startswith('{"')]
    return lines[0], lines[-1]


def _engine_cpu(loaded: dict[str, Any], ended: dict[str, Any]) -> float:
    """The engine's CPU of one ``_memory_clean``: the process's, less generating the
    registry and less the store's own work."""
    return float(ended["ended_cpu_s"] - loaded["loaded_cpu_s"] - ended["store_cpu_s"])


def estimate_cost(repositories: int = 1000, rounds: int = 3) -> dict[str, Any]:
    """What the space estimate costs a warm dry run (``python -m bench.scale
    estimate``): TARGET's shape at ``repositories`` repositories, a cold run to fill the
    cache, then warm dry runs alternating with and without ``--no-estimate-space``;
    the engine's CPU of each."""
    runs: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as workdir:
        cache, report = Path(workdir) / "cache.sqlite", Path(workdir) / "report.json"
        for name in ["cold"] + ["with", "without"] * rounds:
            loaded, ended = _clean_apart(name, repositories, cache, report, shape="target",
                                         estimate=name != "without")  # fmt: skip
            if name != "cold":
                runs[name].append(round(_engine_cpu(loaded, ended), 2))
    return {
        "command": "python -m bench.scale estimate",
        "manifests": repositories * 100,
        "engine_cpu_s": runs,
        "estimate_s_median": round(statistics.median(runs["with"])
                                   - statistics.median(runs["without"]), 2),
    }  # fmt: skip


def memory_run(repositories: int, shape: str = "") -> dict[str, Any]:
    """The real engine on the in-memory store (bench.generate's registry, generated in
    each run's own process): a cold dry run, a warm one with the same cache, the warm
    window (``clean --direct --gc``), and ``gc --dry-run`` alone with the same cache
    (every manifest marked). Requests by kind as S3 would count them,
    the keys listings returned, the engine's CPU (the process's less what generating
    the registry took; the window's split where gc began) and its memory over the
    store's."""
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        cache = Path(workdir) / "scan-cache.sqlite"
        for name in ("cold", "warm", "window", "gc"):
            report = Path(workdir) / f"{name}.json"
            loaded, ended = _clean_apart(name, repositories, cache, report,
                                         window=name == "window", shape=shape,
                                         gc_only=name == "gc")  # fmt: skip
            whole = json.loads(report.read_text())
            summary = whole["summary"]
            requests = summary["storage_requests"]
            if name == "gc":  # gc's report: its CPU in parts, as in the window
                began = ended["gc_began_cpu_s"]
                store_cpu = ended["store_cpu_at_gc_end_s"] - ended["store_cpu_at_gc_s"]
                cpu = ended["gc_ended_cpu_s"] - began - store_cpu
                listing_cpu = ended["list_blobs_cpu_s"]
                # The mark validates the cache by its own listing of the blobs, which in
                # a window the scan makes: that is not the mark's.
                mark_cpu = cpu - listing_cpu - ended["validation_cpu_s"]
                over = ended["run_peak_rss_mb"] - loaded["loaded_now_rss_mb"]
                runs[name] = {
                    "list": requests["list"], "get": requests["get"], "head": requests["head"],
                    "manifests_marked": summary["manifests_marked"], "blobs": summary["blobs"],
                    "gc_cpu_s": round(cpu, 1), "gc_list_blobs_cpu_s": round(listing_cpu, 1),
                    "gc_validation_cpu_s": round(ended["validation_cpu_s"], 1),
                    "gc_mark_cpu_s": round(mark_cpu, 1),
                    "over_store_mb": round(over, 1),
                    "gc_replayed_folders": ended["gc_replayed_folders"],
                }  # fmt: skip
                print(f"{name}: {runs[name]}", file=sys.stderr, flush=True)
                continue
            run: dict[str, Any] = {
                "list": requests["list"], "get": requests["get"], "head": requests["head"],
                "listed_keys": ended["listed_keys"],
                "engine_s": summary["duration_s"],
                # The store's own CPU (listings and reads: S3's and the client's work,
                # which the model charges per request and key) is not the engine's.
                "engine_cpu_s": round(_engine_cpu(loaded, ended), 1),
                "store_cpu_s": round(ended["store_cpu_s"], 1),
                "peak_rss_mb": summary["peak_rss_mb"], "store_rss_mb": loaded["loaded_now_rss_mb"],
                "over_store_mb": round(ended["run_peak_rss_mb"] - loaded["loaded_now_rss_mb"], 1),
                "manifests": summary["manifests"], "would_delete": summary["would_delete"],
            }  # fmt: skip
            if name == "window":
                gc = whole["gc"]["summary"]
                began = ended["gc_began_cpu_s"]
                run.update({
                    "deleted": summary["deleted"],
                    "delete": requests["delete"], "keys_deleted": requests["keys_deleted"],
                    "clean_cpu_s": round(began - loaded["loaded_cpu_s"]
                                         - ended["store_cpu_at_gc_s"], 1),
                    "gc_cpu_s": round(ended["gc_ended_cpu_s"] - began
                                      - ended["store_cpu_at_gc_end_s"]
                                      + ended["store_cpu_at_gc_s"], 1),
                    # The reports written after gc: the clean's and gc's (every
                    # manifest deleted and blob swept is a line of them).
                    "report_cpu_s": round(ended["ended_cpu_s"] - ended["gc_ended_cpu_s"]
                                          - ended["store_cpu_s"]
                                          + ended["store_cpu_at_gc_end_s"], 1),
                    "gc_listed_keys": ended["listed_keys"] - ended["listed_keys_at_gc"],
                    "gc_replayed_folders": ended["gc_replayed_folders"],
                    "gc_sweep_cpu_s": round(ended["sweep_cpu_s"], 1),
                    "gc_list_blobs_cpu_s": round(ended["list_blobs_cpu_s"], 1),
                    # The store's counts are the window's: gc's own are the rest.
                    "gc_requests": {kind: gc["storage_requests"][kind] - requests[kind]
                                    for kind in requests},
                    "gc_manifests_marked": gc["manifests_marked"],
                    "manifests_kept": summary["manifests"] - summary["deleted"],
                    "blobs": gc["blobs"], "blobs_swept": gc["blobs_swept"],
                })  # fmt: skip
            runs[name] = run
            print(f"{name}: {run}", file=sys.stderr, flush=True)
        cache_mb = round(cache.stat().st_size / 1e6, 1)
    command = "python -m bench.scale " + (shape or f"memory {repositories}")
    return {
        "command": command,
        "repositories": repositories,
        "manifests": runs["cold"]["manifests"],
        "tags": repositories * (2 + SHAPES[shape].get("tagged", 4)),  # latest, .sig, v1..
        "cache_file_mb": cache_mb,
        **runs,
    }


async def _cpu_sample(
    url: str, count: int, fast_reads: bool, prefix: str, keys: list[str], folder: str
) -> dict[str, float]:
    from regcleaner.config import S3Options
    from regcleaner.storage.s3 import S3Store
    from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY

    store = S3Store(S3Options(bucket="cpu", prefix=prefix, region=REGION, endpoint_url=url,
                              access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                              fast_reads=fast_reads))  # fmt: skip
    try:
        await store.read_many(keys[:50], 1024)  # warm the connections up
        started = time.process_time()
        await store.read_many(keys, 1024)
        get_ms = (time.process_time() - started) * 1000 / count
        started = time.process_time()
        await store.stat_many(keys)
        head_ms = (time.process_time() - started) * 1000 / count
        started = time.process_time()
        pages = 0
        async for _ in store.walk(folder):
            pages += 1
        list_ms = (time.process_time() - started) * 1000 / max(1, pages)
        fast = store._fast
        if fast_reads and (fast is None or not fast.enabled or store.handed_to_botocore):
            raise SystemExit(f"regcleaner's own S3 reads were off or handed "
                             f"{store.handed_to_botocore} requests to botocore: these "
                             "figures would be partly botocore's")  # fmt: skip
    finally:
        await store.aclose()
    return {"get_ms": round(get_ms, 3), "head_ms": round(head_ms, 3),
            "list_page_ms": round(list_ms, 2)}  # fmt: skip


def measure_cpu(
    count: int = 5000, *, fast_reads: bool = True, tls: bool = False, registry_keys: bool = False
) -> dict[str, float]:
    """Client CPU per GET, HEAD and LIST page (1,000 keys) against moto (kept alive, as
    S3 keeps connections); ``fast_reads=False``: every request through botocore
    (``python -m bench.scale cpu botocore``); ``tls``: over TLS, as S3 is reached
    (``cpu tls``); ``registry_keys``: keys of a registry's blobs
    (``docker/registry/v2/blobs/sha256/ab/<64 hex>/data``, 102 characters) in place of
    15-character ones (``cpu registry-keys``)."""
    from bench.s3 import FastMoto

    with tempfile.TemporaryDirectory() as workdir:
        keys: list[str] = []
        for i in range(count):
            if registry_keys:
                hex_digest = hashlib.sha256(str(i).encode()).hexdigest()
                keys.append(f"blobs/sha256/{hex_digest[:2]}/{hex_digest}/data")
            else:
                keys.append(f"k/{i:06d}/data")
            path = Path(workdir) / keys[-1]
            path.parent.mkdir(parents=True)
            path.write_bytes(b"{}" * 300)  # a manifest's size
        prefix = "docker/registry/v2" if registry_keys else "p"
        folder = "blobs/sha256" if registry_keys else "k"
        moto = FastMoto(load=("cpu", prefix, workdir), keep_alive=True, tls=tls)
        moto.start(timeout_s=600.0)
        trusted = os.environ.get("AWS_CA_BUNDLE")
        try:
            if moto.ca_pem is not None:
                os.environ["AWS_CA_BUNDLE"] = str(moto.ca_pem)
            return asyncio.run(_cpu_sample(moto.url, count, fast_reads, "/" + prefix, keys,
                                           folder))  # fmt: skip
        finally:
            if trusted is None:
                os.environ.pop("AWS_CA_BUNDLE", None)
            else:
                os.environ["AWS_CA_BUNDLE"] = trusted
            moto.stop()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        repositories = int(sys.argv[2]) if len(sys.argv) > 2 else 3200
        print(json.dumps(real_run(repositories), indent=2))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "target":
        print(json.dumps(memory_run(TARGET["repositories"], "target"), indent=2))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "memory":
        repositories = int(sys.argv[2]) if len(sys.argv) > 2 else 3200
        print(json.dumps(memory_run(repositories), indent=2))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "estimate":
        print(json.dumps(estimate_cost(), indent=2))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "cpu":
        flags = set(sys.argv[2:])
        unknown = flags - {"botocore", "tls", "registry-keys"}
        if unknown:
            raise SystemExit(f"bench.scale cpu: unknown {sorted(unknown)}: "
                             "botocore, tls, registry-keys")  # fmt: skip
        figures = measure_cpu(fast_reads="botocore" not in flags, tls="tls" in flags,
                              registry_keys="registry-keys" in flags)  # fmt: skip
        print(json.dumps(figures, indent=2))
        return 0
    print(json.dumps(model(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
