"""Attached artifacts that retention must not lose, against the real registry:

- the OCI 1.1 referrers tag schema (``sha256-<hex>``, no suffix), the only way oras,
  notation or cosign in OCI 1.1 mode find referrers on a registry without a referrers
  API (2.8 and 3.x alike): it follows its subject, like a signature tag;
- signatures kept in another repository (cosign's ``COSIGN_REPOSITORY``): an orphan
  only when the digest they sign is a revision of no repository, which only a run that
  reads the whole registry knows;
- after a stop, planned deletions that never happened are counted as not attempted.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from regcleaner.pushwatch import RepositoryWaveContext
from regcleaner.removers.base import Removal
from testkit import images
from testkit.api import RegistryAPI
from testkit.registry import RegistryProcess
from testkit.signatures import push_referrers_index, push_signature_for, referrers_tag
from tests.conftest import clean_args, run_cli
from tests.integration.test_push_races import Backend, backend
from tests.integration.test_retention import (
    KEEP_PREFIX,
    clean,
    digests,
    go_read_only,
    kept_tags,
    record,
    removed,
    survives_garbage_collect,
    tags_of,
    write_policy,
)

pytestmark = pytest.mark.integration
__all__ = ["backend"]  # the fixture, from test_push_races

MODES = ["api", "direct"]
NOWHERE = "sha256:" + "ab" * 32


@pytest.mark.parametrize("mode", MODES)
def test_referrers_tag_schema_follows_its_subject(
    mode: str, registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    kept = images.push_image(api, "art", "keep-a", seed="art-a", oci=True)
    kept_sbom = images.push_referrer(api, "art", kept, seed="art-a-sbom")
    kept_index = push_referrers_index(api, "art", kept, [kept_sbom])
    old = images.push_image(api, "art", "old-b", seed="art-b", oci=True)
    old_sbom = images.push_referrer(api, "art", old, seed="art-b-sbom")
    old_index = push_referrers_index(api, "art", old, [old_sbom])
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="art"))
    if mode == "direct":
        go_read_only(registry)

    result = clean(registry, mode, tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    report = result.report
    assert kept_tags(report, "art") == {"keep-a", referrers_tag(kept)}
    assert digests(report, "art", "deleted") == {old.digest, old_sbom.digest, old_index.digest}
    assert removed(report, "art") == {"old-b": old.digest, referrers_tag(old): old_index.digest}
    for pushed in (kept, kept_sbom, kept_index):
        assert api.manifest_exists("art", pushed.digest), pushed
    survives_garbage_collect(registry, api, {"art": {"keep-a", referrers_tag(kept)}})


@pytest.mark.parametrize("mode", MODES)
def test_signatures_in_another_repository_follow_the_registry(
    mode: str, registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    """Signatures in ``app-sigs`` of images in ``app``: the one of the current image
    stays (with its referrers index), the one of an image this run deletes goes at the
    end of the run, and so does the one of a digest no repository has. A run that reads
    only part of the registry cannot know, and keeps them all."""
    old = images.push_image(api, "app", "v1", seed="app-old")
    current = images.push_image(api, "app", "v1", seed="app-new")  # old is untagged now
    current_sig = push_signature_for(api, "app-sigs", current, seed="sig-current")
    current_index = push_referrers_index(api, "app-sigs", current, [current_sig])
    old_sig = push_signature_for(api, "app-sigs", old, seed="sig-old")
    nowhere_sig = push_signature_for(api, "app-sigs", NOWHERE, seed="sig-nowhere")
    if mode == "direct":
        go_read_only(registry)

    part = clean(registry, mode, tmp_path / "part.json", "--prune-orphan-signatures",
                 "--include", "app-sigs")  # fmt: skip
    assert part.exit_code == 0, part.output
    assert digests(part.report, "app-sigs", "deleted") == set()
    reasons = {t["tag"]: t["reason"] for t in tags_of(part.report, "app-sigs")["kept"]}
    assert set(reasons) == {t for s in (current_sig, old_sig, nowhere_sig) for t in s.tags} | {
        referrers_tag(current)
    }
    assert all("only part of the registry" in r for r in reasons.values()), reasons

    dry = clean(registry, mode, tmp_path / "dry.json", "--prune-orphan-signatures", "--dry-run")
    assert dry.exit_code == 0, dry.output
    going = {old_sig.digest, nowhere_sig.digest}
    assert digests(dry.report, "app-sigs", "would_delete") == going

    result = clean(registry, mode, tmp_path / "r.json", "--prune-orphan-signatures")
    assert result.exit_code == 0, result.output
    report = result.report
    assert digests(report, "app", "deleted") == {old.digest}
    assert digests(report, "app-sigs", "deleted") == going
    assert set(removed(report, "app-sigs")) == {*old_sig.tags, *nowhere_sig.tags}
    assert kept_tags(report, "app-sigs") == {*current_sig.tags, referrers_tag(current)}
    assert len(record(report, "app-sigs")["kept"]) == 2
    for pushed in (current_sig, current_index):
        assert api.manifest_exists("app-sigs", pushed.digest)
    survives_garbage_collect(
        registry, api, {"app": {"v1"}, "app-sigs": {*current_sig.tags, referrers_tag(current)}}
    )


def test_deletions_a_stop_prevented_are_counted_not_attempted(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM after the first DELETE: every planned deletion that did not happen is
    reported as not attempted (``summary.not_attempted``), none as kept."""
    images.push_image(api, "stop", "latest", seed="stop-live")
    for number in range(6):
        images.push_image(api, "stop", None, seed=f"stop-{number}")
    original = RepositoryWaveContext.record
    signalled: list[bool] = []

    def stop_after_the_first(self: RepositoryWaveContext, removal: Removal) -> None:
        original(self, removal)
        if self.report.counters.deleted and not signalled:
            signalled.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(RepositoryWaveContext, "record", stop_after_the_first)
    args = clean_args(registry, "--concurrency", "1", "--per-repository", "1", "--rate", "2")
    result = run_cli(args, report_path=tmp_path / "r.json")
    assert result.exit_code == 143, result.output
    assert signalled == [True]
    report = result.report
    assert report is not None
    summary = report["summary"]
    kept = [k["reason"] for k in record(report, "stop")["kept"]]
    assert "stopped-before-delete" not in kept
    not_attempted = [r for r in kept if r.startswith("not-attempted:")]
    assert summary["not_attempted"] == len(not_attempted) > 0, summary
    assert summary["deleted"] + summary["not_attempted"] + summary["failed"] == 6, summary


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
def test_signatures_in_another_repository_on_s3_direct(backend: Backend, tmp_path: Path) -> None:
    """The second pass on S3, where removals of many repositories share DeleteObjects
    requests: the batcher takes the deferred repository after the first pass ended."""
    api = RegistryAPI(backend.registry.url)
    old = images.push_image(api, "app", "v1", seed="s3-old")
    current = images.push_image(api, "app", "v1", seed="s3-new")
    current_sig = push_signature_for(api, "app-sigs", current, seed="s3-sig-current")
    old_sig = push_signature_for(api, "app-sigs", old, seed="s3-sig-old")
    nowhere_sig = push_signature_for(api, "app-sigs", NOWHERE, seed="s3-sig-nowhere")
    backend.registry.readonly = True
    backend.registry.restart()

    args = backend.args(backend.registry.url, "--direct", "--prune-orphan-signatures")
    result = run_cli(args, env=backend.env, report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert digests(result.report, "app", "deleted") == {old.digest}
    assert digests(result.report, "app-sigs", "deleted") == {old_sig.digest, nowhere_sig.digest}
    assert kept_tags(result.report, "app-sigs") == set(current_sig.tags)
    assert set(api.tags("app-sigs")) == set(current_sig.tags)
    api.pull("app-sigs", current_sig.tags[0])
    api.pull("app", "v1")
