"""The CLI: the older script's environment variables, usage errors, exit codes, secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from regcleaner import __version__
from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from tests.conftest import clean_args, run_cli

SECRET = "s3cr:et:pa55"  # colons: only the first one separates user and password


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "registry URL is required"),
        (["--registry-url", "registry.example.com"], {}, "must start with http"),
        ([], {"REGISTRY_URL": "ftp://x"}, "must start with http"),
        (["--registry-url", "http://u:p@h"], {}, "do not put credentials"),
        (
            ["--registry-url", "http://h", "--s3-endpoint", "http://AK:secret@h"],
            {"REGISTRY_STORAGE": "s3", "BUCKET": "b"},
            "do not put credentials in --s3-endpoint; use --access-key/--secret-key",
        ),
        (["--registry-url", "http://h", "--cache", ""], {}, "--cache is empty"),
        (["--registry-url", "http://h", "--min-age", "soon"], {}, "invalid duration"),
        (["--registry-url", "http://h", "--rate", "-1"], {}, "--rate"),
        (["--registry-url", "http://h", "--concurrency", "0"], {}, "at least 1"),
        (["--registry-url", "http://h", "--output", "yaml"], {}, "unknown output format"),
        (["--registry-url", "http://h"], {"REGISTRY_STORAGE": "gcs"}, "unknown storage"),
        (["--registry-url", "http://h", "--auth", "nocolon"], {}, "user:password"),
        (["--registry-url", "http://h", "--ca-cert", "/nonexistent.pem"], {}, "does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli(["clean", *args], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_bad_boolean_env_var_is_a_usage_error() -> None:
    result = run_cli(["clean"], env={"REGISTRY_URL": "http://h", "DRY_RUN": "maybe"})
    assert result.exit_code == 2
    assert "DRY_RUN" in result.stderr or "dry-run" in result.stderr


def test_missing_storage_root_exits_2(tmp_path: Path) -> None:
    result = run_cli(
        ["clean", "--registry-url", "http://127.0.0.1:9", "--registry-dir",
         str(tmp_path / "nope"), "--dry-run"]
    )  # fmt: skip
    assert result.exit_code == 2
    assert "is not a directory" in result.stderr


def test_root_without_registry_layout_exits_2(tmp_path: Path) -> None:
    result = run_cli(
        ["clean", "--registry-url", "http://127.0.0.1:9", "--registry-dir", str(tmp_path),
         "--dry-run"]
    )  # fmt: skip
    assert result.exit_code == 2
    assert "docker/registry/v2" in result.stderr


def test_old_script_environment_drives_a_dry_run_then_a_real_run(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    old = images.push_image(api, "legacy", "v1", seed="old")
    new = images.push_image(api, "legacy", "v1", seed="new")
    env = {
        "REGISTRY_URL": registry.url,
        "REGISTRY_DIR": str(registry.root),
        "REGISTRY_STORAGE": "local",
        "REGISTRY_AUTH": f"admin:{SECRET}",
        "SELF_SIGNED_CERT": "false",
        "DRY_RUN": "true",
        "MIN_AGE": "0",
    }
    dry = run_cli(["clean", "--output", "json"], env=env, report_path=tmp_path / "d.json")
    assert dry.exit_code == 0, dry.output
    document = json.loads(dry.stdout)
    assert document["dry_run"] is True
    assert document["summary"]["would_delete"] == 1
    assert api.manifest_exists("legacy", old.digest)

    env["DRY_RUN"] = "false"
    real = run_cli(["clean"], env=env, report_path=tmp_path / "r.json")
    assert real.exit_code == 0, real.output
    assert real.report is not None
    assert real.report["summary"]["deleted"] == 1
    assert not api.manifest_exists("legacy", old.digest)
    assert api.manifest_exists("legacy", new.digest)
    for text in (
        dry.output,
        real.output,
        (tmp_path / "r.json").read_text(),
        (tmp_path / "d.json").read_text(),
    ):
        assert SECRET not in text
        assert "pa55" not in text


def test_include_and_exclude_select_repositories(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    for repo in ("team/a", "team/b", "other/c"):
        images.push_image(api, repo, "v", seed=f"{repo}1")
        images.push_image(api, repo, "v", seed=f"{repo}2")
    result = run_cli(
        clean_args(registry, "--include", "team/*", "--exclude", "team/b"),
        report_path=tmp_path / "r.json",
    )
    assert result.exit_code == 0
    assert result.report is not None
    assert [r["name"] for r in result.report["repositories"]] == ["team/a"]
    assert result.report["summary"]["deleted"] == 1
    assert result.report["summary"]["repositories_skipped"] == 2


def test_min_age_keeps_recent_pushes(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    old = images.push_image(api, "young", "v", seed="1")
    images.push_image(api, "young", "v", seed="2")
    result = run_cli(clean_args(registry, "--min-age", "1h"), report_path=tmp_path / "r.json")
    assert result.exit_code == 0
    assert result.report is not None
    kept = {k["digest"]: k["reason"] for k in result.report["repositories"][0]["kept"]}
    assert kept[old.digest] == "younger-than-grace"
    assert api.manifest_exists("young", old.digest)


def test_module_entry_point_and_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "regcleaner", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"regcleaner {__version__}"


def test_help_shows_env_vars_and_no_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH", f"admin:{SECRET}")
    result = run_cli(["clean", "--help"], env={"REGISTRY_AUTH": f"admin:{SECRET}"})
    assert result.exit_code == 0
    assert "REGISTRY_AUTH" in result.stdout
    assert SECRET not in result.output


def test_an_internal_error_while_planning_stays_in_its_repository(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regcleaner import engine

    for repo in ("bug", "fine"):
        images.push_image(api, repo, "v", seed=f"{repo}-1")
        images.push_image(api, repo, "v", seed=f"{repo}-2")
    original = engine.plan_with_tags  # type: ignore[attr-defined]

    def broken(snapshot: object, *args: object, **kwargs: object) -> object:
        if getattr(snapshot, "name", "") == "bug":
            raise ZeroDivisionError("a bug")
        return original(snapshot, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "plan_with_tags", broken)
    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.exit_code == 1
    assert "internal error" in result.stderr
    assert result.report is not None
    by_name = {r["name"]: r for r in result.report["repositories"]}
    assert by_name["bug"]["error"].startswith("internal error while planning: ZeroDivisionError")
    assert by_name["bug"]["deleted"] == []
    assert len(by_name["fine"]["deleted"]) == 1
    assert result.report["summary"]["repositories_failed"] == 1


def test_an_internal_error_in_the_delete_phase_ends_the_run(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing delete worker must end the run, not leave the producer waiting forever."""
    from regcleaner.removers.api import ApiRemover

    for repo in range(40):  # more repositories than the queues hold
        for i in range(2):
            images.push_image(api, f"many/r{repo}", "v", seed=f"{repo}-{i}")

    async def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ApiRemover, "delete", broken)
    result = run_cli(clean_args(registry, "--timeout", "5"), report_path=tmp_path / "r.json")
    assert result.exit_code == 1
    assert result.report is not None
    assert result.report["error"] == "internal error: ZeroDivisionError"


def test_s3_defaults_follow_the_older_script() -> None:
    """REGISTRY_STORAGE=S3 with no REGISTRY_DIR means the bucket root, as before."""
    from regcleaner.config import StorageSettings
    from regcleaner.options import StorageOptions

    def s3(root: Path | None) -> StorageSettings:
        return StorageOptions(
            root,
            storage="S3",
            bucket="b",
            region="eu-west-1",
            access_key="AK",
            secret_key="sk-very-secret-value",
        ).settings()

    settings = s3(None)
    assert settings.s3 is not None
    assert settings.s3.prefix == ""
    assert "sk-very-secret-value" not in repr(settings)
    nested = s3(Path("/team/registry/"))
    assert nested.s3 is not None
    assert nested.s3.prefix == "team/registry"
