"""Start a real CNCF distribution registry on a free loopback port: Debian's
``docker-registry`` (2.8.2) or the v3.1.1 binary (the ``registry:3`` image's), chosen by
``flavour``. Their differences that the tests rely on are in ``FLAVOURS`` and
REFERENCE.md section 7 (v3: S3 needs ``forcepathstyle``, ``--quiet`` exists, the
garbage-collect prints each blob once)."""

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
from typing import Any, Literal, Protocol, TypeVar, get_args

S = TypeVar("S", bound="Service")

Flavour = Literal["2.8.2", "3.1.1"]
FLAVOURS: tuple[Flavour, ...] = get_args(Flavour)
V2: Flavour = "2.8.2"
V3: Flavour = "3.1.1"

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Debian 12's package; the v3 binary sits in the shared folder beside the repository
# (CI clones the project next to it), built from upstream source (its README).
REGISTRY_BINARY = os.environ.get("REGCLEANER_TEST_REGISTRY", "/usr/bin/docker-registry")
REGISTRY3_BINARY = os.environ.get(
    "REGCLEANER_TEST_REGISTRY3", str(REPOSITORY_ROOT.parent / "shared/bin/registry-3.1.1")
)
_HOW_TO_GET = {
    V2: "install Debian's docker-registry package (make test does), or set "
    "REGCLEANER_TEST_REGISTRY",
    V3: "it is built from distribution's v3.1.1 source into ../shared/bin/ beside the "
    "repository (see shared/bin/README.md); or set REGCLEANER_TEST_REGISTRY3 to a "
    "registry 3.1.x binary. The v3 tests fail without it: v3 coverage is not optional",
}


def find_registry_binary(flavour: Flavour = V2) -> str:
    """Path of the registry binary of ``flavour``, or an error that says how to get it."""
    wanted = REGISTRY3_BINARY if flavour == V3 else REGISTRY_BINARY
    path = shutil.which(wanted) or (wanted if os.access(wanted, os.X_OK) else None)
    if path is None:
        raise RuntimeError(f"registry {flavour}: {wanted} not found: {_HOW_TO_GET[flavour]}")
    return path


def s3_storage_for(flavour: Flavour, storage: dict[str, Any]) -> dict[str, Any]:
    """``storage`` as ``flavour`` needs it: v3's s3 driver uses bucket-in-hostname URLs
    with a custom ``regionendpoint`` unless ``forcepathstyle`` is set (2.8 always used
    path style, and does not know the key)."""
    s3 = storage.get("s3")
    if flavour != V3 or not isinstance(s3, dict) or "regionendpoint" not in s3:
        return storage
    return {**storage, "s3": {"forcepathstyle": True, **s3}}


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
    """One registry server (``flavour`` 2.8.2 or 3.1.1) with its own root, config, log."""

    def __init__(
        self,
        workdir: Path,
        *,
        flavour: Flavour = V2,
        storage: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
        tls: dict[str, str] | None = None,
        delete_enabled: bool = True,
        readonly: bool = False,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown registry flavour {flavour!r}: one of {FLAVOURS}")
        self.flavour: Flavour = flavour
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
            s3_storage_for(
                self.flavour, self._storage or {"filesystem": {"rootdirectory": str(self.root)}}
            )
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

    @property
    def binary(self) -> str:
        """The binary of this registry's flavour (an error says how to get it)."""
        return find_registry_binary(self.flavour)

    @property
    def is_v3(self) -> bool:
        """True for distribution 3.x (where REFERENCE.md section 7 says it differs)."""
        return self.flavour == V3

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update(self.env_overrides)
        return env

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server and poll ``/v2/`` until it answers."""
        self.write_config()
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "serve", str(self.config_path)],
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
                    f"registry {self.flavour} exited with {self._process.returncode}:\n"
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
        raise RuntimeError(f"registry {self.flavour} did not answer on {self.url} in {timeout_s}s")

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

    def garbage_collect_command(
        self, *, delete_untagged: bool = False, dry_run: bool = False, quiet: bool = False
    ) -> list[str]:
        """The registry's own ``garbage-collect`` on this config (``quiet`` only on v3:
        2.8 refuses the flag)."""
        command = [self.binary, "garbage-collect", str(self.config_path)]
        if delete_untagged:
            command.append("--delete-untagged")
        if dry_run:
            command.append("--dry-run")
        if quiet and self.is_v3:
            command.append("--quiet")
        return command

    def run_garbage_collect(
        self, *, delete_untagged: bool = False, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the registry's own ``garbage-collect``; the caller checks its exit code."""
        return subprocess.run(
            self.garbage_collect_command(delete_untagged=delete_untagged, dry_run=dry_run),
            capture_output=True, text=True, env=self._env(), timeout=300, check=False,
        )  # fmt: skip

    def garbage_collect(self, *, delete_untagged: bool = False, dry_run: bool = False) -> str:
        """Run the registry's own ``garbage-collect``; its output, or an error if it failed."""
        result = self.run_garbage_collect(delete_untagged=delete_untagged, dry_run=dry_run)
        if result.returncode != 0:
            raise RuntimeError(
                f"registry {self.flavour} garbage-collect failed: {result.stdout}\n{result.stderr}"
            )
        return result.stdout
