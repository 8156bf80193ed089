"""``regcleaner policy check`` and ``clean --policy``: a bad policy file exits 2 with one
line naming the field and the line, before anything is touched; repository globs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from tests.conftest import CliResult, clean_args, run_cli
from tests.unit.test_retention import BAD_FILES, DUPLICATE_FILES, VALID


def policy_file(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error_line(result: CliResult) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "", "nothing but the error"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_check_a_valid_file_summarises_it(tmp_path: Path) -> None:
    path = policy_file(tmp_path, VALID)
    result = run_cli(["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "policies[0]: repositories ci/**, team-*/app",
        "  keep[0](line 4): tags ^latest$",
        "  keep[1](line 5): tags ^main-; newest 3",
        "  keep[2](line 7): every tag; pushed within 7d",
        "  keep at least 2 tag(s) per repository",
        "policies[1]: repositories **",
        "  keep[0](line 11): every tag; newest 10",
        "  keep at least 1 tag(s) per repository",
        f"{path}: valid; repositories no policy matches keep every tag",
    ]


def test_check_a_valid_json_file(tmp_path: Path) -> None:
    path = policy_file(
        tmp_path,
        '{"policies": [{"repositories": ["**/app"],\n'
        '  "keep": [{"tags": ["^v\\\\d+$"], "newest": 2, "pushed_within": "12h"}],\n'
        '  "keep_at_least": 0}]}\n',
        "policy.json",
    )
    result = run_cli(["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "policies[0]: repositories **/app" in result.stdout
    assert "tags ^v\\d+$; newest 2; pushed within 12h" in result.stdout
    assert "keep at least 0 tag(s) per repository" in result.stdout


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [pytest.param(text, field, line, id=name) for name, text, field, line in BAD_FILES],
)
def test_check_a_bad_file_exits_2_with_the_field_and_line(
    tmp_path: Path, text: str, field: str, line: int
) -> None:
    path = policy_file(tmp_path, text)
    error = one_error_line(run_cli(["policy", "check", str(path)]))
    assert error.startswith(f"error: {path}:line {line}: {field}: "), error


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [pytest.param(text, field, line, id=name) for name, text, field, line in DUPLICATE_FILES],
)
def test_check_a_duplicate_key_names_the_field(
    tmp_path: Path, text: str, field: str, line: int
) -> None:
    path = policy_file(tmp_path, text)
    error = one_error_line(run_cli(["policy", "check", str(path)]))
    assert error.startswith(f"error: {path}:line {line}: {field}: "), error


@pytest.mark.parametrize(
    ("text", "line"), [pytest.param(text, line, id=name) for name, text, _, line in DUPLICATE_FILES]
)
def test_check_a_duplicate_key_exits_2_with_its_line(tmp_path: Path, text: str, line: int) -> None:
    path = policy_file(tmp_path, text)
    error = one_error_line(run_cli(["policy", "check", str(path)]))
    assert error.startswith(f"error: {path}:line {line}: "), error
    assert "given twice" in error


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("policies: [\n", "not valid YAML or JSON"),
        ("", "empty policy file"),
        ("- just\n- a list\n", "(top): must be a mapping"),
    ],
)
def test_check_unusable_files(tmp_path: Path, text: str, problem: str) -> None:
    path = policy_file(tmp_path, text)
    error = one_error_line(run_cli(["policy", "check", str(path)]))
    assert error.startswith(f"error: {path}"), error
    assert problem in error


def test_check_a_missing_file(tmp_path: Path) -> None:
    error = one_error_line(run_cli(["policy", "check", str(tmp_path / "nope.yaml")]))
    assert "cannot read policy file" in error


# -- clean --policy BAD -----------------------------------------------------------------


def storage_state(root: Path) -> dict[str, tuple[bytes, int]]:
    state: dict[str, tuple[bytes, int]] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            state[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return state


@pytest.mark.parametrize("direct", [False, True], ids=["api", "direct"])
def test_clean_with_a_bad_policy_exits_2_before_touching_anything(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, direct: bool
) -> None:
    old = images.push_image(api, "app", "old", seed="bad-policy-old")
    images.push_image(api, "app", "v1", seed="bad-policy-1")
    images.push_image(api, "app", "v1", seed="bad-policy-2")  # leaves an untagged manifest
    before = storage_state(registry.root)
    _, text, field, line = BAD_FILES[5]  # a negative newest
    path = policy_file(tmp_path, text)
    extra = ["--direct"] if direct else []
    report = tmp_path / "r.json"
    result = run_cli(clean_args(registry, "--policy", str(path), *extra), report_path=report)
    error = one_error_line(result)
    assert error == f"error: {path}:line {line}: {field}: must be a whole number >= 0, not -1"
    assert storage_state(registry.root) == before
    assert not report.exists()
    assert set(api.tags("app")) == {"old", "v1"}
    assert api.manifest_exists("app", old.digest)


def test_bad_policy_is_refused_before_the_registry_is_contacted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    path = policy_file(tmp_path, BAD_FILES[3][1])  # a bad regex
    for args, env in (
        (["--policy", str(path)], {}),
        ([], {"REGCLEANER_POLICY": str(path)}),
    ):
        result = run_cli(
            ["clean", "--registry-url", "http://127.0.0.1:9", "--registry-dir", str(root),
             *args], env=env,
        )  # fmt: skip
        error = one_error_line(result)  # 2, not 3 (unreachable)
        assert error.startswith(f"error: {path}:line 6: policies[0].keep[0].tags: bad regex")


# -- --include / --exclude globs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("include", "exclude", "selected"),
    [
        (["team/*"], [], ["team/a"]),
        (["team/**"], [], ["team/a", "team/a/b"]),
        (["team/**"], ["team/*"], ["team/a/b"]),
        (["**/b"], [], ["other/b", "team/a/b"]),
        (["*"], [], ["solo"]),
    ],
)
def test_include_and_exclude_globs(
    registry: RegistryProcess,
    api: RegistryAPI,
    tmp_path: Path,
    include: list[str],
    exclude: list[str],
    selected: list[str],
) -> None:
    for repository in ("team/a", "team/a/b", "other/b", "solo"):
        images.push_image(api, repository, "v", seed=f"{repository}-1")
    args = [f"--include={g}" for g in include] + [f"--exclude={g}" for g in exclude]
    result = run_cli(clean_args(registry, "--dry-run", *args), report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert result.report is not None
    assert sorted(r["name"] for r in result.report["repositories"]) == selected


# -- pulled_within ------------------------------------------------------------------------

PULLS_POLICY = """\
policies:
  - repositories: ["**"]
    keep:
      - tags: ["^v"]
        pulled_within: 30d
      - newest: 2
"""


def test_check_explains_pulled_within_and_the_safe_default(tmp_path: Path) -> None:
    path = policy_file(tmp_path, PULLS_POLICY)
    result = run_cli(["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "policies[0]: repositories **",
        "  keep[0](line 4): tags ^v; pulled within 30d",
        "  keep[1](line 6): every tag; newest 2",
        "  keep at least 1 tag(s) per repository",
    ]
    assert all(len(line) <= 100 for line in lines[4:-1]), lines
    explained = " ".join(line.strip() for line in lines[4:-1])
    assert "its digest was pulled in the last D, by any tag or by digest" in explained
    assert "--pulls-db" in explained
    assert "counts as not pulled only if recording covered the whole period D" in explained
    assert "if recording began too recently, the tag is kept" in explained
    assert "pull-through cache" in explained
    assert lines[-1] == f"{path}: valid; repositories no policy matches keep every tag"


def empty_storage(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    return root


def test_clean_with_pulled_within_needs_the_pull_record(tmp_path: Path) -> None:
    path = policy_file(tmp_path, PULLS_POLICY)
    root = empty_storage(tmp_path)
    result = run_cli(["clean", "--registry-url", "http://127.0.0.1:9", "--registry-dir",
                      str(root), "--policy", str(path)])  # fmt: skip
    error = one_error_line(result)
    assert "pulled_within" in error
    assert "--pulls-db" in error


def test_clean_with_a_pull_record_that_is_not_one_exits_2(tmp_path: Path) -> None:
    path = policy_file(tmp_path, PULLS_POLICY)
    root = empty_storage(tmp_path)
    garbage = tmp_path / "pulls.db"
    garbage.write_bytes(b"not a database at all\n" * 100)
    result = run_cli(["clean", "--registry-url", "http://127.0.0.1:9", "--registry-dir",
                      str(root), "--policy", str(path), "--pulls-db", str(garbage)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "not a pull record" in result.output
    assert "Traceback" not in result.output
