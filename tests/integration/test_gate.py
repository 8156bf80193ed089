"""The gate before any storage write faces this storage's registry (issue 19, items 1-2).

- With ``--registry-stopped``, only "nothing answers at all" counts as stopped: a 301
  front, a TLS handshake the client does not trust, or a token challenge whose realm
  cannot be reached all mean a server is there, and the gate refuses (exit 2).
- A read-only registry at the URL proves nothing about a storage it does not serve:
  the gate asks it for manifests of this storage by digest and refuses (exit 3) when it
  answers for another storage.

Each case runs ``gc`` and ``clean --direct``; the URL/storage mismatch on disk and on S3.
The storage always holds something to remove (an untagged manifest and an orphan blob
per repository), so a gate that lets the run through changes the storage.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from testkit.api import RegistryAPI
from testkit.auth import make_tls
from testkit.gatekit import Redirector
from testkit.images import push_image
from testkit.registry import Flavour, RegistryProcess, free_port, running
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.integration

REPOSITORIES = ("app/one", "app/two", "lib/three", "tools/four")
S3_ROOT = "root"


@dataclass(frozen=True)
class Template:
    """One registry's storage at two moments, copied into each test."""

    old: Path
    """After the first push of each repository (what a stale copy would hold)."""
    new: Path
    """After a second push re-tagged ``v1`` (the first manifest is now untagged) and an
    orphan blob was uploaded to each repository."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, registry_flavour: Flavour) -> Template:
    base = tmp_path_factory.mktemp("gate")
    with running(RegistryProcess(base / "writer", flavour=registry_flavour)) as writer:
        api = RegistryAPI(writer.url)
        for repository in REPOSITORIES:
            push_image(api, repository, "v1", seed=f"{repository} first")
        old = base / "old"
        shutil.copytree(writer.root, old)
        for repository in REPOSITORIES:
            push_image(api, repository, "v1", seed=f"{repository} second")
            api.push_blob(repository, f"orphan blob of {repository}".encode())
    return Template(old, writer.root)


@dataclass
class Storage:
    """A copy of a template, as the CLI and a registry see it."""

    args: list[str]
    keys: Callable[[], set[str]]
    registry_storage: dict[str, Any] | None = None
    env: dict[str, str] = field(default_factory=dict)


def _disk_keys(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def disk_copy(source: Path, destination: Path) -> Storage:
    shutil.copytree(source, destination)
    return Storage(["--registry-dir", str(destination)], lambda: _disk_keys(destination),
                   {"filesystem": {"rootdirectory": str(destination)}})  # fmt: skip


def bucket_copy(moto: MotoS3, source: Path, bucket: str) -> Storage:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    moto.create_bucket(bucket)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for path in source.rglob("*"):
        if path.is_file():
            backend.put_object(bucket, f"{S3_ROOT}/{path.relative_to(source)}", path.read_bytes())

    def keys() -> set[str]:
        return {str(name) for name in backend.get_bucket(bucket).keys}

    args = ["--storage", "s3", "--bucket", bucket, "--registry-dir", f"/{S3_ROOT}",
            "--s3-endpoint", moto.url, "--region", REGION]  # fmt: skip
    return Storage(args, keys, moto.registry_storage(bucket, f"/{S3_ROOT}"),
                   {"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY})  # fmt: skip


class Places:
    """Copies templates into the test's disk or S3 storage."""

    def __init__(self, kind: str, tmp_path: Path, moto: MotoS3 | None) -> None:
        self.kind, self.tmp_path, self.moto, self.count = kind, tmp_path, moto, 0

    def copy(self, source: Path) -> Storage:
        self.count += 1
        if self.kind == "disk":
            return disk_copy(source, self.tmp_path / f"storage-{self.count}")
        assert self.moto is not None
        bucket = f"gate-{self.tmp_path.name[-20:].lower().replace('_', '-')}-{self.count}"
        return bucket_copy(self.moto, source, bucket.strip("-"))


@pytest.fixture(params=["disk", "s3"])
def places(request: pytest.FixtureRequest, tmp_path: Path) -> Places:
    moto = request.getfixturevalue("moto_server") if request.param == "s3" else None
    return Places(request.param, tmp_path, moto)


@pytest.fixture
def disk(tmp_path: Path) -> Places:
    return Places("disk", tmp_path, None)


def run(command: str, url: str, storage: Storage, *extra: str) -> CliResult:
    if command == "gc":
        argv = ["gc", "--registry-url", url, *storage.args, "--progress-interval", "0", *extra]
    else:
        argv = ["clean", "--direct", "--registry-url", url, *storage.args,
                "--progress-interval", "0", "--min-age", "0", *extra]  # fmt: skip
    return run_cli(argv, env=storage.env)


COMMANDS = pytest.mark.parametrize("command", ["gc", "clean-direct"])


# -- 1. something answers: not a stopped registry --------------------------------------------


@contextmanager
def answering_front(
    front: str, storage: Storage, workdir: Path, flavour: Flavour
) -> Iterator[tuple[str, list[str], str]]:
    """A writable registry serving ``storage`` behind ``front``: the URL to give, the
    options it needs, and what the refusal must name."""
    workdir.mkdir(parents=True)
    served = storage.registry_storage
    if front == "redirect":
        server = RegistryProcess(workdir / "registry", flavour=flavour, storage=served)
        with running(server), running(Redirector(server.url.replace("http:", "https:"))) as nginx:
            yield nginx.url, [], "301 redirect"
    elif front == "tls":
        tls = make_tls(workdir).registry_tls()
        server = RegistryProcess(workdir / "registry", flavour=flavour, storage=served, tls=tls)
        with running(server):
            yield server.url, [], "TLS verification"
    else:
        bundle = workdir / "token-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(bundle))
        realm = f"http://127.0.0.1:{free_port()}/token"  # nothing listens there
        auth = {"token": {"realm": realm, "service": "registry", "issuer": "tokens",
                          "rootcertbundle": str(bundle)}}  # fmt: skip
        server = RegistryProcess(workdir / "registry", flavour=flavour, storage=served, auth=auth)
        with running(server):
            yield server.url, ["--auth", "cleaner:secret"], f"token server {realm}"


@COMMANDS
@pytest.mark.parametrize(
    ("kind", "front"),
    [("disk", "redirect"), ("disk", "tls"), ("disk", "token-realm-unreachable"),
     ("s3", "redirect")],
)  # fmt: skip
def test_a_server_that_answers_is_not_a_stopped_registry(
    template: Template,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    registry_flavour: Flavour,
    command: str,
    kind: str,
    front: str,
) -> None:
    moto = request.getfixturevalue("moto_server") if kind == "s3" else None
    storage = Places(kind, tmp_path, moto).copy(template.new)
    before = storage.keys()
    fronted = answering_front(front, storage, tmp_path / "front", registry_flavour)
    with fronted as (url, extra, what):
        result = run(command, url, storage, "--registry-stopped", *extra)
    assert result.exit_code == 2, result.output
    refusal = [line for line in result.stderr.splitlines() if "refusing to write" in line]
    assert len(refusal) == 1, result.stderr
    assert f"a server answers at {url}, so the registry is not stopped" in refusal[0]
    assert what in refusal[0]
    assert storage.keys() == before, "the gate let the run write storage"
    assert "Traceback" not in result.output


# -- 2. the registry at the URL serves this storage ------------------------------------------


@COMMANDS
def test_a_read_only_registry_of_another_storage_is_refused(
    template: Template, places: Places, tmp_path: Path, registry_flavour: Flavour, command: str
) -> None:
    """The URL names a read-only registry serving a stale copy; the storage given belongs
    to another registry that still writes."""
    storage = places.copy(template.new)
    stale = places.copy(template.old)
    before = storage.keys()
    writer = RegistryProcess(tmp_path / "writer", flavour=registry_flavour,
                             storage=storage.registry_storage)  # fmt: skip
    reader = RegistryProcess(tmp_path / "reader", flavour=registry_flavour,
                             storage=stale.registry_storage, readonly=True)  # fmt: skip
    with running(writer), running(reader):
        result = run(command, reader.url, storage)
    assert result.exit_code == 3, result.output
    assert f"the registry at {reader.url} does not serve the storage" in result.stderr
    assert "is in this storage but answered 404" in result.stderr
    assert storage.keys() == before, "the gate let the run write another registry's storage"
    assert "Traceback" not in result.output


@COMMANDS
def test_the_read_only_registry_of_this_storage_passes(
    template: Template, places: Places, tmp_path: Path, registry_flavour: Flavour, command: str
) -> None:
    """The proof does not refuse the right registry: the run removes what it should."""
    storage = places.copy(template.new)
    before = storage.keys()
    reader = RegistryProcess(tmp_path / "reader", flavour=registry_flavour,
                             storage=storage.registry_storage, readonly=True)  # fmt: skip
    with running(reader):
        result = run(command, reader.url, storage)
    assert result.exit_code == 0, result.output
    assert storage.keys() < before, "nothing was removed"
