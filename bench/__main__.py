"""``make bench``: regcleaner against the registry's own DELETE floor, in one run.

For each size: generate a synthetic registry on disk, then on fresh hard-linked copies
of it (DELETE only unlinks, so copies are independent):

1. the floor: a minimal aiohttp client deletes exactly the untagged history through the
   real registry (distribution 2.8.2 and 3.1.1: ``--registry``, default both), at a few
   concurrency levels; the best counts;
2. regcleaner's full run (scan + plan + delete) as a subprocess;
3. regcleaner's dry run beside a bare walk of ``repositories/`` that reads every
   manifest blob with plain Python;

then checks the outcome (nothing in use lost, all history gone) and prints ratios,
regcleaner's peak RSS and DELETE requests per deleted manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import compile_regcleaner, linked_copy, run_cli
from bench.floor import delete_floor
from bench.generate import SyntheticRegistry, generate, remaining_revisions
from testkit.registry import FLAVOURS, V2, Flavour, RegistryProcess

SIZES = {"small": (200, 32), "medium": (2000, 32), "1m": (10_000, 100)}
# The registry the current size is measured on (main sets it for each of --registry).
registry_flavour: Flavour = V2


def registry_at(workdir: Path) -> RegistryProcess:
    """A registry of the current flavour over ``workdir/storage``."""
    return RegistryProcess(workdir, flavour=registry_flavour)


@dataclass
class SizeResult:
    """Everything measured for one registry size."""

    repositories: int
    manifests: int
    history: int
    generate_s: float
    floor_s: float
    floor_runs: dict[int, float]
    full_s: float
    full_rss_mb: float
    full_requests: int
    dry_s: float
    dry_rss_mb: float
    walk_s: float
    verified: bool
    rounds: int
    ratio_min: float
    ratio_max: float
    floor_cpu_s: float
    """The floor client's own CPU seconds (user + system), median over the rounds."""
    full_cpu_s: float
    """regcleaner's CPU seconds, median over the rounds: on a machine the registry keeps
    busy, the client's CPU is taken from the registry, so this explains the ratio."""

    @property
    def full_over_floor(self) -> float:
        return self.full_s / self.floor_s

    @property
    def dry_over_walk(self) -> float:
        return self.dry_s / self.walk_s


def remove_tree(path: Path) -> None:
    """``rm -rf`` (shutil.rmtree spent over 6 minutes on the 1M-revision tree)."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


def children_cpu() -> float:
    """CPU seconds of the children reaped so far (the floor and regcleaner processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_walk(root: Path) -> float:
    """Walk repositories/ and read every revision's manifest blob with plain Python."""
    started = time.perf_counter()
    base = root / "docker/registry/v2"
    repositories = str(base / "repositories")
    blobs = str(base / "blobs/sha256")
    count = 0
    for directory, subdirs, _ in os.walk(repositories):
        if directory.endswith("/_manifests/revisions/sha256"):
            for hex_part in subdirs:
                with open(os.path.join(directory, hex_part, "link"), "rb") as link:
                    link.read()
                with open(f"{blobs}/{hex_part[:2]}/{hex_part}/data", "rb") as blob:
                    blob.read()
                count += 1
            subdirs[:] = []
        elif directory.endswith("/_manifests"):
            subdirs[:] = [d for d in subdirs if d in ("revisions", "tags")]
        else:
            subdirs[:] = [d for d in subdirs if d not in ("_layers", "_uploads")]
    return time.perf_counter() - started


def run_regcleaner(args: list[str]) -> tuple[float, float, dict[str, object]]:
    """Run ``clean ARGS`` as a subprocess; (wall seconds, peak RSS MB, JSON report)."""
    elapsed, document = run_cli(["clean", *args, "--min-age", "0"])
    # The report's VmHWM: the child's ru_maxrss would include this (large) parent.
    summary = document["summary"]
    assert isinstance(summary, dict)
    return elapsed, float(summary["peak_rss_mb"]), document


def run_floor(
    workdir: Path,
    base: Path,
    synthetic: SyntheticRegistry,
    levels: list[int],
    floor_runs: dict[int, float],
    round_number: int,
    cpu: list[float] | None = None,
) -> float:
    """The floor at each concurrency level on fresh copies; the best wall time (its CPU
    seconds are appended to ``cpu``)."""
    best = float("inf")
    best_cpu = 0.0
    for level in levels:
        copy = workdir / f"floor-{level}"
        linked_copy(base, copy / "storage")
        registry = registry_at(copy)
        registry.start()
        try:
            cpu_before = children_cpu()
            seconds, statuses = delete_floor(registry.url, synthetic.history, level, workdir)
            used_cpu = children_cpu() - cpu_before
        finally:
            registry.stop()
        shutil.rmtree(copy)
        if statuses.get(202) != len(synthetic.history):
            raise RuntimeError(f"floor run at {level} got {dict(statuses)}")
        floor_runs[level] = min(seconds, floor_runs.get(level, float("inf")))
        if seconds < best:
            best, best_cpu = seconds, used_cpu
        print(
            f"  {f'round {round_number}' if round_number else 'calibration'}: floor at "
            f"concurrency {level}: {seconds:.2f}s "
            f"({len(synthetic.history) / seconds:,.0f} DELETE/s)",
            flush=True,
        )
    if cpu is not None:
        cpu.append(best_cpu)
    return best


def measure(
    workdir: Path,
    repositories: int,
    per_repo: int,
    levels: list[int],
    rounds: int,
    dry_only: bool = False,
) -> SizeResult:
    base = workdir / "base" / "storage"
    started = time.perf_counter()
    synthetic: SyntheticRegistry = generate(base, repositories, per_repo)
    generate_s = time.perf_counter() - started
    print(
        f"  generated {synthetic.manifests:,} manifests in {repositories:,} repositories "
        f"({len(synthetic.history):,} untagged history) in {generate_s:.1f}s",
        flush=True,
    )

    # Floor and full runs alternate, round by round, so that drift in the machine's
    # speed (this is a shared VM: steal time moves by tens of percent) hits both alike.
    floor_runs: dict[int, float] = {}
    rounds_floor: list[float] = []
    rounds_full: list[float] = []
    cpu_floor: list[float] = []
    cpu_full: list[float] = []
    full_rss = 0.0
    requests = 0
    verified = True
    if len(levels) > 1 and not dry_only:
        # Calibration: every level once, then the rounds use the fastest. Taking the best
        # of several floor runs in each round would compare a minimum of noisy samples
        # with a single regcleaner run, a bias of its own.
        run_floor(workdir, base, synthetic, levels, floor_runs, 0)
        levels = [min(floor_runs, key=lambda level: floor_runs[level])]
        print(f"  the floor's rounds use concurrency {levels[0]}", flush=True)
    for round_number in range(1, 0 if dry_only else rounds + 1):
        # Odd rounds run the floor first, even rounds regcleaner first: a drift in the
        # machine's speed within a round then favours neither side.
        steps = ["floor", "full"] if round_number % 2 else ["full", "floor"]
        best = full_s = float("inf")
        for step in steps:
            if step == "floor":
                best = run_floor(
                    workdir, base, synthetic, levels, floor_runs, round_number, cpu_floor
                )
                continue
            copy = workdir / "full"
            linked_copy(base, copy / "storage")
            registry = registry_at(copy)
            registry.start()
            try:
                cpu_before = children_cpu()
                full_s, rss, report = run_regcleaner(
                    ["--registry-url", registry.url, "--registry-dir", str(copy / "storage")]
                )
                cpu_full.append(children_cpu() - cpu_before)
            finally:
                registry.stop()
            summary = report["summary"]
            assert isinstance(summary, dict)
            remaining = remaining_revisions(copy / "storage")
            ok = set(synthetic.in_use) <= remaining and not (set(synthetic.history) & remaining)
            verified = verified and ok and summary["deleted"] == len(synthetic.history)
            full_rss = max(full_rss, rss)
            requests = int(summary["delete_requests"])
            shutil.rmtree(copy)
            print(
                f"  round {round_number}: regcleaner full run {full_s:.2f}s, peak RSS "
                f"{rss:.0f} MB, deleted {summary['deleted']:,}, verified={ok}",
                flush=True,
            )
        rounds_floor.append(best)
        rounds_full.append(full_s)
        print(f"  round {round_number}: full/floor x{full_s / best:.3f}", flush=True)
    # The round whose full/floor ratio is the median stands for the size.
    by_ratio = sorted(zip(rounds_full, rounds_floor, strict=True), key=lambda r: r[0] / r[1])
    median_full, median_floor = by_ratio[len(by_ratio) // 2] if by_ratio else (0.0, 1.0)
    ratios = [f / b for f, b in by_ratio] or [0.0]

    walk_s = min(bare_walk(base) for _ in range(1 if synthetic.manifests > 100_000 else 2))
    # No URL: the dry run measured here is the storage walk and the plan (a dry run with
    # a URL checks the registry too, and there is none serving this copy).
    dry_s, dry_rss, dry_report = run_regcleaner(["--registry-dir", str(base), "--dry-run"])
    dry_summary = dry_report["summary"]
    assert isinstance(dry_summary, dict)
    verified = verified and dry_summary["would_delete"] == len(synthetic.history)
    print(
        f"  dry run {dry_s:.2f}s (peak RSS {dry_rss:.0f} MB) vs bare walk+read {walk_s:.2f}s",
        flush=True,
    )
    remove_tree(workdir / "base")
    return SizeResult(
        repositories=repositories, manifests=synthetic.manifests,
        history=len(synthetic.history), generate_s=generate_s,
        floor_s=median_floor, floor_runs=floor_runs,
        full_s=median_full, full_rss_mb=full_rss, full_requests=requests,
        rounds=len(ratios), ratio_min=ratios[0], ratio_max=ratios[-1],
        floor_cpu_s=statistics.median(cpu_floor) if cpu_floor else 0.0,
        full_cpu_s=statistics.median(cpu_full) if cpu_full else 0.0,
        dry_s=dry_s, dry_rss_mb=dry_rss, walk_s=walk_s, verified=verified,
    )  # fmt: skip


def default_workdir(sizes: list[str]) -> Path:
    """tmpfs takes the block device out of the measurement, when it fits (~20 KiB a
    manifest in tmpfs pages)."""
    largest = max(
        (SIZES[s][0] * SIZES[s][1] if s in SIZES else int(s.split("x")[0]) * int(s.split("x")[1]))
        for s in sizes
    )
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > largest * 20 * 1024 * 3:
        return Path(tempfile.mkdtemp(prefix="regcleaner-bench-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="regcleaner-bench-"))


def main() -> int:
    global registry_flavour
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size", action="append",
        help="small (200x32), medium (2000x32), 1m (10000x100) or REPOSxPER_REPO; repeatable",
    )  # fmt: skip
    parser.add_argument("--levels", default="8,32", help="floor concurrency levels")
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="floor/full rounds (default 5 up to 10,000 manifests, 3 up to 100,000, else 1)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="default: a folder in /dev/shm if it has room, else in /tmp",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--dry-only", action="store_true", help="skip the delete rounds: scan speed and memory"
    )
    parser.add_argument("--registry", choices=[*FLAVOURS, "both"], default="both",
                        help="the registry to measure against (default: both)")  # fmt: skip
    args = parser.parse_args()
    flavours: list[Flavour] = list(FLAVOURS) if args.registry == "both" else [args.registry]
    compile_regcleaner()
    sizes = args.size or ["small", "medium"]
    levels = [int(x) for x in args.levels.split(",")]
    workdir = args.workdir or default_workdir(sizes)
    results: dict[str, SizeResult] = {}
    failed = False
    try:
        for flavour, size in ((f, size) for f in flavours for size in sizes):
            registry_flavour = flavour
            if size in SIZES:
                repositories, per_repo = SIZES[size]
            else:
                repositories, per_repo = (int(x) for x in size.lower().split("x"))
            print(f"size {size}, registry {flavour}: {repositories:,} repositories x "
                  f"{per_repo} manifests", flush=True)  # fmt: skip
            manifests = repositories * per_repo
            rounds = args.rounds or (5 if manifests <= 10_000 else 3 if manifests <= 100_000 else 1)
            result = measure(workdir / size, repositories, per_repo, levels, rounds, args.dry_only)
            results[f"{size}@{flavour[0]}" if len(flavours) > 1 else size] = result
            failed |= not result.verified
    finally:
        remove_tree(workdir)

    print()
    header = (
        f"{'size':>8} {'manifests':>10} {'floor s':>8} {'full s':>8} {'full/floor':>10} "
        f"{'dry s':>7} {'walk s':>7} {'dry/walk':>8} {'RSS MB':>7} {'dry RSS':>7} "
        f"{'req/del':>7} ok"
    )
    print(header)
    for size, r in results.items():
        print(
            f"{size:>8} {r.manifests:>10,} {r.floor_s:>8.2f} {r.full_s:>8.2f} "
            f"{r.full_over_floor:>10.3f} {r.dry_s:>7.2f} {r.walk_s:>7.2f} "
            f"{r.dry_over_walk:>8.2f} {r.full_rss_mb:>7.0f} {r.dry_rss_mb:>7.0f} "
            f"{r.full_requests / max(r.history, 1):>7.3f} {'yes' if r.verified else 'NO'}"
        )
        if r.rounds > 1:
            print(
                f"{'':>8} full/floor over {r.rounds} rounds: median {r.full_over_floor:.3f}, "
                f"range {r.ratio_min:.3f}-{r.ratio_max:.3f}"
            )
        if r.full_cpu_s:
            print(
                f"{'':>8} client CPU seconds (median): floor {r.floor_cpu_s:.2f}, "
                f"regcleaner {r.full_cpu_s:.2f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    k: {
                        **asdict(v),
                        "full_over_floor": v.full_over_floor,
                        "dry_over_walk": v.dry_over_walk,
                    }
                    for k, v in results.items()
                },
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
