"""Every duration and number option refuses bad values with exit 2 and one line naming
it, before anything is read or written; the valid forms are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

DURATIONS = ["--min-age", "--stop-grace", "--recheck-interval"]
NUMBERS = ["--rate", "--timeout", "--progress-interval"]
COUNTS = ["--concurrency", "--per-repository", "--gate-probes"]

BAD_DURATIONS = ["nan", "inf", "-1", "1e309", "\u0661\u0662", "5x", ""]
BAD_NUMBERS = ["nan", "inf", "-1", "\u0661"]
BAD_COUNTS = ["0", "-3", "1.5", "\u0663", "nan"]
BAD_SHARDS = ["1/0", "a/b", "\u0663/\u0664"]

BAD = [
    *[(option, value) for option in DURATIONS for value in BAD_DURATIONS],
    *[(option, value) for option in NUMBERS for value in BAD_NUMBERS],
    *[(option, value) for option in COUNTS for value in BAD_COUNTS],
    *[("--shard", value) for value in BAD_SHARDS],
]
CASES = [pytest.param(o, v, id=f"{o}={v!r}") for o, v in BAD]


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories/app/_manifests/revisions/sha256").mkdir(parents=True)
    return root


def snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def base_args(root: Path) -> list[str]:
    # Nothing listens on port 9: a run that got past the options would exit 3, not 2.
    return ["clean", "--registry-url", "http://127.0.0.1:9", "--registry-dir", str(root)]


def assert_refused(
    args: list[str], env: dict[str, str], names: tuple[str, ...], root: Path, tmp_path: Path
) -> None:
    before = snapshot(root)
    report = tmp_path / "report.json"
    result = run_cli(args, env=env, report_path=report)
    assert result.exit_code == 2, (args, env, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert any(name in lines[0] for name in names), lines[0]
    assert "Traceback" not in result.output
    assert not report.exists(), "a report was written: the run started"
    assert snapshot(root) == before


@pytest.mark.parametrize(("option", "value"), CASES)
def test_bad_value_exits_2_naming_the_option(
    option: str, value: str, storage_root: Path, tmp_path: Path
) -> None:
    args = [*base_args(storage_root), f"{option}={value}"]
    assert_refused(args, {}, (option,), storage_root, tmp_path)


@pytest.mark.parametrize("value", ["nan", "-1", "\u0661\u0662", "1e309"])
def test_bad_min_age_in_the_environment_exits_2(
    value: str, storage_root: Path, tmp_path: Path
) -> None:
    assert_refused(
        base_args(storage_root), {"MIN_AGE": value}, ("--min-age", "MIN_AGE"), storage_root,
        tmp_path,
    )  # fmt: skip


GOOD = [
    *[(option, value) for option in DURATIONS for value in ["90", "1h30m", "0.5", "2d"]],
    *[(option, value) for option in NUMBERS for value in ["90", "0.5"]],
    *[(option, value) for option in COUNTS for value in ["1", "90"]],
    ("--shard", "0/2"),
    ("--shard", "1/2"),
]


@pytest.mark.parametrize(("option", "value"), GOOD, ids=[f"{o}={v}" for o, v in GOOD])
def test_valid_values_are_accepted(
    option: str, value: str, storage_root: Path, tmp_path: Path
) -> None:
    args = ["clean", "--registry-dir", str(storage_root), "--dry-run", f"{option}={value}"]
    result = run_cli(args, report_path=tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert result.report is not None
    assert result.report["dry_run"] is True
    summary = result.report["summary"]
    if option == "--shard":  # the one repository falls in one of the two shards
        assert summary["repositories"] + summary["repositories_skipped"] == 1
    else:
        assert summary["repositories"] == 1


def test_valid_min_age_from_the_environment_is_accepted(storage_root: Path, tmp_path: Path) -> None:
    args = ["clean", "--registry-dir", str(storage_root), "--dry-run"]
    for value in ("90", "1h30m", "0.5", "2d"):
        result = run_cli(args, env={"MIN_AGE": value}, report_path=tmp_path / "r.json")
        assert result.exit_code == 0, (value, result.output)
