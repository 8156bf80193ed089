"""``python -m bench.events``: how many pull events a second ``events serve`` records.

The service runs as its own process on loopback with its SQLite record on local disk
(WAL, synchronous=FULL: every answer follows an fsync). A client process sends envelopes
of one manifest pull each, as distribution does (one event per POST, one POST at a time
per endpoint), in two shapes:

- ``concurrent``: many senders at once (registry replicas, or one registry's backlog after
  an outage across replicas): group commit lets them share transactions. Target ≥ 2,000/s.
- ``serial``: one sender waiting for each answer, as one registry endpoint does: every
  envelope pays a whole commit, so this is the rate one registry replica can push.

Bounded in count (``--events``) and in time (``--max-seconds`` per shape). Every event is
checked in the record afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from regcleaner.events.store import PullHistory
from regcleaner.runner import event_loop_factory
from testkit.events import EventsService

TOKEN = "bench-token"  # noqa: S105 (a loopback benchmark's own)


def envelope(number: int) -> bytes:
    digest = f"sha256:{number:064x}"
    event = {
        "id": f"bench-{number}", "timestamp": "2026-12-07T04:54:38.123456789Z", "action": "pull",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 420,
                   "digest": digest, "length": 420, "repository": f"bench/app{number % 50}",
                   "url": f"http://registry:5000/v2/bench/app{number % 50}/manifests/{digest}",
                   "tag": f"t{number % 1000}"},
        "request": {"id": "r", "addr": "10.0.0.1:1234", "host": "registry:5000",
                    "method": "GET", "useragent": "containerd/2.0"},
        "actor": {}, "source": {"addr": "registry-0:5000", "instanceID": "i"},
    }  # fmt: skip
    return json.dumps({"events": [event]}).encode()


async def send(port: int, first: int, count: int, senders: int, max_seconds: float) -> (
    tuple[int, float]
):  # fmt: skip
    """POST envelopes ``first..first+count`` with ``senders`` at once; (sent, seconds).

    A minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per sender: the
    client shares the machine's two cores with the service, and a full HTTP client would
    take most of them and measure itself.
    """
    head = (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/vnd.docker.distribution.events.v1+json\r\n"
            "Content-Length: ").encode()  # fmt: skip
    requests = [head + b"%d\r\n\r\n" % len(body) + body
                for body in (envelope(n) for n in range(first, first + count))]  # fmt: skip
    next_index = 0
    sent = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def sender() -> None:
        nonlocal next_index, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(requests) and time.perf_counter() < deadline:
                request = requests[next_index]
                next_index += 1
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                answer = await reader.readexactly(length)
                if b" 200 " not in status_line:
                    raise RuntimeError(f"answer {status_line!r}: {answer!r}")
                sent += 1
        finally:
            writer.close()
            await writer.wait_closed()

    async with asyncio.TaskGroup() as tasks:
        for _ in range(senders):
            tasks.create_task(sender())
    return sent, time.perf_counter() - started


def commits(url: str) -> tuple[float, float]:
    """(commits, envelopes committed) from the service's metrics."""
    with urllib.request.urlopen(f"{url}/metrics") as answer:
        text = answer.read().decode()

    def value(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return (value("regcleaner_events_commit_envelopes_count"),
            value("regcleaner_events_commit_envelopes_sum"))  # fmt: skip


def run(coroutine: Coroutine[Any, Any, tuple[int, float]]) -> tuple[int, float]:
    """Run the client on uvloop when installed (as the service does)."""
    factory = event_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_shape(service: EventsService, name: str, first: int, count: int, senders: int,
              max_seconds: float) -> dict[str, Any]:  # fmt: skip
    commits_before, envelopes_before = commits(service.url)
    cpu_before = cpu_seconds(service.pid)
    sent, seconds = run(send(service.port, first, count, senders, max_seconds))
    cpu = cpu_seconds(service.pid) - cpu_before
    commits_after, envelopes_after = commits(service.url)
    with PullHistory(service.db) as history:
        missing = sum(
            1 for n in range(first, first + sent)
            if history.last_pull(f"bench/app{n % 50}", f"sha256:{n:064x}") is None
        )  # fmt: skip
    if missing:
        raise RuntimeError(f"{missing} of {sent} answered events are not in the record")
    batches = commits_after - commits_before
    result = {
        "shape": name, "senders": senders, "events": sent, "seconds": round(seconds, 3),
        "events_per_second": round(sent / seconds),
        "service_cpu_seconds": round(cpu, 2),
        "events_per_service_cpu_second": round(sent / cpu) if cpu else 0,
        "envelopes_per_commit": round((envelopes_after - envelopes_before) / batches, 1)
        if batches else 0.0,
    }  # fmt: skip
    print(f"{name:>10}: {sent:,} events from {senders} senders in {seconds:.2f}s = "
          f"{result['events_per_second']:,}/s ({result['envelopes_per_commit']} envelopes a "
          f"commit; service CPU {cpu:.1f}s = {result['events_per_service_cpu_second']:,} "
          "events per CPU second; all found in the record)", flush=True)  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per shape")
    parser.add_argument("--senders", type=int, default=128, help="concurrent senders")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="bound per shape")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as workdir:
        service = EventsService(Path(workdir), token=TOKEN)
        service.start()
        try:
            results = [
                run_shape(service, "concurrent", 0, args.events, args.senders,
                          args.max_seconds),
                run_shape(service, "serial", args.events, min(args.events, 2_000), 1,
                          args.max_seconds),
            ]  # fmt: skip
        finally:
            service.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
