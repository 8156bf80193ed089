"""The real registry behind htpasswd, a token server, and TLS with a private CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import images
from testkit.api import RegistryAPI
from testkit.auth import (
    TokenServer,
    User,
    basic_header,
    htpasswd_auth,
    make_tls,
    write_htpasswd,
)
from testkit.registry import Flavour, RegistryProcess, running
from testkit.scenario import build_scenario
from tests.conftest import CliResult, clean_args, run_cli
from tests.integration.test_clean_disk import assert_all_tags_pull, report_digests

PASSWORD = "pa:ss-w0rd!"  # a colon inside, and nothing that should ever be printed
SCENARIO_REPOS = ["a", "a/b", "a/b/c", "app", "multi/docker", "multi/oci", "nested", "bare",
                  "signed", "attest"]  # fmt: skip


def assert_no_secrets(*texts: str, secrets: tuple[str, ...] = (PASSWORD,)) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def push_history(api: RegistryAPI, repos: list[str], count: int = 2) -> None:
    for repo in repos:
        for i in range(count):
            images.push_image(api, repo, "v", seed=f"{repo}-{i}")


# --- htpasswd ---------------------------------------------------------------------------


@pytest.fixture
def htpasswd_registry(tmp_path: Path, registry_flavour: Flavour) -> Iterator[RegistryProcess]:
    users = write_htpasswd(tmp_path / "htpasswd", {"admin": PASSWORD})
    with running(
        RegistryProcess(tmp_path / "registry", flavour=registry_flavour, auth=htpasswd_auth(users))
    ) as server:
        yield server


def test_htpasswd_clean_with_auth_and_password_file(
    htpasswd_registry: RegistryProcess, tmp_path: Path
) -> None:
    api = RegistryAPI(htpasswd_registry.url, authorization=basic_header("admin", PASSWORD))
    push_history(api, ["one", "two/deep"])
    first = run_cli(
        clean_args(htpasswd_registry, "--include", "one"),
        env={"REGISTRY_AUTH": f"admin:{PASSWORD}"},
        report_path=tmp_path / "r1.json",
    )
    assert first.exit_code == 0, first.output
    assert first.report is not None
    assert first.report["summary"]["deleted"] == 1

    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    second = run_cli(
        clean_args(htpasswd_registry, "--username", "admin", "--password-file",
                   str(secret_file)),
        report_path=tmp_path / "r2.json",
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    assert second.report is not None
    assert second.report["summary"]["deleted"] == 1
    assert_no_secrets(first.output, second.output, (tmp_path / "r1.json").read_text(),
                      (tmp_path / "r2.json").read_text())  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REGISTRY_AUTH": "admin:wrong-password"}, "refused the credentials"),
        ({}, "requires authentication"),
    ],
)
def test_htpasswd_refusal_exits_3_with_one_line(
    htpasswd_registry: RegistryProcess, env: dict[str, str], message: str
) -> None:
    api = RegistryAPI(htpasswd_registry.url, authorization=basic_header("admin", PASSWORD))
    push_history(api, ["one"])
    result = run_cli(clean_args(htpasswd_registry), env=env)
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert message in errors[0]
    assert "wrong-password" not in result.output
    assert "Traceback" not in result.output


# --- token server -----------------------------------------------------------------------


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    users = {
        "admin": User(PASSWORD, {"*": {"pull", "push", "delete"}}),
        "limited": User("limited-pw", {"open": {"pull", "delete"}, "*": {"pull"}}),
    }
    with running(TokenServer(tmp_path, users)) as server:
        yield server


@pytest.fixture
def token_registry(
    token_server: TokenServer, tmp_path: Path, registry_flavour: Flavour
) -> Iterator[RegistryProcess]:
    auth = token_server.registry_auth()
    with running(
        RegistryProcess(tmp_path / "registry", flavour=registry_flavour, auth=auth)
    ) as server:
        yield server


def pusher(token_server: TokenServer, registry: RegistryProcess, repos: list[str]) -> RegistryAPI:
    token = token_server.mint(
        [{"type": "repository", "name": r, "actions": ["pull", "push"]} for r in repos]
    )
    return RegistryAPI(registry.url, authorization=f"Bearer {token}")


def clean_as_admin(registry: RegistryProcess, tmp_path: Path) -> tuple[CliResult, dict[str, Any]]:
    """A successful clean with the admin's credentials; (result, its JSON report)."""
    result = run_cli(clean_args(registry), env={"REGISTRY_AUTH": f"admin:{PASSWORD}"},
                     report_path=tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.report is not None
    return result, result.report


def test_token_auth_full_clean_with_one_fetch_per_repository(
    token_server: TokenServer, token_registry: RegistryProcess, tmp_path: Path
) -> None:
    api = pusher(token_server, token_registry, SCENARIO_REPOS)
    expectation = build_scenario(api)
    result, report = clean_as_admin(token_registry, tmp_path)
    assert report_digests(report, "deleted") == expectation.delete
    # One token for the ping, then one per repository that had deletions: never per request.
    repos_with_deletions = {repo for repo, _ in expectation.delete}
    assert len(token_server.fetches) == 1 + len(repos_with_deletions)
    scopes = [s for fetch in token_server.fetches for s in fetch["scope"]]
    assert sorted(scopes) == sorted(f"repository:{r}:pull,delete" for r in repos_with_deletions)
    token_registry.stop()
    token_registry.garbage_collect()
    token_registry.start()
    assert_all_tags_pull(pusher(token_server, token_registry, SCENARIO_REPOS), expectation)
    assert_no_secrets(result.output, (tmp_path / "r.json").read_text())
    assert "Bearer" not in result.output


def test_token_expiring_mid_run_is_refreshed(
    token_server: TokenServer, token_registry: RegistryProcess, tmp_path: Path
) -> None:
    repos = [f"r{i}" for i in range(3)]
    push_history(pusher(token_server, token_registry, repos), repos, count=13)
    # The registry allows 60 s of clock skew: a token whose exp is 57 s in the past dies
    # ~3 s after issue, while the server claims 300 s. Only a 401 tells the client.
    token_server.lifetime_s = -57
    token_server.advertised_expires_in = 300
    result = run_cli(
        clean_args(token_registry, "--rate", "8", "--concurrency", "2", "--per-repository", "1"),
        env={"REGISTRY_AUTH": f"admin:{PASSWORD}"}, report_path=tmp_path / "r.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.report is not None
    assert result.report["summary"]["deleted"] == 36
    assert result.report["summary"]["failed"] == 0
    fetches = len(token_server.fetches)
    assert 1 + len(repos) < fetches < 36, "no refresh, or a token per request"


def test_wrong_token_credentials_exit_3(
    token_server: TokenServer, token_registry: RegistryProcess
) -> None:
    push_history(pusher(token_server, token_registry, ["x"]), ["x"])
    result = run_cli(clean_args(token_registry), env={"REGISTRY_AUTH": "admin:not-it"})
    assert result.exit_code == 3, result.output
    assert "token server" in result.stderr
    assert "refused the credentials" in result.stderr
    assert_no_secrets(result.output, secrets=("not-it",))


def test_older_harbor_star_scope_fallback(
    token_server: TokenServer, token_registry: RegistryProcess, tmp_path: Path
) -> None:
    push_history(pusher(token_server, token_registry, ["harbor/app"]), ["harbor/app"], count=3)
    token_server.star_only_delete = True
    _, report = clean_as_admin(token_registry, tmp_path)
    assert report["summary"]["deleted"] == 2
    scopes = [s for fetch in token_server.fetches for s in fetch["scope"]]
    assert scopes == ["repository:harbor/app:pull,delete", "repository:harbor/app:*"]


def test_repository_without_delete_permission_fails_alone(
    token_server: TokenServer, token_registry: RegistryProcess, tmp_path: Path
) -> None:
    push_history(pusher(token_server, token_registry, ["open", "locked"]), ["open", "locked"], 3)
    result = run_cli(
        clean_args(token_registry), env={"REGISTRY_AUTH": "limited:limited-pw"},
        report_path=tmp_path / "r.json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.report is not None
    by_name = {r["name"]: r for r in result.report["repositories"]}
    assert len(by_name["open"]["deleted"]) == 2
    assert by_name["locked"]["deleted"] == []
    assert len(by_name["locked"]["failed"]) == 2
    assert "grants no delete in locked" in by_name["locked"]["failed"][0]["error"]


# --- TLS --------------------------------------------------------------------------------


def test_tls_private_ca_insecure_and_a_clear_error(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    tls = make_tls(tmp_path)
    server = RegistryProcess(
        tmp_path / "registry", flavour=registry_flavour, tls=tls.registry_tls()
    )
    server.start()
    try:
        import ssl

        api = RegistryAPI(
            server.url, ssl_context=ssl.create_default_context(cafile=str(tls.ca_pem))
        )
        push_history(api, ["secure", "other"])

        refused = run_cli(clean_args(server))
        assert refused.exit_code == 3, refused.output
        assert "--ca-cert" in refused.stderr
        assert "--insecure" in refused.stderr
        assert "Traceback" not in refused.output

        with_ca = run_cli(clean_args(server, "--ca-cert", str(tls.ca_pem), "--include", "secure"),
                          report_path=tmp_path / "a.json")  # fmt: skip
        assert with_ca.exit_code == 0, with_ca.output
        assert with_ca.report is not None
        assert with_ca.report["summary"]["deleted"] == 1

        insecure = run_cli(clean_args(server), env={"SELF_SIGNED_CERT": "true"},
                           report_path=tmp_path / "b.json")  # fmt: skip
        assert insecure.exit_code == 0, insecure.output
        assert insecure.report is not None
        assert insecure.report["summary"]["deleted"] == 1
    finally:
        server.stop()


def test_plain_http_credentials_to_a_remote_host_are_refused() -> None:
    result = run_cli(["clean", "--registry-url", "http://registry.example.com",
                      "--auth", f"admin:{PASSWORD}", "--dry-run"])  # fmt: skip
    assert result.exit_code == 2
    assert "--allow-insecure-auth" in result.stderr
    assert_no_secrets(result.output)
