"""Build the wheel and sdist reproducibly: ``python -m tools.dist OUTDIR``.

The wheel is byte-identical across builds when SOURCE_DATE_EPOCH is set (setuptools
honours it); the sdist is not (its tar entries carry the build time, and so does the
gzip header), so it is repacked here: entries sorted, every mtime SOURCE_DATE_EPOCH,
owner root, gzip header time 0. Then ``twine check`` reads both.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path


def source_date_epoch(repository: Path) -> int:
    """The time of the last commit: the same for every build of one commit."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(
        ["git", "log", "-1", "--format=%ct"], cwd=repository, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def repack_sdist(path: Path, epoch: int) -> None:
    """Rewrite a .tar.gz with sorted entries, fixed times and owners."""
    with tarfile.open(path, "r:gz") as source:
        members = sorted(source.getmembers(), key=lambda member: member.name)
        payload = {
            member.name: source.extractfile(member).read()  # type: ignore[union-attr]
            for member in members
            if member.isfile()
        }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as target:
        for member in members:
            member.mtime = epoch
            member.uid = member.gid = 0
            member.uname = member.gname = "root"
            member.pax_headers = {}
            data = payload.get(member.name)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    with path.open("wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0
    ) as compressed:  # fmt: skip
        compressed.write(buffer.getvalue())


def build(outdir: Path, repository: Path) -> list[Path]:
    """Wheel and sdist of ``repository`` into ``outdir``; their paths."""
    epoch = source_date_epoch(repository)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    outdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(repository)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    built = sorted(outdir.glob("regcleaner-*"))
    for path in built:
        if path.name.endswith(".tar.gz"):
            repack_sdist(path, epoch)
    subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, built)], check=True
    )
    return built


if __name__ == "__main__":
    for artifact in build(Path(sys.argv[1] if len(sys.argv) > 1 else "dist"), Path.cwd()):
        print(artifact)
