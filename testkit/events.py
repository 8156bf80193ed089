"""The pull recorder (``regcleaner events serve``) as a process, and a registry that
notifies it.

- ``EventsService`` runs ``python -m regcleaner.events serve`` on a free loopback port
  with its own pull record, polls ``/healthz`` until it answers, and stops it with SIGTERM
  (or kills it, to test what a crash loses).
- ``NotifyingRegistry`` is a ``RegistryProcess`` whose config has a notifications endpoint
  pointing at a service, with the bearer token in the endpoint's headers, a short backoff
  (so retries after a restart come within a test's patience), and the access log on.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import testkit.registry
from testkit.registry import RegistryProcess, free_port

REGISTRY_3_BINARY = os.environ.get(
    "REGCLEANER_TEST_REGISTRY_3",
    str(Path(__file__).resolve().parents[2] / "shared/bin/registry-3.1.1"),
)
_FLAVOUR_BUILT_IN = "flavour" in inspect.signature(RegistryProcess.__init__).parameters


class EventsService:
    """One ``events serve`` process with its own pull record."""

    def __init__(self, workdir: Path, *, token: str | None, port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.db = workdir / "pulls.db"
        self.log_path = workdir / "events.log"
        self.token = token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start and poll ``/healthz`` until it answers."""
        env = {k: v for k, v in os.environ.items() if k != "REGCLEANER_EVENTS_TOKEN"}
        if self.token is not None:
            env["REGCLEANER_EVENTS_TOKEN"] = self.token
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "regcleaner.events", "serve",
             "--listen", f"127.0.0.1:{self.port}", "--db", str(self.db)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"events serve exited with {self._process.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)  # polling interval, not a wait for readiness
        self.kill()
        raise RuntimeError(f"events serve did not answer on {self.url} in {timeout_s}s")

    def stop(self) -> int | None:
        """SIGTERM, wait, and return the exit code (None if it was not running)."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    @property
    def pid(self) -> int:
        """The running service's process id."""
        assert self._process is not None
        return self._process.pid

    def stop_signal(self) -> None:
        """Send SIGTERM and return at once (``wait`` collects the exit code)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to exit after ``stop_signal``; its exit code."""
        process, self._process = self._process, None
        assert process is not None
        return process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: what a crash or an evicted pod looks like."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class NotifyingRegistry(RegistryProcess):
    """A registry with a notifications endpoint (and its access log), of either flavour."""

    def __init__(
        self, workdir: Path, *, endpoint: str, token: str | None, flavour: str = "2.8.2",
        **options: Any,
    ) -> None:  # fmt: skip
        self.endpoint = endpoint
        self.token = token
        self.flavour_name = flavour
        if _FLAVOUR_BUILT_IN:
            options["flavour"] = flavour
        super().__init__(workdir, **options)

    def config(self) -> dict[str, Any]:
        """The base config, with the endpoint and the logs ``events import-log`` reads."""
        config = super().config()
        config["log"] = {"level": "info", "accesslog": {"disabled": False}}
        endpoint: dict[str, Any] = {
            "name": "regcleaner-events",
            "url": f"{self.endpoint}/events",
            "timeout": "2s",
            "threshold": 5,
            "backoff": "200ms",
            # What docs/pulls.md recommends: blob events and pushes are not sent at all.
            "ignore": {
                "mediatypes": ["application/octet-stream"],
                "actions": ["push", "delete", "mount"],
            },
        }
        if self.token is not None:
            endpoint["headers"] = {"Authorization": [f"Bearer {self.token}"]}
        config["notifications"] = {"endpoints": [endpoint]}
        return config

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the chosen flavour's binary (until RegistryProcess takes ``flavour``)."""
        if _FLAVOUR_BUILT_IN or self.flavour_name == "2.8.2":
            super().start(timeout_s)
            return
        saved = testkit.registry.REGISTRY_BINARY
        testkit.registry.REGISTRY_BINARY = REGISTRY_3_BINARY
        try:
            super().start(timeout_s)
        finally:
            testkit.registry.REGISTRY_BINARY = saved
