"""S3 requests per manifest: regcleaner's prefix-scoped scan against listing the bucket.

``python -m bench.s3 [REPOS]``: writes a synthetic registry (bench.generate) into a
moto S3 server on loopback, runs ``regcleaner clean --storage s3 --direct --dry-run``
(the reads of a window's scan; a dry run of the API path needs a registry), and
compares the S3 requests it made with what listing the whole bucket would take.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.generate import generate
from testkit.registry import free_port
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY


def main() -> int:
    repositories = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir) / "storage"
        synthetic = generate(root, repositories)
        keys = [
            (str(path.relative_to(root)), path)
            for path in root.rglob("*") if path.is_file()
        ]  # fmt: skip
        moto = FastMoto(load=("bench", "root", str(root)))
        moto.start(timeout_s=600.0)
        try:
            report = Path(workdir) / "report.json"
            env = {**os.environ, "ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
            subprocess.run(
                [sys.executable, "-m", "regcleaner", "clean", "--storage", "s3", "--bucket",
                 "bench", "--registry-dir", "/root", "--region", REGION, "--s3-endpoint",
                 moto.url, "--direct", "--dry-run",
                 "--progress-interval", "0", "--report", str(report)],
                check=True, env=env, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            summary = json.loads(report.read_text())["summary"]
        finally:
            moto.stop()
    requests = summary["storage_requests"]
    manifests = synthetic.manifests
    whole_bucket_lists = math.ceil(len(keys) / 1000)
    print(
        f"{manifests:,} manifests, {len(keys):,} keys in the bucket, {repositories:,} repositories"
    )
    print(
        f"regcleaner dry run: {requests['list']:,} LIST + {requests['get']:,} GET = "
        f"{(requests['list'] + requests['get']) / manifests:.3f} requests per manifest "
        f"({requests['list'] / manifests:.4f} LIST per manifest)"
    )
    print(
        f"listing the whole bucket: {whole_bucket_lists:,} LIST "
        f"({whole_bucket_lists / manifests:.4f} per manifest) before any GET; it grows "
        "with every layer, config and upload in the bucket, not with the manifests"
    )
    return 0


def _past(prefix: str) -> str:
    """The least string above every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def patch_moto_listing() -> None:
    """Make moto's ListObjectsV2 cost what S3's costs: one page, not the whole bucket.

    moto answers each ListObjectsV2 by scanning and sorting every key of the bucket,
    then finding the continuation token by a linear search: a page costs O(keys in the
    bucket), so a bucket of 300,000 keys takes seconds a page and a benchmark measures
    moto. This keeps the bucket's key names sorted (rebuilt when the number of keys
    changes: the benchmark writes everything first, then only reads) and answers each
    page by bisection, with moto's own tokens and result shape. For benchmarks only."""
    from moto.s3.models import FakeDeleteMarker, FakeKey, S3Backend
    from moto.utilities.utils import md5_hash

    sorted_names: dict[int, tuple[int, list[str]]] = {}

    def names_of(bucket: Any) -> list[str]:
        count = len(bucket.keys)
        cached = sorted_names.get(id(bucket))
        if cached is None or cached[0] != count:
            cached = (count, sorted(bucket.keys.keys()))
            sorted_names[id(bucket)] = cached
        return cached[1]

    def list_objects_v2(
        self: Any,
        bucket: Any,
        prefix: str | None,
        delimiter: str | None,
        continuation_token: str | None,
        start_after: str | None,
        max_keys: int,
    ) -> tuple[list[Any], bool, str | None]:
        names = names_of(bucket)
        prefix = prefix or ""
        index = bisect.bisect_left(names, prefix)
        after = (
            self._pagination_tokens.get(continuation_token) if continuation_token else start_after
        )
        if after:
            if delimiter and after.endswith(delimiter):  # a common prefix: past all of it
                index = max(index, bisect.bisect_left(names, _past(after)))
            else:
                index = max(index, bisect.bisect_right(names, after))
        results: list[Any] = []
        while index < len(names) and len(results) <= max_keys:
            name = names[index]
            if not name.startswith(prefix):
                break
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter)[0] + delimiter
                results.append(folder)
                index = bisect.bisect_left(names, _past(folder))
                continue
            key = bucket.keys.get(name)
            if isinstance(key, FakeKey) and not isinstance(key, FakeDeleteMarker):
                results.append(key)
            index += 1
        if max_keys == 0:
            return [], False, None
        if len(results) > max_keys:
            results = results[:max_keys]
            last = results[-1]
            last_name = last.name if isinstance(last, FakeKey) else last
            token = md5_hash(last_name.encode("utf-8")).hexdigest()
            self._pagination_tokens[token] = last_name
            return results, True, token
        return results, False, None

    S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[assignment,method-assign]


def load_into_moto(bucket: str, prefix: str, root: str) -> int:
    """Every file below ``root`` into ``bucket`` (made here) under ``prefix``, through
    moto's backend in this process: the HTTP API takes minutes for a few hundred
    thousand keys. The number of keys written."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, REGION)
    written = 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            key = f"{prefix}/{os.path.relpath(path, root)}"
            with open(path, "rb") as stream:
                backend.put_object(bucket, key, stream.read())
            written += 1
    return written


def serve(port: int, load: tuple[str, str, str] | None = None) -> None:
    """A moto S3 server on 127.0.0.1:``port`` with ``patch_moto_listing``, until its
    standard input closes (``FastMoto`` runs it in a process of its own); with
    ``load`` (bucket, prefix, folder), that folder's files are in the bucket first."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    patch_moto_listing()
    if load is not None:
        load_into_moto(*load)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    sys.stdin.read()
    server.stop()


def serve_front(port: int, upstream: str, certificate: tuple[str, str] | None = None) -> None:
    """A proxy on 127.0.0.1:``port`` to ``upstream`` (testkit.latency, no delay) that
    keeps its clients' connections open, until its standard input closes; over TLS with
    ``certificate`` (its chain's and key's PEM files).

    moto's server (werkzeug's) closes the connection after every answer, so each
    request costs its client a TCP connection that S3, which keeps connections alive,
    does not. Behind this proxy, in a process of its own (it would otherwise take
    moto's GIL), a client's CPU is what it would be against S3."""
    from testkit.latency import LatencyProxy

    front = LatencyProxy(upstream=upstream, delay_s=0.0, port=port, certificate=certificate)
    front.start()
    sys.stdin.read()
    front.stop()


def _wait_for(
    url: str, process: subprocess.Popen[bytes], deadline: float, ca_pem: Path | None = None
) -> None:
    """Poll ``url`` until something answers there (``process`` serves it; over TLS,
    with a certificate of the CA ``ca_pem``)."""
    context = None if ca_pem is None else ssl.create_default_context(cafile=str(ca_pem))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url + "/", timeout=1, context=context).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)  # poll: not listening yet
    raise RuntimeError(f"{url}: no server answered in time")


class FastMoto:
    """moto in a process of its own, with listings that cost a page (``serve``)."""

    def __init__(
        self, load: tuple[str, str, str] | None = None, *, keep_alive: bool = False,
        tls: bool = False,
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.keep_alive = keep_alive or tls
        """Connections kept open, as S3 keeps them (``serve``)."""
        self.tls = tls
        """Served over TLS (by the front that keeps connections open), with a CA of its
        own: ``ca_pem`` once started (a client trusts it by AWS_CA_BUNDLE)."""
        self.ca_pem: Path | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.load = load
        """(bucket, prefix, folder) to load before serving (``serve``)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._front: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        root = Path(__file__).resolve().parent.parent
        moto_port = free_port() if self.keep_alive else self.port
        code = f"from bench.s3 import serve; serve({moto_port}, {self.load!r})"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=root,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        upstream = f"http://127.0.0.1:{moto_port}"
        _wait_for(upstream, self._process, deadline)
        if self.keep_alive:
            certificate = None
            if self.tls:
                from testkit.auth import make_tls

                self._tls_dir = tempfile.TemporaryDirectory(prefix="fastmoto-tls-")
                files = make_tls(Path(self._tls_dir.name))
                self.ca_pem = files.ca_pem
                certificate = (str(files.cert_pem), str(files.key_pem))
            code = (f"from bench.s3 import serve_front; "
                    f"serve_front({self.port}, {upstream!r}, {certificate!r})")  # fmt: skip
            self._front = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=root,
            )  # fmt: skip
            _wait_for(self.url, self._front, deadline, self.ca_pem)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
        )  # fmt: skip

    def stop(self) -> None:
        for process in (self._front, self._process):
            if process is not None:
                assert process.stdin is not None
                process.stdin.close()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._process = self._front = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None


if __name__ == "__main__":
    sys.exit(main())
