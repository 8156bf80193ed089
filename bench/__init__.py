"""The benchmark: synthetic registries at scale, measured against the delete floor."""

from __future__ import annotations

import compileall
from pathlib import Path

import regcleaner


def compile_regcleaner() -> None:
    """Write regcleaner's bytecode before timing it, as ``pip install`` and the image do.

    Without it a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (set on these machines)
    compiles every changed module again at each start: ~0.3 s a run, measured with
    py-spy, which is most of a short run such as ``clean --direct`` on 6,400 manifests.
    """
    compileall.compile_dir(Path(regcleaner.__file__).parent, quiet=1)
