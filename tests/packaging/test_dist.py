"""`make dist`: the wheel and sdist build reproducibly, pass twine, and the wheel installs
into a fresh virtual environment and runs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _digests(outdir: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in outdir.iterdir()}


def test_dist_is_reproducible_and_the_wheel_installs(tmp_path: Path) -> None:
    from tools.dist import build

    first = build(tmp_path / "one", ROOT)
    second = build(tmp_path / "two", ROOT)
    assert sorted(path.suffix for path in first) == [".gz", ".whl"]
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheel = next(path for path in second if path.suffix == ".whl")
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", f"{wheel}[s3]"], check=True, timeout=600
    )
    version = subprocess.run(
        [str(venv / "bin/regcleaner"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("regcleaner ")
    help_text = subprocess.run(
        [str(venv / "bin/regcleaner"), "clean", "--help"], capture_output=True, text=True,
        check=True, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert "Maintenance window" in help_text
