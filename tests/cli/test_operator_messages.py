"""What an operator meets first: grouped help at 80 columns, bare command groups, and
bad values that name where they came from. Each test reads the exact output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

PANELS = (
    "Registry", "Storage", "Credentials and TLS", "What to keep", "Maintenance window",
    "Blob collection", "Speed", "Output and monitoring", "Kubernetes",
)  # fmt: skip


def test_clean_help_is_grouped_in_panels_at_80_columns() -> None:
    result = run_cli(["clean", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    titles = [line.strip("╭─╮ ").rstrip("─ ") for line in lines if line.startswith("╭─ ")]
    assert titles == ["Options", *PANELS]


def test_gc_help_shares_the_option_groups() -> None:
    result = run_cli(["gc", "--help"], env={"COLUMNS": "80"})
    titles = [line.strip("╭─╮ ").rstrip("─ ") for line in result.stdout.splitlines()
              if line.startswith("╭─ ")]  # fmt: skip
    assert titles == [
        "Options", "Registry", "Storage", "Credentials and TLS", "Maintenance window",
        "Blob collection", "Speed", "Output and monitoring",
    ]  # fmt: skip


def test_top_level_help_cuts_no_command_summary() -> None:
    result = run_cli(["--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.stdout
    assert "..." not in result.stdout.split("Commands")[1]
    # Each summary is one sentence that wraps at the panel's edge, never mid-line (a
    # docstring's own line break showed as "so that the catalog no / longer lists").
    import typer.main

    from regcleaner.cli import app

    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        summary = (command.help or "").strip().split("\n\n")[0]
        assert "\n" not in summary, f"{name}: {summary!r}"


@pytest.mark.parametrize("args", [[], ["policy"], ["events"]])
def test_a_command_group_alone_prints_its_help_and_exits_0(args: list[str]) -> None:
    result = run_cli(args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "Usage: regcleaner" in result.stdout
    assert "Commands" in result.stdout


def test_a_bad_value_from_the_environment_names_its_variable() -> None:
    result = run_cli(["clean", "--registry-url", "http://h"], env={"MIN_AGE": "abc"})
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --min-age: invalid duration 'abc': use a number of seconds or e.g. 30m, "
        "1h30m, 7d (from the environment variable MIN_AGE)\n"
    )


def test_a_bad_value_on_the_command_line_names_only_the_option() -> None:
    result = run_cli(["clean", "--registry-url", "http://h", "--min-age", "abc"])
    assert result.exit_code == 2
    assert "environment" not in result.stderr


def test_s3_options_with_filesystem_storage_are_not_silently_ignored(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    result = run_cli(
        ["clean", "--registry-dir", str(root), "--dry-run", "--bucket", "b",
         "--progress-interval", "0"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: --bucket is for --storage s3; ignored with filesystem storage\n" in (
        result.stderr
    )


def test_gc_needs_direct_is_said_before_anything_else() -> None:
    result = run_cli(["clean", "--gc"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --gc collects blobs in the maintenance window")


def test_include_that_matches_nothing_is_said(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories/team/app/_manifests").mkdir(parents=True)
    result = run_cli(
        ["clean", "--registry-dir", str(root), "--dry-run", "--include", "nomatch/**",
         "--progress-interval", "0"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "WARNING --include/--exclude selected no repository of filesystem " in result.stderr


def test_a_usage_error_is_a_json_line_when_json_logs_were_asked_for() -> None:
    """A log collector reading JSON lines gets the error as one of them (it was plain
    text: "error: ..."), with the variable the bad value came from."""
    import json

    result = run_cli(["clean", "--registry-url", "http://h"],
                     env={"MIN_AGE": "1hr", "REGCLEANER_LOG_FORMAT": "json"})  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = json.loads(lines[0])
    assert line["level"] == "error"
    assert "--min-age" in line["message"]
    assert "MIN_AGE" in line["message"]
    plain = run_cli(["clean", "--registry-url", "http://h"], env={"MIN_AGE": "1hr"})
    assert plain.stderr.startswith("error: ")
