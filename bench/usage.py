"""``python -m bench.usage``: ``regcleaner usage`` on synthetic registries.

- the figure: 2,000 repositories of 32 manifests (64,000), every image with a layer of
  its own (so exclusive and reclaimable bytes are not zero): wall time and peak memory;
- memory follows the largest repository, not the registry: the same repositories at a
  quarter of the count must peak within a few MB of the full run;
- ``--manifests N``: one run at N manifests (not part of ``make bench``);
- ``--ledger N``: the cross-repository part alone (the SQLite ledger) fed N revisions
  in repositories of 32, each revision with a manifest, a config, a layer of its own and
  its team's shared base layer: its time and memory at a million revisions, where
  writing the files of a synthetic registry would take hours on a small machine.

The numbers are checked against what the generator wrote: nothing is shared between
repositories, the reclaimable bytes are exactly the untagged history's own blobs.
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

from bench import compile_regcleaner
from bench.generate import SyntheticRegistry, generate

PER_REPOSITORY = 32


def run_usage(root: Path) -> tuple[float, dict[str, Any]]:
    """``regcleaner usage --output json`` in a subprocess; (wall seconds, document)."""
    command = [sys.executable, "-m", "regcleaner.usage", "usage", "--registry-dir", str(root),
               "--output", "json", "--min-age", "0", "--progress-interval", "0"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"usage exited {done.returncode}: {done.stderr[-2000:]}")
    document: dict[str, Any] = json.loads(done.stdout)
    return elapsed, document


def expected_reclaimable(synthetic: SyntheticRegistry) -> int:
    """Bytes of the history's manifests and their own layers (generate's own_layers)."""
    base = synthetic.root / "docker/registry/v2/blobs/sha256"
    total = 0
    for _, digest in synthetic.history:
        data = (base / digest[7:9] / digest[7:] / "data").read_bytes()
        total += len(data)
        document = json.loads(data)
        for layer in document.get("layers", []):
            hex_part = layer["digest"][7:]
            total += (base / hex_part[:2] / hex_part / "data").stat().st_size
    return total


def case(workdir: Path, repositories: int, *, check: bool = True) -> dict[str, Any]:
    root = workdir / f"registry-{repositories}"
    started = time.perf_counter()
    synthetic = generate(root, repositories, PER_REPOSITORY, own_layers=True)
    generated_s = time.perf_counter() - started
    wall, document = run_usage(root)
    totals = document["totals"]
    if check:
        assert totals["shared_bytes"] == 0, totals
        assert totals["manifests"] == synthetic.manifests, totals
        assert totals["reclaimable_bytes"] == expected_reclaimable(synthetic), totals
        rows = document["repositories"]
        assert sum(r["reclaimable_bytes"] for r in rows) == totals["reclaimable_bytes"]
        assert all(r["exclusive_bytes"] == r["referenced_bytes"] for r in rows)
    result = {
        "repositories": repositories,
        "manifests": synthetic.manifests,
        "blobs": totals["blobs"],
        "generate_s": round(generated_s, 1),
        "wall_s": round(wall, 2),
        "manifests_per_s": round(synthetic.manifests / wall),
        "peak_rss_mb": document["peak_rss_mb"],
    }
    shutil.rmtree(root, ignore_errors=True)
    return result


def ledger_case(revisions: int) -> dict[str, Any]:
    """Feed the ledger ``revisions`` revisions as the scan would; time and peak memory."""
    from regcleaner.reporting.console import peak_rss_mb
    from regcleaner.usage.ledger import RepositoryCounts, UsageLedger

    def key(*parts: object) -> int:
        digest = hashlib.sha256(repr(parts).encode()).digest()
        return int.from_bytes(digest[:8], "big") - (1 << 63)

    started = time.perf_counter()
    ledger = UsageLedger()
    try:
        repositories = max(1, revisions // PER_REPOSITORY)
        for team in range(50):
            ledger.add_blobs([(key("base", team), 30_000_000)])
        for number in range(repositories):
            referenced: set[int] = {key("base", number % 50)}
            kept: set[int] = {key("base", number % 50)}
            blobs: list[tuple[int, int]] = []
            for revision in range(PER_REPOSITORY):
                own = [key(number, revision, part) for part in ("manifest", "config", "layer")]
                blobs += [(own[0], 1_000), (own[1], 5_000), (own[2], 2_000_000 + revision)]
                referenced.update(own)
                if revision >= PER_REPOSITORY - 9:  # the newest nine stay
                    kept.update(own)
            ledger.add_blobs(blobs)
            counts = RepositoryCounts(f"team{number % 50}/app{number}", manifests=PER_REPOSITORY)
            ledger.add_repository(counts, referenced, kept)
        totals = ledger.settle()
        shown = sum(1 for _ in ledger.repositories())
    finally:
        ledger.close()
    wall = time.perf_counter() - started
    assert shown == repositories
    return {
        "ledger_revisions": repositories * PER_REPOSITORY,
        "repositories": repositories,
        "blobs": totals.blobs,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifests", type=int, default=None,
                        help="one run at this many manifests instead of the figure")  # fmt: skip
    parser.add_argument("--ledger", type=int, default=None,
                        help="the ledger alone, fed this many revisions")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.ledger is not None:
        print(json.dumps(ledger_case(args.ledger)))
        return 0
    compile_regcleaner()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-usage-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.manifests is not None:
            print(json.dumps(case(workdir, max(1, args.manifests // PER_REPOSITORY),
                                  check=False)), flush=True)  # fmt: skip
            return 0
        small = case(workdir, 500)
        print(json.dumps(small), flush=True)
        large = case(workdir, 2000)
        print(json.dumps(large), flush=True)
        # Memory follows the largest repository: four times the registry, about the same
        # peak (the ledger's SQLite page cache, 16 MB at most, is what grows).
        assert large["peak_rss_mb"] < small["peak_rss_mb"] + 20, (small, large)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
