"""Which repositories ``prune-empty-repositories`` removes, on a disk written with
testkit's registry_writer (the integration test does the same against both real
registries; these are the cases a registry cannot produce on demand)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from regcleaner.digest import Digest
from regcleaner.emptyrepos import PruneReport, prune_empty_repositories
from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.view import RegistryView
from testkit.registry_writer import DiskSink, RegistryWriter

REPOSITORIES = Path("docker/registry/v2/repositories")


def prune(root: Path, *, dry_run: bool = True, min_age_s: float = 0.0,
          deleted_digests: dict[str, set[Digest]] | None = None, gate_fails: bool = False
          ) -> tuple[PruneReport, list[str]]:  # fmt: skip
    calls: list[str] = []

    async def gate() -> None:
        calls.append("gate")
        if gate_fails:
            raise RuntimeError("the registry can write")

    async def run() -> PruneReport:
        store = FilesystemStore(root)
        try:
            return await prune_empty_repositories(
                RegistryView(store), gate=gate, dry_run=dry_run, min_age_s=min_age_s,
                deleted_digests=deleted_digests,
            )  # fmt: skip
        finally:
            await store.aclose()

    return asyncio.run(run()), calls


def emptied(root: Path, writer: RegistryWriter, name: str) -> None:
    """A repository whose manifests were all deleted: _layers links and empty folders."""
    image = writer.image(name, f"{{{name!r}:1}}".encode().replace(b"'", b'"'), [b"x" * 10],
                         oci=True)  # fmt: skip
    link = root / REPOSITORIES / name / "_manifests/revisions/sha256" / image.digest[7:] / "link"
    link.unlink()
    link.parent.rmdir()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    writer = RegistryWriter(DiskSink(tmp_path))
    kept = writer.image("alive", b'{"alive":1}', [b"a" * 10], oci=True)
    writer.tag("alive", "v1", kept.digest)
    emptied(tmp_path, writer, "empty")
    emptied(tmp_path, writer, "outer")
    inner = writer.image("outer/inner", b'{"inner":1}', [b"i" * 10], oci=True)
    writer.tag("outer/inner", "v1", inner.digest)
    return tmp_path


def test_only_repositories_without_manifests_go_and_nested_ones_stay(root: Path) -> None:
    report, calls = prune(root)
    assert sorted(report.removed) == ["empty", "outer"]
    assert calls == []  # a dry run needs no window
    assert (root / REPOSITORIES / "empty/_layers").is_dir()  # nothing removed

    report, calls = prune(root, dry_run=False)
    assert calls == ["gate"]
    assert sorted(report.removed) == ["empty", "outer"]
    assert not (root / REPOSITORIES / "empty").exists()
    assert not (root / REPOSITORIES / "outer/_layers").exists()
    assert (root / REPOSITORIES / "outer/inner/_manifests/tags/v1/current/link").is_file()
    assert (root / REPOSITORIES / "alive/_manifests/tags/v1/current/link").is_file()


def test_a_refused_gate_removes_nothing(root: Path) -> None:
    before = sorted(str(p) for p in root.rglob("*"))
    with pytest.raises(RuntimeError, match="can write"):
        prune(root, dry_run=False, gate_fails=True)
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_uploads_young_links_tag_history_and_links_keep_a_repository(root: Path) -> None:
    writer = RegistryWriter(DiskSink(root))
    from datetime import UTC, datetime

    emptied(root, writer, "uploading")
    writer.unfinished_upload("uploading", "u1", datetime.now(UTC))
    emptied(root, writer, "history")
    writer.raw(str(REPOSITORIES / "history/_manifests/tags/old/index/sha256/ab/link"), b"x")
    emptied(root, writer, "linked")
    os.symlink("/etc", root / REPOSITORIES / "linked/_layers/elsewhere")
    report, _ = prune(root, dry_run=False)
    reasons = dict(report.kept)
    assert reasons["uploading"].startswith("uploads in progress")
    assert "symbolic link" in reasons["linked"]
    assert "history" not in report.removed  # a file under _manifests: not empty
    assert (root / REPOSITORIES / "uploading/_uploads/u1/startedat").is_file()

    emptied(root, writer, "fresh")
    report, _ = prune(root, dry_run=True, min_age_s=3600)
    assert "fresh" not in report.removed
    assert dict(report.kept)["fresh"].startswith("a blob was linked")
    assert prune(root, dry_run=True)[0].removed == ["fresh"]


def test_a_clean_dry_run_counts_what_it_would_delete(tmp_path: Path) -> None:
    writer = RegistryWriter(DiskSink(tmp_path))
    untagged = writer.image("old", b'{"old":1}', [b"o" * 10], oci=True)
    tagged = writer.image("tagged", b'{"t":1}', [b"t" * 10], oci=True)
    writer.tag("tagged", "v1", tagged.digest)
    assert prune(tmp_path)[0].removed == []
    would = {"old": {Digest(untagged.digest)}, "tagged": {Digest(tagged.digest)}}
    assert sorted(prune(tmp_path, deleted_digests=would)[0].removed) == ["old", "tagged"]
    assert prune(tmp_path, deleted_digests={"tagged": set()})[0].removed == []
