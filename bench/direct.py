"""``python -m bench.direct``: ``clean --direct`` against the registry's DELETE floor.

Side by side in one run, on fresh hard-linked copies of one synthetic registry:

- ``tags``: one repository of 5,000 manifests, 1,000 of them tagged (every DELETE makes
  the registry read all 1,000 tags): the floor client deletes the 4,000 untagged
  manifests through the real registry; ``clean --direct --registry-stopped`` removes the
  same from storage.
- ``small``: 200 repositories x 32 manifests (the API benchmark's small size).
- ``s3``: moto behind a proxy that adds 20 ms to every request, for the registry's s3
  driver and for regcleaner alike: ``clean`` through the API against ``clean --direct``
  on two identical buckets, with the S3 write requests per deleted manifest and every
  S3 request both sides made (the registry's own, counted by the proxy).
- ``s3-tags``: the same with repositories of many tags (default 2 repositories of 150
  manifests, 50 of them tagged), where the registry reads every tag of the repository
  on each DELETE.
- ``s3-warm``: the ``s3`` case as an operator runs the window (docs/scale.md): each side
  first makes a dry run with a scan cache of its own (not timed), then the timed run
  uses that cache; the requests counted are the timed run's.

moto is a Python server and runs in a process of its own; on this 2-core machine it
answers a few hundred requests a second, so the S3 cases are bound by moto's CPU, not
by the 20 ms: the wall-time ratio then follows the ratio of requests made.

Each run is checked: everything in use is still there and all the history is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import compile_regcleaner, linked_copy, run_cli
from bench.floor import delete_floor
from bench.generate import (
    SyntheticRegistry,
    generate,
    generate_tagged_repositories,
    generate_tagged_repository,
    remaining_revisions,
)
from testkit.latency import LatencyProxy
from testkit.registry import FLAVOURS, Flavour, RegistryProcess
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3


def regcleaner(args: list[str], env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """Run ``regcleaner clean ARGS`` as a subprocess; (wall seconds, JSON report)."""
    return run_cli(["clean", *args, "--min-age", "0"], env=env)


def verified(root: Path, synthetic: SyntheticRegistry) -> bool:
    remaining = remaining_revisions(root)
    return set(synthetic.in_use) <= remaining and not (set(synthetic.history) & remaining)


def disk_case(
    workdir: Path,
    label: str,
    make: Callable[[Path], SyntheticRegistry],
    concurrency: int,
    flavour: Flavour,
) -> dict[str, Any]:
    base = workdir / f"{label}-base"
    synthetic = make(base)
    print(f"{label}: {synthetic.manifests:,} manifests, {len(synthetic.history):,} history",
          flush=True)  # fmt: skip
    floor_copy = workdir / f"{label}-floor"
    linked_copy(base, floor_copy / "storage")
    registry = RegistryProcess(floor_copy, flavour=flavour)
    registry.start()
    try:
        floor_s, statuses = delete_floor(registry.url, synthetic.history, concurrency, workdir)
    finally:
        registry.stop()
    if statuses.get(202) != len(synthetic.history):
        raise RuntimeError(f"floor got {dict(statuses)}")
    print(f"  floor (DELETE through the registry, {concurrency} in flight): {floor_s:.2f}s",
          flush=True)  # fmt: skip
    direct_copy = workdir / f"{label}-direct"
    linked_copy(base, direct_copy)
    direct_s, report = regcleaner(
        ["--direct", "--registry-stopped", "--registry-dir", str(direct_copy),
         "--no-estimate-space"]
    )  # fmt: skip
    ok = verified(direct_copy, synthetic) and report["summary"]["deleted"] == len(synthetic.history)
    print(f"  regcleaner --direct: {direct_s:.2f}s, verified={ok}: x{floor_s / direct_s:.1f}",
          flush=True)  # fmt: skip
    for path in (base, floor_copy, direct_copy):
        shutil.rmtree(path, ignore_errors=True)
    return {
        "case": label, "registry": flavour, "manifests": synthetic.manifests,
        "history": len(synthetic.history),
        "floor_s": round(floor_s, 3), "direct_s": round(direct_s, 3),
        "speedup": round(floor_s / direct_s, 1), "verified": ok,
    }  # fmt: skip


def upload(moto: MotoS3, bucket: str, root: Path) -> None:
    client = moto.client()
    client.create_bucket(Bucket=bucket)
    files = [p for p in root.rglob("*") if p.is_file()]

    def put(path: Path) -> None:
        client.put_object(Bucket=bucket, Key=f"root/{path.relative_to(root)}",
                          Body=path.read_bytes())  # fmt: skip

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files))


def bucket_revisions(moto: MotoS3, bucket: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    paginator = moto.client().get_paginator("list_objects_v2")
    prefix = "root/docker/registry/v2/repositories/"
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            repo, _, rest = item["Key"][len(prefix) :].partition("/_manifests/")
            parts = rest.split("/")
            if len(parts) == 4 and parts[0] == "revisions" and parts[3] == "link":
                found.add((repo, "sha256:" + parts[2]))
    return found


def s3_case(
    workdir: Path,
    label: str,
    make: Callable[[Path], SyntheticRegistry],
    delay_s: float,
    flavour: Flavour,
    *,
    warm: bool = False,
) -> dict[str, Any]:
    base = workdir / f"{label}-base"
    synthetic = make(base)
    moto = MotoS3(own_process=True)
    moto.start()
    proxy = LatencyProxy(moto.url, delay_s)
    proxy.start()
    try:
        for bucket in ("api", "direct"):
            upload(moto, bucket, base)
        print(f"{label}: {synthetic.manifests:,} manifests in {len(synthetic.repositories)} "
              f"repositories, {len(synthetic.history):,} history; {1000 * delay_s:.0f} ms "
              "a request", flush=True)  # fmt: skip
        env = {**os.environ, "ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
        common = ["--storage", "s3", "--registry-dir", "/root", "--region", REGION,
                  "--s3-endpoint", proxy.url, "--no-estimate-space"]  # fmt: skip
        registry = RegistryProcess(workdir / f"{label}-registry", flavour=flavour,
                                   storage=_registry_storage(moto, proxy, "api"))  # fmt: skip
        registry.start()
        api_side = ["--registry-url", registry.url, "--bucket", "api", *common]
        direct_side = ["--direct", "--registry-stopped", "--bucket", "direct", *common]
        if warm:  # each side's own dry run fills its own cache, outside the timing
            api_side += ["--cache", str(workdir / f"{label}-{flavour}-api.cache")]
            direct_side += ["--cache", str(workdir / f"{label}-{flavour}-direct.cache")]
        try:
            if warm:
                regcleaner([*api_side, "--dry-run"], env)
            before = sum(proxy.requests.values())
            api_s, api_report = regcleaner(api_side, env)
            api_requests = sum(proxy.requests.values()) - before
        finally:
            registry.stop()
        api_ok = not (set(synthetic.history) & bucket_revisions(moto, "api"))
        print(f"  regcleaner through the API: {api_s:.2f}s, verified={api_ok}, "
              f"{api_requests:,} S3 requests (registry and regcleaner)", flush=True)  # fmt: skip
        if warm:
            regcleaner([*direct_side, "--dry-run"], env)
        before = sum(proxy.requests.values())
        direct_s, report = regcleaner(direct_side, env)
        direct_requests = sum(proxy.requests.values()) - before
        for side, ran in (("API", api_report), ("--direct", report)):
            if warm and not (ran["summary"].get("scan_cache") or {}).get("used"):
                raise SystemExit(f"{label}: the timed {side} run took nothing from its cache")
        remaining = bucket_revisions(moto, "direct")
        ok = set(synthetic.in_use) <= remaining and not (set(synthetic.history) & remaining)
        requests = report["summary"]["storage_requests"]
        deleted = report["summary"]["deleted"]
        per_manifest = requests["delete"] / max(deleted, 1)
        print(f"  regcleaner --direct: {direct_s:.2f}s, verified={ok}: x{api_s / direct_s:.1f}; "
              f"{requests['delete']} DeleteObjects for {deleted:,} manifests "
              f"({per_manifest:.3f} a manifest); {direct_requests:,} S3 requests in all "
              f"(x{api_requests / max(direct_requests, 1):.1f} fewer)", flush=True)  # fmt: skip
    finally:
        proxy.stop()
        moto.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "case": label, "registry": flavour, "api_requests": api_requests,
        "direct_requests": direct_requests,
        "manifests": synthetic.manifests, "history": len(synthetic.history),
        "api_s": round(api_s, 3), "direct_s": round(direct_s, 3),
        "speedup": round(api_s / direct_s, 1), "write_requests_per_manifest":
        round(per_manifest, 4), "storage_requests": requests, "verified": ok and api_ok,
        "api_storage_requests": api_report["summary"]["storage_requests"],
    }  # fmt: skip


def _registry_storage(moto: MotoS3, proxy: LatencyProxy, bucket: str) -> dict[str, Any]:
    storage = moto.registry_storage(bucket, "/root")
    storage["s3"]["regionendpoint"] = proxy.url
    return storage


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.direct", description=__doc__)
    parser.add_argument("--case", action="append",
                        choices=["tags", "small", "s3", "s3-tags", "s3-warm"])  # fmt: skip
    parser.add_argument("--s3-repositories", type=int, default=8)
    parser.add_argument("--s3-tagged", default="2x50x150",
                        help="s3-tags: REPOSITORIESxTAGSxMANIFESTS")  # fmt: skip
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--registry", choices=[*FLAVOURS, "both"], default="both",
                        help="the registry serving the API side (default: both)")  # fmt: skip
    args = parser.parse_args()
    flavours: list[Flavour] = list(FLAVOURS) if args.registry == "both" else [args.registry]
    compile_regcleaner()
    cases = args.case or ["tags", "small", "s3", "s3-warm", "s3-tags"]
    workdir = Path(tempfile.mkdtemp(prefix="regcleaner-bench-direct-", dir="/dev/shm"))
    results = []
    try:
        delay_s = args.delay_ms / 1000
        fleet = args.s3_repositories
        count, tags, manifests = (int(x) for x in args.s3_tagged.split("x"))
        for flavour in flavours:
            print(f"registry {flavour}", flush=True)
            if "tags" in cases:
                results.append(disk_case(workdir, "tags", generate_tagged_repository, 32, flavour))
            if "small" in cases:
                results.append(disk_case(workdir, "small", lambda p: generate(p, 200, 32), 32,
                                         flavour))  # fmt: skip
            if "s3" in cases:
                results.append(s3_case(workdir, "s3", lambda p: generate(p, fleet, 32), delay_s,
                                       flavour))  # fmt: skip
            if "s3-warm" in cases:
                results.append(s3_case(workdir, "s3-warm", lambda p: generate(p, fleet, 32),
                                       delay_s, flavour, warm=True))  # fmt: skip
            if "s3-tags" in cases:
                results.append(s3_case(
                    workdir, "s3-tags",
                    lambda p: generate_tagged_repositories(p, count, tags, manifests), delay_s,
                    flavour,
                ))  # fmt: skip

    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["verified"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
