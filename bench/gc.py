"""``python -m bench.gc``: ``regcleaner gc`` against the registry's ``garbage-collect``
(distribution 2.8.2 and 3.1.1: ``--registry``, default both).

Side by side in one run, on identical copies of one synthetic registry whose untagged
history was already deleted (its revision links gone, its blobs still there):

- ``disk``: 300 repositories, each image with a layer of its own;
- ``s3``: moto behind a proxy that adds 20 ms to every request, for the registry's s3
  driver and regcleaner alike (distribution's gc waits for each request before the next);
- ``--blobs N``: peak memory of ``regcleaner gc`` on a registry of N blobs, half of them
  referenced (``--blobs 1000000`` for the figure in the docs; not part of ``make bench``).

After each pair, the blobs left must be the same set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import compile_regcleaner, run_cli
from bench.direct import upload
from bench.generate import SyntheticRegistry, generate
from testkit.latency import LatencyProxy
from testkit.registry import FLAVOURS, Flavour, RegistryProcess
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

V2 = "docker/registry/v2"


def regcleaner_gc(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[float, dict[str, Any]]:
    """Run ``regcleaner gc ARGS``; (wall seconds, JSON report)."""
    return run_cli(["gc", "--registry-stopped", *args], env=env)


def forget_history(root: Path, synthetic: SyntheticRegistry) -> None:
    """Delete the history's revision links, as the registry's DELETE does."""
    for repo, digest in synthetic.history:
        link = (
            root / V2 / "repositories" / repo / "_manifests/revisions/sha256" / digest[7:] / "link"
        )
        link.unlink()


def blobs_on_disk(root: Path) -> set[str]:
    return {p.parent.name for p in (root / V2 / "blobs").rglob("data")}


def disk_case(workdir: Path, repositories: int, flavour: Flavour) -> dict[str, Any]:
    base = workdir / "disk-base"
    synthetic = generate(base, repositories, 32, own_layers=True)
    forget_history(base, synthetic)
    before = len(blobs_on_disk(base))
    theirs = RegistryProcess(workdir / "disk-registry", flavour=flavour)
    shutil.rmtree(theirs.root)
    shutil.copytree(base, theirs.root)
    ours = workdir / "disk-ours"
    shutil.copytree(base, ours)
    print(f"disk, registry {flavour}: {repositories} repositories, {before:,} blobs", flush=True)
    started = time.perf_counter()
    theirs.garbage_collect()
    registry_s = time.perf_counter() - started
    ours_s, report = regcleaner_gc(["--registry-dir", str(ours)])
    left_theirs, left_ours = blobs_on_disk(theirs.root), blobs_on_disk(ours)
    same = left_theirs == left_ours
    print(f"  registry {flavour} garbage-collect: {registry_s:.2f}s; regcleaner gc: {ours_s:.2f}s "
          f"(x{registry_s / ours_s:.1f}); {before - len(left_ours):,} swept; same blobs left: "
          f"{same}", flush=True)  # fmt: skip
    for path in (base, theirs.workdir, ours):
        shutil.rmtree(path, ignore_errors=True)
    return {
        "case": "disk", "registry": flavour, "repositories": repositories, "blobs": before,
        "swept": report["summary"]["blobs_swept"], "registry_s": round(registry_s, 3),
        "regcleaner_s": round(ours_s, 3), "speedup": round(registry_s / ours_s, 2),
        "peak_rss_mb": report["summary"]["peak_rss_mb"], "same_blobs_left": same,
    }  # fmt: skip


def bucket_blobs(moto: MotoS3, bucket: str) -> set[str]:
    found: set[str] = set()
    paginator = moto.client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"root/{V2}/blobs/"):
        found |= {item["Key"].rsplit("/", 2)[-2] for item in page.get("Contents", [])
                  if item["Key"].endswith("/data")}  # fmt: skip
    return found


def s3_case(workdir: Path, repositories: int, delay_s: float, flavour: Flavour) -> dict[str, Any]:
    base = workdir / "s3-base"
    synthetic = generate(base, repositories, 32, own_layers=True)
    forget_history(base, synthetic)
    moto = MotoS3(own_process=True)
    moto.start()
    proxy = LatencyProxy(moto.url, delay_s)
    proxy.start()
    try:
        for bucket in ("theirs", "ours"):
            upload(moto, bucket, base)
        before = len(bucket_blobs(moto, "ours"))
        print(f"s3, registry {flavour}: {repositories} repositories, {before:,} blobs, "
              f"{1000 * delay_s:.0f} ms a request", flush=True)  # fmt: skip
        storage = moto.registry_storage("theirs", "/root")
        storage["s3"]["regionendpoint"] = proxy.url
        registry = RegistryProcess(workdir / "s3-registry", flavour=flavour, storage=storage)
        proxy.requests.clear()
        started = time.perf_counter()
        registry.garbage_collect()
        registry_s = time.perf_counter() - started
        registry_requests = sum(proxy.requests.values())
        env = {**os.environ, "ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
        proxy.requests.clear()
        ours_s, report = regcleaner_gc(
            ["--storage", "s3", "--bucket", "ours", "--registry-dir", "/root", "--region",
             REGION, "--s3-endpoint", proxy.url], env,
        )  # fmt: skip
        ours_requests = sum(proxy.requests.values())
        same = bucket_blobs(moto, "theirs") == bucket_blobs(moto, "ours")
        print(f"  registry {flavour} garbage-collect: {registry_s:.2f}s ({registry_requests:,} "
              f"requests); regcleaner gc: {ours_s:.2f}s ({ours_requests:,} requests): "
              f"x{registry_s / ours_s:.1f}; same blobs left: {same}", flush=True)  # fmt: skip
    finally:
        proxy.stop()
        moto.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "case": "s3", "registry": flavour, "repositories": repositories, "blobs": before,
        "swept": report["summary"]["blobs_swept"], "registry_s": round(registry_s, 3),
        "registry_requests": registry_requests, "regcleaner_s": round(ours_s, 3),
        "regcleaner_requests": ours_requests, "speedup": round(registry_s / ours_s, 1),
        "same_blobs_left": same,
    }  # fmt: skip


def memory_case(workdir: Path, blobs: int) -> dict[str, Any]:
    """N blobs, half of them layers of 1,000-layer images in 10 repositories."""
    root = workdir / "mem"
    v2 = root / V2
    started = time.perf_counter()
    referenced: list[tuple[str, int]] = []
    made: set[str] = set()
    for n in range(blobs):
        data = f"blob {n}".encode()
        hex_part = hashlib.sha256(data).hexdigest()
        folder = v2 / "blobs/sha256" / hex_part[:2] / hex_part
        if hex_part[:2] not in made:
            (v2 / "blobs/sha256" / hex_part[:2]).mkdir(parents=True, exist_ok=True)
            made.add(hex_part[:2])
        folder.mkdir()
        (folder / "data").write_bytes(data)
        if n % 2 == 0:
            referenced.append(("sha256:" + hex_part, len(data)))
    per_image = 1000
    for i in range(0, len(referenced), per_image):
        layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
                   "size": s} for d, s in referenced[i : i + per_image]]  # fmt: skip
        document = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": layers[0], "layers": layers}  # fmt: skip
        data = json.dumps(document).encode()
        hex_part = hashlib.sha256(data).hexdigest()
        folder = v2 / "blobs/sha256" / hex_part[:2] / hex_part
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").write_bytes(data)
        revision = v2 / f"repositories/mem/r{i % 10}/_manifests/revisions/sha256/{hex_part}"
        revision.mkdir(parents=True)
        (revision / "link").write_text("sha256:" + hex_part)
    print(f"memory: {blobs:,} blobs written in {time.perf_counter() - started:.0f}s", flush=True)
    ours_s, report = regcleaner_gc(["--registry-dir", str(root)])
    summary = report["summary"]
    print(f"  regcleaner gc: {ours_s:.1f}s, {summary['blobs_swept']:,} swept, "
          f"peak RSS {summary['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    subprocess.run(["rm", "-rf", "--", str(root)], check=False)
    return {"case": "memory", "blobs": summary["blobs"], "swept": summary["blobs_swept"],
            "regcleaner_s": round(ours_s, 1), "peak_rss_mb": summary["peak_rss_mb"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gc", description=__doc__)
    parser.add_argument("--case", action="append", choices=["disk", "s3"])
    parser.add_argument("--repositories", type=int, default=300)
    parser.add_argument("--s3-repositories", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--blobs", type=int, default=0, help="only the memory case, N blobs")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--registry", choices=[*FLAVOURS, "both"], default="both",
                        help="whose garbage-collect to compare with (default: both)")  # fmt: skip
    args = parser.parse_args()
    flavours: list[Flavour] = list(FLAVOURS) if args.registry == "both" else [args.registry]
    compile_regcleaner()
    workdir = Path(tempfile.mkdtemp(prefix="regcleaner-bench-gc-", dir="/dev/shm"))
    results = []
    try:
        if args.blobs:
            results.append(memory_case(workdir, args.blobs))
        else:
            cases = args.case or ["disk", "s3"]
            for flavour in flavours:
                if "disk" in cases:
                    results.append(disk_case(workdir, args.repositories, flavour))
                if "s3" in cases:
                    delay_s = args.delay_ms / 1000
                    results.append(s3_case(workdir, args.s3_repositories, delay_s, flavour))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("same_blobs_left", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
