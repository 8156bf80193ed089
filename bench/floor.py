"""The delete floor: the least a client can do to delete a list of digests.

Run as its own process (``python -m bench.floor URL ITEMS CONCURRENCY``), so that its
wall time, like regcleaner's, includes starting Python and importing aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp


async def _delete_all(url: str, items: list[tuple[str, str]], concurrency: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    position = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal position
            while position < len(items):
                repo, digest = items[position]
                position += 1
                async with session.delete(f"{url}/v2/{repo}/manifests/{digest}") as response:
                    await response.read()
                    statuses[response.status] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def delete_floor(
    url: str, items: list[tuple[str, str]], concurrency: int, workdir: Path
) -> tuple[float, Counter[int]]:
    """Delete ``items`` from a fresh process; (wall seconds including startup, statuses)."""
    listing = workdir / "floor-items.txt"
    listing.write_text("".join(f"{repo} {digest}\n" for repo, digest in items))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.floor", url, str(listing), str(concurrency)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    listing.unlink()
    return elapsed, Counter({int(k): v for k, v in json.loads(done.stdout).items()})


def main() -> None:
    url, listing, concurrency = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    items = [tuple(line.split()) for line in listing.read_text().splitlines()]
    statuses = asyncio.run(_delete_all(url, items, concurrency))  # type: ignore[arg-type]
    print(json.dumps(statuses))


if __name__ == "__main__":
    main()
