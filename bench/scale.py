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

HERE = Path(__file__).resolve().parent.parent

# -- what was measured here (re-measure with the commands above) ------------------------

MEASURED_RUN: dict[str, Any] = {
    "command": "python -m bench.scale memory 3200",
    "repositories": 3200,
    "manifests": 102_400,
    "tags": 19_200,
    "cold": {"list": 6_453, "get": 121_600, "head": 0, "peak_rss_mb": 245.5,
             "store_rss_mb": 232.3},
    "warm": {"list": 6_710, "get": 0, "head": 0, "peak_rss_mb": 247.5, "store_rss_mb": 232.2},
}  # fmt: skip
"""The real engine (``clean --direct --dry-run``) on the in-memory store: requests as S3
counts them at 102,400 manifests, and memory (the store itself takes store_rss_mb)."""

MEASURED_MOTO: dict[str, Any] = {
    "command": "python -m bench.scale run 3200",
    "repositories": 3200,
    "manifests": 102_400,
    "blobs": 108_800,
    "cold": {"list": 6_453, "get": 121_600, "head": 2, "wall_s": 354.8, "cpu_s": 52.0,
             "peak_rss_mb": 78.7},
    "warm": {"list": 6_710, "get": 0, "head": 2, "wall_s": 71.3, "cpu_s": 11.5,
             "peak_rss_mb": 79.4},
}  # fmt: skip
"""The same on moto (kept alive, as S3 keeps connections), 2026-12-07 13:09-13:17, with
regcleaner's own reads (storage/s3fast.py): client CPU of the whole run, and its own
peak memory (wall time is moto's: one Python process answering on the same 2 cores)."""

MEASURED_CPU: dict[str, float] = {"get_ms": 0.396, "head_ms": 0.420, "list_page_ms": 5.34}
"""Client CPU per request through regcleaner's S3 store (``python -m bench.scale
cpu``, the median of six runs on this machine, 2026-12-07 13:20-13:24; botocore's path,
``python -m bench.scale cpu botocore``, six runs in the same minutes: 1.35-2.01 ms a GET,
1.25-1.88 ms a HEAD, 10.8-17.9 ms a page). A LIST page of 1,000 keys (read by
``s3listing.scan_listing``); a listing of a few keys costs about a GET."""

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
    "gc_reads_manifests_through_cache": True,
    "links_shown_by_etag": True,
    "shards": 8,
    "notes": [
        "latency_s: every request waits 20 ms (the issue's figure); requests in flight "
        "overlap their waits, up to get_in_flight GET/HEAD, list_in_flight LIST and "
        "delete_in_flight DeleteObjects at once (regcleaner's defaults).",
        "S3 serves 5,500 GET/HEAD/LIST and 3,500 PUT/DELETE requests a second per "
        "partitioned prefix (AWS's published rates); prefixes=1 assumes S3 has not "
        "partitioned the bucket (the worst case).",
        "CPU: one event loop, so CPU adds up across concurrent requests. A phase's CPU "
        "is the engine's per manifest (the moto run's CPU less its requests' client CPU: "
        "engine_cpu_ms) plus the S3 client's per request (MEASURED_CPU): a GET or HEAD, "
        "a listing of a few keys as a GET, a full page of 1,000 keys as list_page_ms.",
        "A phase takes the largest of its latency-bound, CPU-bound and rate-bound "
        "times (they overlap; the largest is the floor).",
        "The scan's requests per repository (LIST) and per manifest and tag (GET, HEAD) "
        "are MEASURED_RUN's, scaled to TARGET: LIST by repositories, GET by manifests "
        "plus tags. A warm scan of an unchanged bucket makes MEASURED_RUN's warm "
        "requests per manifest, plus one listing of blobs/sha256 (blobs/1000 full "
        "pages, plus one listing of the 256 fan-out folders).",
        "The window is clean --direct --gc --cache: the scan, deletion of deleted_share "
        "of the manifests (keys_per_deleted_manifest keys each, 1,000 keys a "
        "DeleteObjects, a HEAD each for the last look, a re-listing of each "
        "repository), then gc: a walk of each repository's revisions and _layers; each "
        "revision link read unless its listing shows its bytes (links_shown_by_etag: "
        "an ETag that is the MD5 of sha256:<hex>, as S3 gives for an object written in "
        "one PUT without KMS; cachedreads.content_shown); each manifest from the cache "
        "(gc_reads_manifests_through_cache, as collector.py does through "
        "view.manifest_marks), validated by one listing of the blobs (cold: the scan "
        "started with an empty cache, so gc lists the blobs for it; warm: the scan's "
        "listing serves); the blob listing for the sweep (full pages), and "
        "DeleteObjects for swept_blob_share of the blobs; gc's CPU per manifest is "
        "taken as the engine's cold scan's.",
        "with_shards: clean --shard I/N in `shards` processes (an Indexed Job, or "
        "processes on one machine with that many cores): the scan and the deletions "
        "divide their CPU and latency by the shards, each shard lists all the blobs "
        "when warm, S3's rate bound is shared; gc stays one process.",
        "distribution's garbage-collect: sequential requests (one at a time), "
        "registry_gc_requests_per_manifest per manifest (read the revision link, stat "
        "and read the manifest blob, the tag lookups of --delete-untagged counted as "
        "one), registry_gc_requests_per_repository per repository, the blob listing, "
        "and one request per swept blob; latency only, no CPU or rate bound.",
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
    ``requests`` counts ``get``, ``head``, ``list`` (small listings), ``pages`` (full
    listing pages) and ``delete``."""
    latency = a["latency_s"]
    reads = requests.get("get", 0.0) + requests.get("head", 0.0)
    lists = requests.get("list", 0.0) + requests.get("pages", 0.0)
    deletes = requests.get("delete", 0.0)
    latency_bound = (
        reads * latency / a["get_in_flight"]
        + lists * latency / a["list_in_flight"]
        + deletes * latency / a["delete_in_flight"]
    )
    client_cpu = (
        requests.get("get", 0.0) * cpu["get_ms"]
        + requests.get("head", 0.0) * cpu["head_ms"]
        + (requests.get("list", 0.0) + deletes) * cpu["get_ms"]
        + requests.get("pages", 0.0) * cpu["list_page_ms"]
    ) / 1000
    # Shards are processes of their own: their CPU and their requests in flight add up.
    latency_bound /= shards
    cpu_bound = (engine_cpu_s + client_cpu) / shards
    rate_bound = (reads + lists) / (a["s3_get_per_s_per_prefix"] * a["prefixes"]) + deletes / (
        a["s3_write_per_s_per_prefix"] * a["prefixes"]
    )
    return {
        "seconds": max(latency_bound, cpu_bound, rate_bound),
        "latency_bound_s": latency_bound,
        "cpu_bound_s": cpu_bound,
        "engine_cpu_s": engine_cpu_s,
        "rate_bound_s": rate_bound,
    }


def engine_cpu_ms(cpu: dict[str, float], a: dict[str, Any]) -> tuple[float, float]:
    """The engine's own CPU per manifest, cold and warm: the moto run's client CPU less
    what its requests cost in the S3 client (MEASURED_CPU; the warm run's blob listing
    as its fan-out listings of a few hundred keys each)."""
    moto = MEASURED_MOTO
    manifests = moto["manifests"]
    cold, warm = moto["cold"], moto["warm"]
    requests_cold = (cold["get"] * cpu["get_ms"] + cold["head"] * cpu["head_ms"]
                     + cold["list"] * cpu["get_ms"]) / 1000  # fmt: skip
    per_key_ms = (cpu["list_page_ms"] - cpu["get_ms"]) / a["page_keys"]
    blob_listing = (moto["blobs"] * per_key_ms) / 1000
    requests_warm = (warm["get"] * cpu["get_ms"] + warm["head"] * cpu["head_ms"]
                     + warm["list"] * cpu["get_ms"]) / 1000 + blob_listing  # fmt: skip
    return (
        max(0.0, 1000 * (cold["cpu_s"] - requests_cold) / manifests),
        max(0.0, 1000 * (warm["cpu_s"] - requests_warm) / manifests),
    )


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
    per_repository = 1 / max(1, run["repositories"])
    per_manifest = 1 / max(1, run["manifests"])
    blob_pages = math.ceil(blobs / a["page_keys"])
    listing_of_folders = 1 if blob_pages > a["fanout_folders"] else 0
    engine_cold_ms, engine_warm_ms = engine_cpu_ms(cpu, a)
    scan_cold = {
        "list": run["cold"]["list"] * per_repository * repositories,
        "get": float(manifests + tags),
    }
    scan_warm = {
        "list": run["cold"]["list"] * per_repository * repositories + listing_of_folders,
        "pages": float(blob_pages),
        "get": run["warm"]["get"] * per_manifest * manifests,
        "head": run["warm"]["head"] * per_manifest * manifests,
    }
    deleted = manifests * a["deleted_share"]
    delete_phase = {
        "head": deleted,
        "delete": math.ceil(deleted * a["keys_per_deleted_manifest"] / a["page_keys"]),
        "list": float(repositories),
    }
    swept = blobs * a["swept_blob_share"]
    through_cache = a["gc_reads_manifests_through_cache"]
    link_gets = 0.0 if a["links_shown_by_etag"] else float(manifests)
    gc_cold = {
        "list": 2.0 * repositories,
        # The sweep's listing, and (through the cache) the one validating manifests.
        "pages": float(blob_pages * (2 if through_cache else 1)),
        "get": link_gets + (0.0 if through_cache else float(manifests)),
        "delete": math.ceil(swept / a["page_keys"]),
    }
    gc_warm = dict(gc_cold, pages=float(blob_pages))  # the scan's listing validates
    gc_warm["get"] = 0.0 if through_cache else float(manifests)
    gc_engine_s = engine_cold_ms * manifests / 1000
    gc_warm_engine_s = 0.0 if through_cache else gc_engine_s
    phases = {
        "scan_cold": _phase(scan_cold, engine_cold_ms * manifests / 1000, cpu, a),
        "scan_warm": _phase(scan_warm, engine_warm_ms * manifests / 1000, cpu, a),
        "delete": _phase(delete_phase, 0.0, cpu, a),
        "gc_cold": _phase(gc_cold, gc_engine_s, cpu, a),
        "gc_warm": _phase(gc_warm, gc_warm_engine_s, cpu, a),
    }
    window_cold = sum(phases[p]["seconds"] for p in ("scan_cold", "delete", "gc_cold"))
    window_warm = sum(phases[p]["seconds"] for p in ("scan_warm", "delete", "gc_warm"))
    # clean --shard I/N in N processes (gc stays one): each shard lists all the blobs.
    n = a["shards"]
    sharded_scan_warm = dict(scan_warm, pages=scan_warm["pages"] * n)
    sharded = {
        "scan_cold": _phase(scan_cold, engine_cold_ms * manifests / 1000, cpu, a, n),
        "scan_warm": _phase(sharded_scan_warm, engine_warm_ms * manifests / 1000, cpu, a, n),
        "delete": _phase(delete_phase, 0.0, cpu, a, n),
    }
    sharded_cold = sum(sharded[p]["seconds"] for p in ("scan_cold", "delete"))
    sharded_warm = sum(sharded[p]["seconds"] for p in ("scan_warm", "delete"))
    registry_requests = (
        manifests * a["registry_gc_requests_per_manifest"]
        + repositories * a["registry_gc_requests_per_repository"]
        + blob_pages
        + swept
    )
    keys = blobs + manifests * 2 + tags * 3  # blobs, revision links and history, tags
    return {
        "window_cold_s": round(window_cold, 1),
        "window_warm_s": round(window_warm, 1),
        "registry_gc_s": round(registry_requests * a["latency_s"], 1),
        "requests_per_manifest_warm": round(sum(scan_warm.values()) / manifests, 4),
        "gets_per_manifest_warm": round(scan_warm["get"] / manifests, 4),
        "list_requests_warm_per_1000_keys": round(
            (scan_warm["list"] + scan_warm["pages"]) / (keys / 1000), 2
        ),
        "window_warm_s_if_gc_reads_through_cache": (
            round(window_warm, 1)
            if a["gc_reads_manifests_through_cache"]
            else model(run, cpu, dict(a, gc_reads_manifests_through_cache=True))["window_warm_s"]
        ),
        "with_shards": {
            "shards": n,
            "window_cold_s": round(sharded_cold + phases["gc_cold"]["seconds"], 1),
            "window_warm_s": round(sharded_warm + phases["gc_warm"]["seconds"], 1),
            "dry_run_cold_s": round(sharded["scan_cold"]["seconds"], 1),
            "dry_run_warm_s": round(sharded["scan_warm"]["seconds"], 1),
        },
        "dry_run_warm_s": round(phases["scan_warm"]["seconds"], 1),
        "dry_run_cold_s": round(phases["scan_cold"]["seconds"], 1),
        "targets": {"window_cold_s": 900, "window_warm_s": 120, "gets_per_manifest_warm": 0.05},
        "target_registry": TARGET,
        "phases": {name: {k: round(v, 1) for k, v in p.items()} for name, p in phases.items()},
        "requests": {
            "scan_cold": scan_cold,
            "scan_warm": scan_warm,
            "delete": delete_phase,
            "gc_cold": gc_cold,
            "gc_warm": gc_warm,
            "registry_gc": registry_requests,
        },
        "inputs": {
            "memory_run": run,
            "moto_run": MEASURED_MOTO,
            "client_cpu_ms": cpu,
            "engine_cpu_ms_per_manifest": {
                "cold": round(engine_cold_ms, 3),
                "warm": round(engine_warm_ms, 3),
            },
        },
        "assumptions": a,
    }


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


async def _cpu_sample(url: str, count: int, fast_reads: bool) -> dict[str, float]:
    from regcleaner.config import S3Options
    from regcleaner.storage.s3 import S3Store
    from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY

    store = S3Store(S3Options(bucket="cpu", prefix="/p", region=REGION, endpoint_url=url,
                              access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                              fast_reads=fast_reads))  # fmt: skip
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


def measure_cpu(count: int = 5000, *, fast_reads: bool = True) -> dict[str, float]:
    """Client CPU per GET, HEAD and LIST page (1,000 keys) against moto (kept alive, as
    S3 keeps connections); ``fast_reads=False``: every request through botocore
    (``python -m bench.scale cpu botocore``)."""
    from bench.s3 import FastMoto

    with tempfile.TemporaryDirectory() as workdir:
        for i in range(count):
            folder = Path(workdir) / "k" / f"{i:06d}"
            folder.mkdir(parents=True)
            (folder / "data").write_bytes(b"{}" * 300)  # a manifest's size
        moto = FastMoto(load=("cpu", "p", workdir), keep_alive=True)
        moto.start(timeout_s=600.0)
        try:
            return asyncio.run(_cpu_sample(moto.url, count, fast_reads))
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
        fast_reads = sys.argv[2:3] != ["botocore"]
        print(json.dumps(measure_cpu(fast_reads=fast_reads), indent=2))
        return 0
    print(json.dumps(model(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
