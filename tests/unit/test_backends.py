"""Backends are registered by name: a store module and one ``register`` call, and every
command runs on it. The proof is the in-memory store of testkit, run through the same
path as the disk and S3 (``--storage memory`` resolves through the registry)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regcleaner.errors import ConfigError
from regcleaner.storage import backends
from testkit.memory import MemoryStore, registered
from testkit.registry_writer import RegistryWriter
from tests.conftest import CliResult, run_cli


@pytest.fixture
def memory_backend() -> Iterator[MemoryStore]:
    """A registry in memory, registered as the ``memory`` backend for one test."""
    store = MemoryStore()
    writer = RegistryWriter(store)
    first = writer.image("app", b"config-1", [b"layer-1"], oci=True)
    second = writer.image("app", b"config-2", [b"layer-2"], oci=True)
    writer.tag("app", "v1", second.descriptor.digest, history=[first.descriptor.digest])
    with registered(store):
        yield store


def test_an_unknown_backend_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown storage 'gcs': use filesystem or s3"):
        backends.backend_named("gcs")


def test_a_registered_backend_runs_clean_and_gc(
    memory_backend: MemoryStore, tmp_path: Path
) -> None:
    before = memory_backend.stored_keys()
    clean = run_cli(
        ["clean", "--storage", "memory", "--dry-run", "--min-age", "0",
         "--progress-interval", "0", "--output", "json"]
    )  # fmt: skip
    assert clean.exit_code == 0, clean.output
    summary = json.loads(clean.stdout)["summary"]
    assert (summary["manifests"], summary["would_delete"]) == (2, 1)
    collect = run_cli(
        ["gc", "--storage", "memory", "--dry-run", "--progress-interval", "0"],
        report_path=tmp_path / "gc.json",
    )
    assert collect.exit_code == 0, collect.output
    assert collect.report is not None
    assert collect.report["summary"]["blobs_marked"] > 0
    assert memory_backend.stored_keys() == before, "a dry run changed the store"


def test_gc_after_clean_in_one_window_validates_cached_manifests_by_one_listing(
    memory_backend: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold ``clean --direct --gc --cache``: the scan starts with an empty cache (a
    HEAD each would be cheaper than listing the blobs), then caches every manifest it
    reads; gc, reading them all again, decides afresh and lists the blobs once instead
    of a HEAD per manifest. The listing pays here from 13 cached manifests."""
    from regcleaner.cachedreads import CachedReads

    writer = RegistryWriter(memory_backend)
    for n in range(20):  # all tagged: kept, and marked by gc
        image = writer.image("many", f"config-{n}".encode(), [f"layer-{n}".encode()], oci=True)
        writer.tag("many", f"v{n}", image.descriptor.digest)
    monkeypatch.setattr(CachedReads, "blob_listing_pays_from", 0.05)
    window = run_cli(
        ["clean", "--storage", "memory", "--direct", "--gc", "--dry-run", "--min-age", "0",
         "--cache", str(tmp_path / "cache.sqlite"), "--progress-interval", "0"],
        report_path=tmp_path / "window.json",
    )  # fmt: skip
    assert window.exit_code == 0, window.output
    assert window.report is not None
    scan = window.report["summary"]["storage_requests"]
    both = window.report["gc"]["summary"]["storage_requests"]  # the same store: in all
    # gc marks 21 manifests: a HEAD each without the listing (23 HEADs in all, seen).
    assert both["head"] == scan["head"]
    assert both["get"] == scan["get"] == 41  # the scan's manifests and tag links, once
    assert both["list"] > scan["list"]  # gc's listings, of the blobs among them


def test_a_warm_run_of_a_small_registry_lists_its_blobs_once_instead_of_a_head_each(
    memory_backend: MemoryStore, tmp_path: Path
) -> None:
    """On an object store, one flat page of the blobs validates 22 cached manifests:
    a page is one request, where a HEAD each is 22 (the listing had been weighed as
    if it took a page in each of the 256 fan-out folders too)."""
    writer = RegistryWriter(memory_backend)
    for n in range(20):
        image = writer.image("many", f"config-{n}".encode(), [f"layer-{n}".encode()], oci=True)
        writer.tag("many", f"v{n}", image.descriptor.digest)
    (_, cold_report), (warm, warm_report) = _cold_then_warm(
        ["clean", "--storage", "memory", "--dry-run", "--min-age", "0"], tmp_path
    )
    assert cold_report["summary"]["storage_requests"]["get"] >= 22  # the manifests
    requests = warm_report["summary"]["storage_requests"]
    assert (requests["get"], requests["head"]) == (0, 0), requests
    # The report says how warm each run was.
    assert cold_report["summary"]["scan_cache"]["read"] >= 22
    assert warm_report["summary"]["scan_cache"]["used"] >= 22
    assert warm_report["summary"]["scan_cache"]["read"] == 0
    assert "entries used, 0 keys read from storage" in warm.stderr
    assert warm_report["summary"]["would_delete"] == cold_report["summary"]["would_delete"]


def _cold_then_warm(command: list[str], tmp_path: Path) -> list[tuple[CliResult, dict[str, Any]]]:
    """``command`` twice with one scan cache: each run's result and report."""
    runs = []
    for name in ("cold", "warm"):
        result = run_cli([*command, "--cache", str(tmp_path / "cache.sqlite"),
                          "--progress-interval", "0"],
                         report_path=tmp_path / f"{name}.json")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.report is not None
        runs.append((result, result.report))
    return runs


def test_a_warm_gc_names_a_schema1_manifest_as_the_cold_one_does(
    memory_backend: MemoryStore, tmp_path: Path
) -> None:
    """gc warns of each schema1 manifest (distribution 3 cannot serve it): a manifest
    taken from the cache is named as one read."""
    writer = RegistryWriter(memory_backend)
    writer.tag("legacy", "v1", writer.schema1_image("legacy", [b"layer-a"]).digest)
    runs = _cold_then_warm(
        ["gc", "--storage", "memory", "--dry-run", "--registry-version", "3"], tmp_path
    )
    reports = [report for _, report in runs]
    gets = [report["summary"]["storage_requests"]["get"] for report in reports]
    assert gets[1] < gets[0], gets  # the manifest from the cache
    named = [[w for w in report["warnings"] if "is schema1" in w] for report in reports]
    assert len(named[0]) == 1
    assert named[1] == named[0]


def test_a_cache_path_naming_another_file_leaves_it_as_it_is(
    memory_backend: MemoryStore, tmp_path: Path
) -> None:
    """``--cache policy.yaml`` by mistake, in a dry run: the file stays as it was (it
    had become an empty SQLite cache), and the run goes on without a cache."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - keep_last: 5\n" * 50)
    before = policy.read_bytes()
    result = run_cli(["clean", "--storage", "memory", "--dry-run", "--min-age", "0",
                      "--cache", str(policy), "--progress-interval", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert policy.read_bytes() == before
    assert f"scan cache {policy} is not used and is left as it is" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.yaml"]


def test_a_report_that_cannot_be_written_is_refused_first_and_fails_the_run_last(
    memory_backend: MemoryStore, tmp_path: Path
) -> None:
    """The report is the record of what was deleted: a folder that is not there is
    refused before anything is read (it was found after the deletions, exit 0), and a
    write that fails at the end makes the exit code 1."""
    before = memory_backend.stored_keys()
    where = tmp_path / "no-such-folder" / "r.json"
    missing = run_cli(["clean", "--storage", "memory", "--direct", "--registry-stopped",
                       "--min-age", "0", "--report", str(where),
                       "--progress-interval", "0"])  # fmt: skip
    assert missing.exit_code == 2, missing.output
    assert f"--report {where}: its folder {where.parent} does not exist" in missing.stderr
    assert memory_backend.stored_keys() == before
    dangling = tmp_path / "report.json"
    dangling.symlink_to(tmp_path / "gone" / "r.json")  # checked where it points
    pointed = run_cli(["clean", "--storage", "memory", "--dry-run", "--min-age", "0",
                       "--report", str(dangling), "--progress-interval", "0"])  # fmt: skip
    assert pointed.exit_code == 2, pointed.output
    assert f"its folder {tmp_path / 'gone'} does not exist" in pointed.stderr
    full = run_cli(["clean", "--storage", "memory", "--dry-run", "--min-age", "0",
                    "--report", "/dev/full", "--progress-interval", "0"])  # fmt: skip
    assert "cannot write report /dev/full" in full.stderr
    assert full.exit_code == 1, full.output


def test_a_report_that_exists_needs_its_own_permission_not_its_folder_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/dev/stdout for a user who cannot write /dev (a pod that runs as non-root), or a
    report file of its own in a folder of root's: both were refused."""
    import os

    from regcleaner.config import check_report_path

    existing = tmp_path / "report.json"
    existing.write_text("")
    writable = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: not Path(path).is_dir()
                        and writable(path, mode))  # fmt: skip  # as a user without /dev
    check_report_path(existing)
    check_report_path(Path("/dev/stdout"))
    with pytest.raises(ConfigError, match="no permission to create it in"):
        check_report_path(tmp_path / "new.json")


def test_usage_writes_its_report_and_fails_when_it_cannot(
    memory_backend: MemoryStore, tmp_path: Path
) -> None:
    """usage's report file holds the rows it printed; one that cannot be written makes
    the exit code 1, as for clean and gc."""
    command = ["usage", "--storage", "memory", "--output", "json", "--progress-interval", "0"]
    written = run_cli([*command, "--report", str(tmp_path / "usage.json")])
    assert written.exit_code == 0, written.output
    report = json.loads((tmp_path / "usage.json").read_text())
    assert [row["name"] for row in report["repositories"]] == ["app"]
    assert report == json.loads(written.stdout)
    full = run_cli([*command, "--report", "/dev/full"])
    assert "cannot write report /dev/full" in full.stderr
    assert full.exit_code == 1, full.output
