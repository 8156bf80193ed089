"""A dry run checks what the real run checks before deleting (issue 23, item 2).

- ``clean --dry-run`` with a URL talks to the registry: a URL where nothing answers,
  refused credentials, or a registry that serves another storage end the dry run as
  they end the real run (exit 3), within seconds.
- A dry run of a run that writes storage (``clean --direct``, ``--direct --gc``, ``gc``)
  runs the gate's probes in report-only mode: against a registry that can still write
  (days before the window), it exits 0 and says plainly, as a warning and in the JSON
  report, that the real run would refuse now, and why.

Output is read at ``COLUMNS=80``.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.api import RegistryAPI
from testkit.auth import TokenServer, User, htpasswd_auth, write_htpasswd
from testkit.images import push_image
from testkit.registry import Flavour, RegistryProcess, free_port, running
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.integration

COLUMNS = {"COLUMNS": "80"}
FAST_S = 10.0


@dataclass(frozen=True)
class Template:
    old: Path
    """``app:v1`` pushed once."""
    new: Path
    """``app:v1`` pushed again: the first manifest is untagged (one deletion)."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, registry_flavour: Flavour) -> Template:
    base = tmp_path_factory.mktemp("dry-run-checks")
    with running(RegistryProcess(base / "writer", flavour=registry_flavour)) as writer:
        api = RegistryAPI(writer.url)
        for repository in ("app", "lib/base"):
            push_image(api, repository, "v1", seed=f"{repository} first")
        old = base / "old"
        shutil.copytree(writer.root, old)
        for repository in ("app", "lib/base"):
            push_image(api, repository, "v1", seed=f"{repository} second")
    return Template(old, writer.root)


@pytest.fixture
def storage(template: Template, tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    shutil.copytree(template.new, root)
    return root


def serving(
    tmp_path: Path, flavour: Flavour, root: Path, name: str, **options: object
) -> RegistryProcess:
    """A registry (not yet started) whose storage is ``root``."""
    return RegistryProcess(tmp_path / name, flavour=flavour,
                           storage={"filesystem": {"rootdirectory": str(root)}},
                           **options)  # type: ignore[arg-type]  # fmt: skip


def timed(
    argv: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[CliResult, float]:
    started = time.monotonic()
    result = run_cli(argv, env={**COLUMNS, **(env or {})}, report_path=tmp_path / "report.json")
    return result, time.monotonic() - started


def clean(url: str, root: Path, *extra: str) -> list[str]:
    return ["clean", "--dry-run", "--registry-url", url, "--registry-dir", str(root),
            "--min-age", "0", "--progress-interval", "0", *extra]  # fmt: skip


# -- what fails the real run fails the dry run ------------------------------------------------


def test_nothing_answering_at_the_url_exits_3(storage: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result, took = timed(clean(url, storage), tmp_path)
    assert result.exit_code == 3, result.output
    assert took < FAST_S
    assert f"registry {url} is unreachable: nothing answers" in result.stderr
    assert result.stdout == ""  # no summary of a run that would not happen


def test_refused_credentials_exit_3(
    storage: Path, tmp_path: Path, registry_flavour: Flavour
) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"cleaner": "right"})
    server = serving(tmp_path, registry_flavour, storage, "auth", auth=htpasswd_auth(htpasswd))
    with running(server):
        result, took = timed(clean(server.url, storage, "--auth", "cleaner:wrong"), tmp_path)
    assert result.exit_code == 3, result.output
    assert took < FAST_S
    assert f"registry {server.url} refused the credentials (401)" in result.stderr


def test_credentials_that_may_not_pull_exit_3_naming_the_permission(
    storage: Path, tmp_path: Path, registry_flavour: Flavour
) -> None:
    """Token auth: the account logs in, but may not pull: the identity proof cannot
    be made, and the error says it is a permission, not another storage."""
    users = {"cleaner": User("pw", {"*": {"delete"}})}
    with running(TokenServer(tmp_path, users)) as tokens:
        server = serving(tmp_path, registry_flavour, storage, "token", auth=tokens.registry_auth())
        with running(server):
            result, took = timed(clean(server.url, storage, "--auth", "cleaner:pw"), tmp_path)
    assert result.exit_code == 3, result.output
    assert took < FAST_S
    assert "the credentials may not pull there" in result.stderr
    assert "does not serve the storage" not in result.stderr


def test_a_registry_serving_another_storage_exits_3(
    storage: Path, template: Template, tmp_path: Path, registry_flavour: Flavour
) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(template.old, stale)
    with running(serving(tmp_path, registry_flavour, stale, "other")) as other:
        result, took = timed(clean(other.url, storage), tmp_path)
    assert result.exit_code == 3, result.output
    assert took < FAST_S
    assert f"the registry at {other.url} does not serve the storage" in result.stderr
    assert "is in this storage but answered 404" in result.stderr


def test_the_registry_of_this_storage_passes(
    storage: Path, tmp_path: Path, registry_flavour: Flavour
) -> None:
    with running(serving(tmp_path, registry_flavour, storage, "same")) as same:
        result, _ = timed(clean(same.url, storage), tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("2 manifests would be deleted; run without --dry-run.\n")
    assert result.report is not None
    assert "gate" not in result.report  # an API run writes no storage: no gate to check


# -- a run that writes storage: the gate in report-only mode ---------------------------------


@pytest.fixture
def writable(storage: Path, tmp_path: Path, registry_flavour: Flavour) -> Iterator[str]:
    with running(serving(tmp_path, registry_flavour, storage, "writable")) as server:
        yield server.url


WOULD_REFUSE = "dry run: the real run would refuse to write storage now: refusing to write"


@pytest.mark.parametrize("extra", [("--direct",), ("--direct", "--gc")], ids=["direct", "gc"])
def test_a_direct_dry_run_against_a_writable_registry_says_the_window_run_would_refuse(
    writable: str, storage: Path, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    result, took = timed(clean(writable, storage, *extra), tmp_path)
    assert result.exit_code == 0, result.output
    assert took < FAST_S
    warnings = [line for line in result.stderr.splitlines() if WOULD_REFUSE in line]
    assert len(warnings) == 1, result.stderr
    assert f"the registry at {writable} is not read-only" in warnings[0]
    assert "a DELETE of an unknown manifest answered 404" in warnings[0]
    assert (
        "The real run would refuse to write storage now (warning above): the registry at \n"
        f"{writable} is not read-only.\n"
    ) in result.stdout
    assert result.report is not None
    gate = result.report["gate"]
    assert gate["would_refuse"] is True
    assert gate["reason"].startswith(f"refusing to write storage: the registry at {writable} is")


def test_gc_dry_run_against_a_writable_registry_warns(
    writable: str, storage: Path, tmp_path: Path
) -> None:
    argv = ["gc", "--dry-run", "--registry-url", writable, "--registry-dir", str(storage),
            "--progress-interval", "0"]  # fmt: skip
    result, took = timed(argv, tmp_path)
    assert result.exit_code == 0, result.output
    assert took < FAST_S
    warnings = [line for line in result.stderr.splitlines() if WOULD_REFUSE in line]
    assert len(warnings) == 1, result.stderr


def test_a_direct_dry_run_against_the_read_only_registry_of_this_storage_is_quiet(
    storage: Path, tmp_path: Path, registry_flavour: Flavour
) -> None:
    server = serving(tmp_path, registry_flavour, storage, "read-only", readonly=True)
    with running(server):
        result, _ = timed(clean(server.url, storage, "--direct"), tmp_path)
    assert result.exit_code == 0, result.output
    assert "would refuse" not in result.output
    assert result.report is not None
    assert result.report["gate"] == {"would_refuse": False, "reason": None}


# -- an S3 endpoint that does not answer (issue 23, item 3) -----------------------------------

S3_COMMANDS = pytest.mark.parametrize(
    "command",
    [["clean", "--direct", "--registry-stopped"], ["clean", "--dry-run"],
     ["gc", "--registry-stopped"]],
    ids=["clean-direct", "clean-dry-run", "gc"],
)  # fmt: skip
S3_ENV = {"ACCESS_KEY": "key", "SECRET_KEY": "secret"}


def s3_argv(command: list[str], endpoint: str) -> list[str]:
    return [*command, "--storage", "s3", "--bucket", "b", "--s3-endpoint", endpoint,
            "--region", "us-east-1", "--progress-interval", "0"]  # fmt: skip


@S3_COMMANDS
def test_an_s3_endpoint_where_nothing_listens_fails_fast_with_exit_3(
    tmp_path: Path, command: list[str]
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    result, took = timed(s3_argv(command, endpoint), tmp_path, S3_ENV)
    assert result.exit_code == 3, result.output
    assert took < 5.0
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(
        f"ERROR cannot reach {endpoint}: Connection refused; check --s3-endpoint"
    )
    assert "check:" not in result.output
    assert result.stdout == ""


def test_an_s3_endpoint_that_accepts_but_never_answers_fails_within_seconds(
    tmp_path: Path,
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel accepts connections; nothing ever answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result, took = timed(s3_argv(["clean", "--dry-run"], endpoint), tmp_path, S3_ENV)
    assert result.exit_code == 3, result.output
    assert took < FAST_S
    assert f"ERROR cannot reach {endpoint}: S3 did not answer within 6 s" in result.stderr
    assert "check:" not in result.output
