"""``python -m bench.retention``: planning cost of tag retention, linear in tags.

One repository of N tags (each on an image of its own), a policy with a pattern rule,
a newest-N rule and a pushed_within rule; the time to decide every tag and plan the
repository (``tagplan.plan_with_tags``), at N = 10,000 and 100,000. Pure CPU, no I/O.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from regcleaner import mediatypes
from regcleaner.digest import Digest
from regcleaner.manifests import Descriptor, ManifestInfo, ManifestKind, ManifestRefs
from regcleaner.planner import Policy
from regcleaner.policyfile import parse_policy
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.tagplan import plan_with_tags

POLICY = """
policies:
  - repositories: ["**"]
    keep:
      - tags: ["^v[0-9]+\\\\.[0-9]+\\\\.0$"]
      - tags: ["^main-"]
        newest: 50
      - pushed_within: 7d
"""
NOW = 1_800_000_000.0


def measure(tags: int) -> dict[str, float]:
    manifests: dict[Digest, ManifestInfo] = {}
    revisions: dict[Digest, float] = {}
    tag_links: dict[str, Digest] = {}
    times: dict[str, float] = {}
    layer = Descriptor(Digest("sha256:" + "1" * 64), 10)
    for n in range(tags):
        digest = Digest(f"sha256:{n:064x}")
        manifests[digest] = ManifestRefs(ManifestKind.IMAGE, mediatypes.OCI_MANIFEST,
                                         blobs=(layer,), size=400)  # fmt: skip
        revisions[digest] = NOW - 86400 * 30
        name = f"main-{n}" if n % 3 else f"v{n // 1000}.{n % 1000}.0"
        tag_links[name] = digest
        times[name] = NOW - n * 60.0  # one a minute: the last 7 days hold ~10,000
    snapshot = RepositorySnapshot("app", revisions, tag_links, tag_times=times)
    policy = parse_policy(POLICY).for_repository("app")
    started = time.perf_counter()
    plan, tag_plan = plan_with_tags(snapshot, manifests, Policy(), NOW, tag_policy=policy,
                                    prune_orphan_signatures=False)  # fmt: skip
    elapsed = time.perf_counter() - started
    print(f"{tags:>7,} tags: planned in {elapsed:.2f}s; {len(tag_plan.kept):,} kept, "
          f"{len(tag_plan.going):,} expire, {len(plan.delete):,} manifests to delete",
          flush=True)  # fmt: skip
    return {"tags": tags, "seconds": round(elapsed, 3), "kept": len(tag_plan.kept),
            "expired": len(tag_plan.going)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument("--tags", type=int, action="append")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = [measure(n) for n in (args.tags or [10_000, 100_000])]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
