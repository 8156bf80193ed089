"""Start the real ``docker-registry`` (CNCF distribution 2.8.x) on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

S = TypeVar("S", bound="Service")

REGISTRY_BINARY = os.environ.get("REGCLEANER_TEST_REGISTRY", "/usr/bin/docker-registry")


def find_registry_binary() -> str:
    """Path of the docker-registry binary, or an error that says how to install it."""
    path = shutil.which(REGISTRY_BINARY) or (
        REGISTRY_BINARY if os.access(REGISTRY_BINARY, os.X_OK) else None
    )
    if path is None:
        raise RuntimeError(
            f"{REGISTRY_BINARY} not found: install Debian's docker-registry package "
            "(make test does), or set REGCLEANER_TEST_REGISTRY"
        )
    return path


class Service(Protocol):
    """Anything the tests start and stop: registries, token servers, moto, proxies."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


@contextmanager
def running(service: S) -> Iterator[S]:
    """Start ``service`` for the duration of a with-block (or a fixture's yield)."""
    service.start()
    try:
        yield service
    finally:
        service.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RegistryProcess:
    """One docker-registry server with its own root, config and log."""

    def __init__(
        self,
        workdir: Path,
        *,
        storage: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
        tls: dict[str, str] | None = None,
        delete_enabled: bool = True,
        readonly: bool = False,
    ) -> None:
        self.workdir = workdir
        self.root = workdir / "storage"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "registry.log"
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self._storage = storage
        self._auth = auth
        self._tls = tls
        self.delete_enabled = delete_enabled
        self.readonly = readonly
        self._process: subprocess.Popen[bytes] | None = None
        self.env_overrides: dict[str, str] = {}
        self.write_config()

    def config(self) -> dict[str, Any]:
        """The registry configuration (YAML is a superset of JSON, so JSON is written)."""
        storage: dict[str, Any] = dict(
            self._storage or {"filesystem": {"rootdirectory": str(self.root)}}
        )
        storage["delete"] = {"enabled": self.delete_enabled}
        storage["maintenance"] = {
            "uploadpurging": {"enabled": False},
            "readonly": {"enabled": self.readonly},
        }
        http: dict[str, Any] = {"addr": f"127.0.0.1:{self.port}"}
        if self._tls:
            http["tls"] = self._tls
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": http,
        }
        if self._auth:
            config["auth"] = self._auth
        return config

    def write_config(self) -> None:
        """(Re)write the configuration file."""
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update(self.env_overrides)
        return env

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server and poll ``/v2/`` until it answers."""
        self.write_config()
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [find_registry_binary(), "serve", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        # Only readiness is probed here; tests verify TLS with their own CA.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self._process.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1, context=context):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)  # polling interval, not a wait for readiness
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url} in {timeout_s}s")

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port and root."""
        self.stop()
        self.start()

    def garbage_collect(self, *, delete_untagged: bool = False) -> str:
        """Run ``docker-registry garbage-collect`` on this registry's config."""
        command = [find_registry_binary(), "garbage-collect", str(self.config_path)]
        if delete_untagged:
            command.append("--delete-untagged")
        result = subprocess.run(
            command, capture_output=True, text=True, env=self._env(), timeout=300, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"garbage-collect failed: {result.stdout}\n{result.stderr}")
        return result.stdout
