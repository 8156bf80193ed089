"""The benchmark: synthetic registries at scale, measured against the delete floor."""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import regcleaner


def compile_regcleaner() -> None:
    """Write regcleaner's bytecode before timing it, as ``pip install`` and the image do.

    Without it a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (set on these machines)
    compiles every changed module again at each start: ~0.3 s a run, measured with
    py-spy, which is most of a short run such as ``clean --direct`` on 6,400 manifests.
    """
    compileall.compile_dir(Path(regcleaner.__file__).parent, quiet=1)


def run_cli(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, dict[str, Any]]:
    """Run ``python -m regcleaner ARGS`` as a subprocess with a JSON report and no
    progress lines; (wall seconds, the report). A non-zero exit raises, with the end
    of its standard error. ``cwd`` picks the checkout whose regcleaner runs."""
    handle, name = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    report = Path(name)
    command = [sys.executable, "-m", "regcleaner", *args, "--output", "json",
               "--progress-interval", "0", "--report", str(report)]  # fmt: skip
    try:
        started = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, check=False, env=env, cwd=cwd)  # fmt: skip
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"regcleaner {args[0]} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        document: dict[str, Any] = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    return elapsed, document


def linked_copy(source: Path, target: Path) -> None:
    """A hard-linked copy: cheap, and independent once the registry unlinks files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(source), str(target)], check=True)
