"""``python -m bench.ab REF``: this checkout's ``clean`` against another commit's, A/B.

Both run through the API against the real registry on fresh hard-linked copies of one
synthetic registry, in alternating order (odd rounds this checkout first), so a drift
of the machine's speed favours neither. Prints each round's wall time and client CPU
seconds (the regcleaner process alone) and the medians. The other commit is checked
out into a temporary git worktree, with its bytecode compiled like this checkout's.
Client CPU is the steadier figure: on 2 cores the registry needs what the client takes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import compile_regcleaner, linked_copy, run_cli
from bench.__main__ import children_cpu
from bench.generate import generate
from testkit.registry import RegistryProcess

HERE = Path(__file__).resolve().parent.parent


def one_run(code: Path, work: Path, base: Path) -> tuple[float, float, int]:
    copy = work / "copy"
    linked_copy(base, copy / "storage")
    registry = RegistryProcess(copy)
    registry.start()
    try:
        cpu_before = children_cpu()
        wall, report = run_cli(
            ["clean", "--registry-url", registry.url, "--registry-dir", str(copy / "storage"),
             "--min-age", "0"], cwd=code,
        )  # fmt: skip
        cpu = children_cpu() - cpu_before
    finally:
        registry.stop()
    subprocess.run(["rm", "-rf", "--", str(copy)], check=True)
    return wall, cpu, int(report["summary"]["deleted"])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("ref", help="the commit to compare with (e.g. 90bd132)")
    parser.add_argument("--repositories", type=int, default=200)
    parser.add_argument("--per-repo", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    compile_regcleaner()
    work = Path(tempfile.mkdtemp(prefix="regcleaner-bench-ab-", dir="/dev/shm"))
    other = work / "other"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(other),
                    args.ref], check=True)  # fmt: skip
    try:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(other / "regcleaner")],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        base = work / "base"
        generate(base, args.repositories, args.per_repo)
        codes = {"this": HERE, args.ref: other}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in codes}
        for number in range(1, args.rounds + 1):
            order = list(codes) if number % 2 else list(reversed(codes))
            for name in order:
                wall, cpu, deleted = one_run(codes[name], work, base)
                results[name].append((wall, cpu))
                print(f"round {number}: {name}: wall {wall:.2f}s, client CPU {cpu:.2f}s, "
                      f"deleted {deleted:,}", flush=True)  # fmt: skip
        for name, runs in results.items():
            print(f"{name}: median wall {statistics.median(w for w, _ in runs):.2f}s, "
                  f"median client CPU {statistics.median(c for _, c in runs):.2f}s")  # fmt: skip
    finally:
        subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(other)],
                       check=False)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
