"""Helpers for tests of stops and hangs: run the CLI as a child process under a timeout
(so that a hang fails the test instead of hanging the suite), put a named pipe where a
file should be, and record when each DELETE reached the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from testkit.latency import LatencyProxy


@dataclass
class ChildRun:
    """What one ``python -m regcleaner`` child process did."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_child(
    args: list[str],
    *,
    report_path: Path | None = None,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run regcleaner in a child process; kill it and fail if it outlives ``timeout_s``."""
    argv = [sys.executable, "-m", "regcleaner", *args]
    if report_path is not None:
        argv += ["--report", str(report_path)]
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(
            f"regcleaner {' '.join(args[:1])} still ran after {timeout_s:.0f} s (killed): "
            + err.decode(errors="backslashreplace")[-2000:]
        ) from None
    report = None
    if report_path is not None and report_path.exists():
        report = json.loads(report_path.read_text())
    return ChildRun(
        process.returncode,
        out.decode(errors="backslashreplace"),
        err.decode(errors="backslashreplace"),
        report,
        time.monotonic() - started,
    )


def replace_with_fifo(path: Path) -> None:
    """Put a named pipe where the file ``path`` is (nothing ever writes to it: an
    ``open`` for reading that blocks waits for ever)."""
    path.unlink()
    os.mkfifo(path)


@dataclass
class DeleteRecorder(LatencyProxy):
    """A reverse proxy that notes the wall-clock time at which each DELETE arrived."""

    name = "delete recorder"
    deletes: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            with self._lock:
                self.deletes.append((time.time(), request.path))
        return await super()._handle(request)

    def deletes_after(self, when: float) -> list[tuple[float, str]]:
        """The DELETEs that arrived after the wall-clock time ``when``."""
        with self._lock:
            return [entry for entry in self.deletes if entry[0] > when]
