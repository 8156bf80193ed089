"""Scale on object storage: a real run on moto, and a model for a million manifests.

``python -m bench.scale`` prints the model as JSON: the maintenance window
(``clean --direct --gc``) cold and warm, and distribution's garbage-collect, for
1,000,000 manifests in 10,000 repositories (100,000 tags, 5,000,000 blobs) at 20 ms a
request, from the request counts of a real run (``MEASURED_RUN``) and the client CPU
per request measured here (``MEASURED_CPU``). Every assumption is in ``ASSUMPTIONS``
and docs/scale.md.

``python -m bench.scale run [REPOSITORIES]`` makes that real run: a synthetic registry
(bench.generate, 32 manifests a repository) written into moto (bench.s3.FastMoto),
then ``regcleaner clean --dry-run`` on S3 twice with one scan cache (cold, then warm),
each counting its requests by kind; it prints what ``MEASURED_RUN`` holds.
``python -m bench.scale cpu`` measures the client CPU of a GET, a HEAD and a LIST page
of 1,000 keys through regcleaner's S3 store (moto's CPU is in another process).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# -- what was measured here (re-measure with the commands above) ------------------------

MEASURED_RUN: dict[str, Any] = {
    "command": "python -m bench.scale run 3200",
    "repositories": 0,
    "manifests": 0,
    "tags": 0,
    "keys": 0,
    "blobs": 0,
    "cold": {"list": 0, "get": 0, "head": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0},
    "warm": {"list": 0, "get": 0, "head": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0},
}
"""Filled in from ``python -m bench.scale run``; see docs/scale.md for the run."""

MEASURED_CPU: dict[str, float] = {"get_ms": 0.95, "head_ms": 0.8, "list_page_ms": 25.0}
"""Client CPU per request (``python -m bench.scale cpu``)."""

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
    "keys_per_deleted_manifest": 3,
    "swept_blob_share": 0.10,
    "page_keys": 1000,
    "fanout_folders": 256,
    "registry_gc_requests_per_manifest": 4,
    "registry_gc_requests_per_repository": 3,
    "gc_reads_manifests_through_cache": False,
    "notes": [
        "latency_s: every request waits 20 ms (the issue's figure); requests in flight "
        "overlap their waits, up to get_in_flight GET/HEAD, list_in_flight LIST and "
        "delete_in_flight DeleteObjects at once (regcleaner's defaults).",
        "S3 serves 5,500 GET/HEAD/LIST and 3,500 PUT/DELETE requests a second per "
        "partitioned prefix (AWS's published rates); prefixes=1 assumes S3 has not "
        "partitioned the bucket (the worst case): every phase is capped by those rates.",
        "client CPU per request is MEASURED_CPU (aiobotocore on this machine); one "
        "event loop, so CPU adds up across concurrent requests; a phase takes the "
        "largest of its latency-bound, CPU-bound and rate-bound times.",
        "request counts per repository and per manifest come from MEASURED_RUN (a dry "
        "run of clean on moto), scaled to TARGET by repositories (LIST) and by "
        "manifests and tags (GET); the blob listing is blobs/1000 pages plus one "
        "listing of the fan-out folders.",
        "the window is clean --direct --gc: the scan (as the dry run), deletion of "
        "deleted_share of the manifests (keys_per_deleted_manifest keys each, 1,000 "
        "keys a DeleteObjects, plus one HEAD a manifest for the last look), then gc: "
        "one walk of each repository's revisions and _layers, a GET of each revision "
        "link and each manifest (cold; warm: the links from the cache, the manifests "
        "still read unless gc_reads_manifests_through_cache), the blob listing, and "
        "DeleteObjects for swept_blob_share of the blobs.",
        "distribution's garbage-collect: sequential requests (one at a time), "
        "registry_gc_requests_per_manifest per manifest (read the revision link, stat "
        "and read the manifest blob, the tag lookups of --delete-untagged counted as "
        "one), registry_gc_requests_per_repository per repository, the blob listing, "
        "and one request per swept blob (its driver deletes a blob's folder by listing "
        "and deleting it).",
    ],
}


def _phase(
    requests: dict[str, float], cpu: dict[str, float], a: dict[str, Any]
) -> dict[str, float]:
    """Seconds for one phase: the largest of latency, CPU and S3's rate bound."""
    latency = a["latency_s"]
    reads = requests.get("get", 0.0) + requests.get("head", 0.0)
    lists = requests.get("list", 0.0)
    deletes = requests.get("delete", 0.0)
    latency_bound = (
        reads * latency / a["get_in_flight"]
        + lists * latency / a["list_in_flight"]
        + deletes * latency / a["delete_in_flight"]
    )
    cpu_bound = (
        requests.get("get", 0.0) * cpu["get_ms"]
        + requests.get("head", 0.0) * cpu["head_ms"]
        + (lists + deletes) * cpu["list_page_ms"]
    ) / 1000
    rate_bound = (reads + lists) / (a["s3_get_per_s_per_prefix"] * a["prefixes"]) + deletes / (
        a["s3_write_per_s_per_prefix"] * a["prefixes"]
    )
    return {
        "seconds": max(latency_bound, cpu_bound, rate_bound),
        "latency_bound_s": latency_bound,
        "cpu_bound_s": cpu_bound,
        "rate_bound_s": rate_bound,
    }


def model(
    run: dict[str, Any] | None = None,
    cpu: dict[str, float] | None = None,
    assumptions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The window cold and warm, and distribution's garbage-collect, at TARGET."""
    run = run or MEASURED_RUN
    cpu = cpu or MEASURED_CPU
    a = assumptions or ASSUMPTIONS
    repositories, manifests = TARGET["repositories"], TARGET["manifests"]
    tags, blobs = TARGET["tags"], TARGET["blobs"]
    measured_repos = max(1, run["repositories"])
    measured_blob_pages = math.ceil(run["blobs"] / a["page_keys"]) + 1
    # The dry run's scan, per repository (LIST) and per manifest and tag (GET, HEAD).
    cold_lists_per_repo = run["cold"]["list"] / measured_repos
    warm_lists_per_repo = max(0.0, run["warm"]["list"] - measured_blob_pages) / measured_repos
    blob_pages = math.ceil(blobs / a["page_keys"]) + 1
    warm_blob_listing = blob_pages + (1 if blob_pages > a["fanout_folders"] else 0)
    scan_cold = {"list": cold_lists_per_repo * repositories, "get": float(manifests + tags)}
    warm_gets = run["warm"]["get"] / max(1, run["manifests"]) * manifests
    warm_heads = run["warm"]["head"] / max(1, run["manifests"]) * manifests
    scan_warm = {
        "list": warm_lists_per_repo * repositories + warm_blob_listing,
        "get": warm_gets,
        "head": warm_heads,
    }
    deleted = manifests * a["deleted_share"]
    delete_phase = {
        "head": deleted,
        "delete": math.ceil(deleted * a["keys_per_deleted_manifest"] / a["page_keys"]),
        "list": float(repositories),  # the re-listing of each repository's revisions
    }
    swept = blobs * a["swept_blob_share"]
    gc_lists = 2.0 * repositories + blob_pages
    gc_cold = {
        "list": gc_lists,
        "get": float(2 * manifests),
        "delete": math.ceil(swept / a["page_keys"]),
    }
    gc_warm = {
        "list": gc_lists,
        "get": 0.0 if a["gc_reads_manifests_through_cache"] else float(manifests),
        "delete": math.ceil(swept / a["page_keys"]),
    }
    phases = {
        "scan_cold": _phase(scan_cold, cpu, a),
        "scan_warm": _phase(scan_warm, cpu, a),
        "delete": _phase(delete_phase, cpu, a),
        "gc_cold": _phase(gc_cold, cpu, a),
        "gc_warm": _phase(gc_warm, cpu, a),
    }
    window_cold = sum(phases[p]["seconds"] for p in ("scan_cold", "delete", "gc_cold"))
    window_warm = sum(phases[p]["seconds"] for p in ("scan_warm", "delete", "gc_warm"))
    registry_requests = (
        manifests * a["registry_gc_requests_per_manifest"]
        + repositories * a["registry_gc_requests_per_repository"]
        + blob_pages
        + swept
    )
    warm_scan_requests = sum(scan_warm.values())
    return {
        "window_cold_s": round(window_cold, 1),
        "window_warm_s": round(window_warm, 1),
        "registry_gc_s": round(registry_requests * a["latency_s"], 1),
        "requests_per_manifest_warm": round(warm_scan_requests / manifests, 4),
        "gets_per_manifest_warm": round((scan_warm["get"]) / manifests, 4),
        "list_pages_warm_per_1000_keys": round(
            scan_warm["list"] / ((manifests * 2 + tags * 2 + blobs) / 1000), 3
        ),
        "targets": {
            "window_cold_s": 900,
            "window_warm_s": 120,
            "gets_per_manifest_warm": 0.05,
        },
        "target": TARGET,
        "phases": {name: {k: round(v, 1) for k, v in p.items()} for name, p in phases.items()},
        "requests": {
            "scan_cold": scan_cold,
            "scan_warm": scan_warm,
            "delete": delete_phase,
            "gc_cold": gc_cold,
            "gc_warm": gc_warm,
            "registry_gc": registry_requests,
        },
        "inputs": {"measured_run": run, "client_cpu_ms": cpu},
        "assumptions": a,
    }


# -- the real run -----------------------------------------------------------------------


def _clean_with_cache(cache: str, arguments: list[str]) -> None:
    """``regcleaner clean`` with every RegistryView given the scan cache at ``cache``
    (what ``--cache`` does once the CLI has it)."""
    from regcleaner import runner
    from regcleaner.cli import main
    from regcleaner.scancache import ScanCache
    from regcleaner.storage.base import ByteStore
    from regcleaner.view import RegistryView

    def view_with_cache(store: ByteStore) -> RegistryView:
        return RegistryView(store, ScanCache.open(Path(cache), store.describe()))

    runner.__dict__["RegistryView"] = view_with_cache
    sys.argv = ["regcleaner", *arguments]
    main()


def _dry_run(url: str, cache: Path, report: Path) -> dict[str, Any]:
    from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY

    env = {**os.environ, "ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
    arguments = [
        "clean", "--storage", "s3", "--bucket", "bench", "--registry-dir", "/root",
        "--region", REGION, "--s3-endpoint", url, "--direct", "--min-age", "0",
        "--dry-run", "--progress-interval", "0", "--report", str(report),
    ]  # fmt: skip
    code = (
        "from bench.scale import _clean_with_cache; "
        f"_clean_with_cache({str(cache)!r}, {arguments!r})"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=False, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
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
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
        "would_delete": summary.get("counters", {}).get("would_delete"),
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
        moto = FastMoto(load=("bench", "root", str(root)))
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


def _memory_clean(root: str, cache: str, report: str) -> None:
    """``regcleaner clean --direct --dry-run`` on a MemoryStore holding the files below
    ``root`` (the real engine, no server), with the scan cache at ``cache``. Prints
    the resident memory after loading (MB), which the store itself takes."""
    from regcleaner import runner
    from regcleaner.cli import main
    from regcleaner.scancache import ScanCache
    from regcleaner.storage.base import ByteStore
    from regcleaner.view import RegistryView
    from testkit.memory import MemoryStore

    store = MemoryStore(name="scale")
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as stream:
                store.put(os.path.relpath(path, root), stream.read())
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"loaded_rss_mb": round(loaded_mb, 1)}))

    def view_with_cache(_: ByteStore) -> RegistryView:
        return RegistryView(store, ScanCache.open(Path(cache), store.describe()))

    runner.__dict__["make_store"] = lambda _: store
    runner.__dict__["RegistryView"] = view_with_cache
    sys.argv = ["regcleaner", "clean", "--storage", "s3", "--bucket", "memory", "--direct",
                "--min-age", "0", "--dry-run", "--progress-interval", "0",
                "--report", report]  # fmt: skip
    main()


def memory_run(repositories: int) -> dict[str, Any]:
    """The real engine on the in-memory store (bench.generate's registry), cold then
    warm with one cache: requests by kind as S3 would count them, and the client's
    CPU without a network."""
    from bench.generate import generate

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir) / "storage"
        synthetic = generate(root, repositories)
        cache = Path(workdir) / "scan-cache.sqlite"
        for name in ("cold", "warm"):
            report = Path(workdir) / f"{name}.json"
            code = (f"from bench.scale import _memory_clean; "
                    f"_memory_clean({str(root)!r}, {str(cache)!r}, {str(report)!r})")  # fmt: skip
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            answer = subprocess.run([sys.executable, "-c", code], check=False,
                                    capture_output=True, text=True)  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            summary = json.loads(report.read_text())["summary"]
            loaded = json.loads(answer.stdout.splitlines()[0])["loaded_rss_mb"]
            requests = summary["storage_requests"]
            runs[name] = {
                "list": requests["list"], "get": requests["get"], "head": requests["head"],
                "engine_s": summary["duration_s"],
                "process_cpu_s": round(after.ru_utime + after.ru_stime
                                       - before.ru_utime - before.ru_stime, 1),
                "peak_rss_mb": summary["peak_rss_mb"], "store_rss_mb": loaded,
            }  # fmt: skip
            print(f"{name}: {runs[name]}", file=sys.stderr)
        cache_mb = round(cache.stat().st_size / 1e6, 1)
    return {
        "command": f"python -m bench.scale memory {repositories}",
        "repositories": repositories,
        "manifests": synthetic.manifests,
        "tags": synthetic.tags,
        "cache_file_mb": cache_mb,
        **runs,
    }


async def _cpu_sample(url: str, count: int) -> dict[str, float]:
    from regcleaner.config import S3Options
    from regcleaner.storage.s3 import S3Store
    from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY

    store = S3Store(S3Options(bucket="cpu", prefix="/p", region=REGION, endpoint_url=url,
                              access_key=ACCESS_KEY, secret_key=SECRET_KEY))  # fmt: skip
    keys = [f"k/{i:06d}/data" for i in range(count)]
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
        async for _ in store.walk("k"):
            pages += 1
        list_ms = (time.process_time() - started) * 1000 / max(1, pages)
    finally:
        await store.aclose()
    return {"get_ms": round(get_ms, 3), "head_ms": round(head_ms, 3),
            "list_page_ms": round(list_ms, 2)}  # fmt: skip


def measure_cpu(count: int = 5000) -> dict[str, float]:
    """Client CPU per GET, HEAD and LIST page (1,000 keys) against moto."""
    from bench.s3 import FastMoto

    with tempfile.TemporaryDirectory() as workdir:
        for i in range(count):
            folder = Path(workdir) / "k" / f"{i:06d}"
            folder.mkdir(parents=True)
            (folder / "data").write_bytes(b"{}" * 300)  # a manifest's size
        moto = FastMoto(load=("cpu", "p", workdir))
        moto.start(timeout_s=600.0)
        try:
            return asyncio.run(_cpu_sample(moto.url, count))
        finally:
            moto.stop()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        repositories = int(sys.argv[2]) if len(sys.argv) > 2 else 3200
        print(json.dumps(real_run(repositories), indent=2))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "memory":
        repositories = int(sys.argv[2]) if len(sys.argv) > 2 else 3200
        print(json.dumps(memory_run(repositories), indent=2))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "cpu":
        print(json.dumps(measure_cpu(), indent=2))
        return 0
    print(json.dumps(model(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
