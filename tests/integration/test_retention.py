"""``clean --policy``: tag retention against the real registry, through the API and with
``--direct`` (a read-only registry). After every real run each surviving tag pulls
completely, and again after ``docker-registry garbage-collect``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regcleaner import tagremoval
from regcleaner.removers.direct import DirectRemover
from regcleaner.tagremoval import PROBE_TAG_PREFIX
from testkit import images
from testkit.api import Pushed, RegistryAPI
from testkit.faults import FaultProxy, FaultScript
from testkit.registry import RegistryProcess, running
from tests.conftest import CliResult, clean_args, run_cli

pytestmark = pytest.mark.integration

V2 = "docker/registry/v2"
DAY = 86400.0
MODES = ["api", "direct"]


# -- helpers ----------------------------------------------------------------------------


def tag_link(registry: RegistryProcess, repository: str, tag: str) -> Path:
    repositories = registry.root / V2 / "repositories"
    return repositories / repository / "_manifests/tags" / tag / "current/link"


def set_push_time(registry: RegistryProcess, repository: str, tag: str, when: float) -> None:
    """The tag's push time is its ``current/link`` mtime."""
    os.utime(tag_link(registry, repository, tag), (when, when))


def signature_tag(signed: Pushed, kind: str = "sig") -> str:
    return "sha256-" + signed.digest.split(":", 1)[1] + "." + kind


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def storage_state(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the storage root: content and mtime."""
    state: dict[str, tuple[bytes, int]] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            state[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return state


def revisions_on_disk(root: Path, repository: str) -> set[str]:
    base = root / V2 / "repositories" / repository / "_manifests/revisions/sha256"
    return {"sha256:" + link.parent.name for link in base.glob("*/link")}


def go_read_only(registry: RegistryProcess) -> None:
    """Direct removal needs a registry that cannot write."""
    registry.readonly = True
    registry.restart()


def refuse_removal(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """The disk store refuses to delete any key ending in ``suffix`` (EACCES), as a
    storage that denies one removal would; every other key is deleted as usual."""
    from regcleaner.storage.filesystem import FilesystemStore

    delete_many_sync = FilesystemStore._delete_many_sync

    def refuse(
        self: FilesystemStore, keys: Sequence[str], directories: Sequence[str]
    ) -> list[str | None]:
        done = iter(
            delete_many_sync(self, [k for k in keys if not k.endswith(suffix)], directories)
        )
        return ["EACCES: refused by the test" if k.endswith(suffix) else next(done)
                for k in keys]  # fmt: skip

    monkeypatch.setattr(FilesystemStore, "_delete_many_sync", refuse)


def retag_after_the_scan(
    monkeypatch: pytest.MonkeyPatch, api: RegistryAPI, repository: str, tag: str,
    pushed: Pushed,
) -> None:  # fmt: skip
    """Between the scan and the first wave of an API run, push ``pushed``'s manifest
    again under ``tag`` (a re-tag of the same content)."""
    from regcleaner.engine import PushWatch

    original = PushWatch.start

    async def push_between_scan_and_deletions(self: PushWatch) -> None:
        body = api.get_manifest(repository, pushed.digest)
        api.put_manifest(repository, tag, body.body, body.headers["Content-Type"])
        await original(self)

    monkeypatch.setattr(PushWatch, "start", push_between_scan_and_deletions)


@pytest.fixture
def tags_go_with_their_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DELETE-by-digest path on both registries: the race tests below are about how
    a tag that a DELETE by digest takes along is watched and reported (2.8's only way;
    on 3 the run would otherwise delete expired tags alone: test_tag_deletion.py)."""

    async def no_single_tag_deletion(client: object, repository: str) -> bool:
        return False

    monkeypatch.setattr(tagremoval, "registry_deletes_tags", no_single_tag_deletion)


class DigestPathRace:
    """A FaultScript's ``decide`` for the races of the DELETE-by-digest path: the
    registry's tag-deletion probe is answered 400 (as 2.8 answers it), so that expired
    tags go with their digest on both registries, and ``push`` runs once, before the
    first DELETE by digest reaches the registry."""

    def __init__(self, push: Callable[[], object]) -> None:
        self.push = push
        self.fired = False

    def __call__(self, number: int, path: str) -> int | str | None:
        if PROBE_TAG_PREFIX in path:
            return 400
        if "/manifests/sha256:" in path and not self.fired:
            self.fired = True
            self.push()
        return None


def clean(
    registry: RegistryProcess,
    mode: str,
    report: Path,
    *extra: str,
    url: str | None = None,
) -> CliResult:
    args = clean_args(registry, *(["--direct"] if mode == "direct" else []), *extra)
    if url is not None:
        args[args.index("--registry-url") + 1] = url
    result = run_cli(args, report_path=report)
    assert result.report is not None, result.output
    return result


def record(report: dict[str, Any] | None, repository: str) -> dict[str, Any]:
    assert report is not None
    found = [r for r in report["repositories"] if r["name"] == repository]
    assert len(found) == 1, [r["name"] for r in report["repositories"]]
    return dict(found[0])


def tags_of(report: dict[str, Any] | None, repository: str) -> dict[str, list[dict[str, str]]]:
    section = record(report, repository).get("tags")
    assert isinstance(section, dict), record(report, repository)
    return section


def removed(report: dict[str, Any] | None, repository: str) -> dict[str, str]:
    """Removed tags, with the digest each pointed at."""
    return {t["tag"]: t["digest"] for t in tags_of(report, repository)["removed"]}


def expired_staying(report: dict[str, Any] | None, repository: str) -> dict[str, str]:
    """Expired tags that stay, with why."""
    return {t["tag"]: t["stays"] for t in tags_of(report, repository)["expired"]}


def kept_tags(report: dict[str, Any] | None, repository: str) -> set[str]:
    return {t["tag"] for t in tags_of(report, repository)["kept"]}


def digests(report: dict[str, Any] | None, repository: str, field_name: str) -> set[str]:
    return {item["digest"] for item in record(report, repository)[field_name]}


def pull_every_tag(api: RegistryAPI, repositories: Iterable[str]) -> dict[str, set[str]]:
    """Pull every tag the registry lists, completely; return the tags per repository."""
    found: dict[str, set[str]] = {}
    for repository in repositories:
        found[repository] = set(api.tags(repository))
        for tag in sorted(found[repository]):
            api.pull(repository, tag)
    return found


def survives_garbage_collect(
    registry: RegistryProcess, api: RegistryAPI, expected: dict[str, set[str]]
) -> None:
    """Every surviving tag pulls now, and again after garbage-collect."""
    assert pull_every_tag(api, expected) == expected
    registry.stop()
    registry.garbage_collect()
    registry.start()
    assert pull_every_tag(api, expected) == expected


# -- shared digests ---------------------------------------------------------------------


@dataclass
class Shared:
    kept: Pushed
    lone: Pushed
    index: Pushed
    child: Pushed


def push_shared(api: RegistryAPI) -> Shared:
    """``keep-me`` and ``old-1`` on one digest, ``old-2`` alone on another, and
    ``old-child`` on a child of the kept index ``keep-idx``."""
    kept = images.push_image(api, "shared", "keep-me", seed="shared-kept")
    body = api.get_manifest("shared", kept.digest)
    api.put_manifest("shared", "old-1", body.body, body.headers["Content-Type"])
    lone = images.push_image(api, "shared", "old-2", seed="shared-lone")
    index, children = images.push_multiarch(api, "shared", "keep-idx", seed="shared-idx")
    body = api.get_manifest("shared", children[0].digest)
    api.put_manifest("shared", "old-child", body.body, body.headers["Content-Type"])
    return Shared(kept, lone, index, children[0])


KEEP_PREFIX = """\
policies:
  - repositories: ["{repository}"]
    keep:
      - tags: ["^keep-"]
"""


@pytest.mark.parametrize("mode", MODES)
def test_shared_digest(
    mode: str, registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    pushed = push_shared(api)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="shared"))
    if mode == "direct":
        go_read_only(registry)

    result = clean(registry, mode, tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    report = result.report
    assert digests(report, "shared", "deleted") == {pushed.lone.digest}
    assert kept_tags(report, "shared") == {"keep-me", "keep-idx"}
    assert not api.manifest_exists("shared", pushed.lone.digest)
    assert api.manifest_exists("shared", pushed.kept.digest)
    assert api.manifest_exists("shared", pushed.child.digest)
    assert report is not None
    summary = report["summary"]

    if mode == "api" and registry.flavour != "3.1.1":
        # 2.8: a DELETE by digest would take keep-me along: the digest stays, so old-1 too.
        assert removed(report, "shared") == {"old-2": pushed.lone.digest}
        assert expired_staying(report, "shared") == {
            "old-1": "shares-digest-with:keep-me",
            "old-child": f"digest-in-use:child-of:{pushed.index.digest}",
        }
        assert (summary["tags_removed"], summary["tags_expired_kept"]) == (1, 2)
        survivors = {"keep-me", "old-1", "keep-idx", "old-child"}
        for tag in ("keep-me", "old-1"):
            assert pushed.kept.digest in api.pull("shared", tag)
    else:
        # The expired tags go alone (their folders, or DELETE by tag on 3); their
        # siblings are untouched.
        assert removed(report, "shared") == {
            "old-1": pushed.kept.digest,
            "old-2": pushed.lone.digest,
            "old-child": pushed.child.digest,
        }
        assert expired_staying(report, "shared") == {}
        assert (summary["tags_removed"], summary["tags_expired_kept"]) == (3, 0)
        survivors = {"keep-me", "keep-idx"}
        assert not tag_link(registry, "shared", "old-1").exists()
        assert api.get_manifest("shared", "old-1").status == 404
        assert pushed.kept.digest in api.pull("shared", "keep-me")
    survives_garbage_collect(registry, api, {"shared": survivors})


# -- newest by push time ----------------------------------------------------------------

NEWEST = """\
policies:
  - repositories: ["team-*/app", "other"]
    keep:
      - tags: ["^main-"]
        newest: 2
      - tags: ["^dev-"]
        pushed_within: 1d
    keep_at_least: 1
"""


@pytest.mark.parametrize("mode", MODES)
def test_newest_counts_push_time_not_names(
    mode: str, registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    repo = "team-a/app"
    pushed = {
        tag: images.push_image(api, repo, tag, seed=f"newest-{tag}")
        for tag in ("main-1", "main-2", "main-3", "main-4", "main-5", "dev-new", "dev-old")
    }
    now = time.time()
    # Name order and push order differ; main-1 and main-5 tie at the boundary.
    ages = {"main-3": 1, "main-1": 2, "main-5": 2, "main-2": 3, "main-4": 4, "dev-old": 3}
    for tag, days in ages.items():
        set_push_time(registry, repo, tag, now - days * DAY)
    # A repository no policy matches keeps every tag, however old.
    untouched = images.push_image(api, "team-a/x/app", "main-0", seed="unmatched")
    set_push_time(registry, "team-a/x/app", "main-0", now - 30 * DAY)
    policy = write_policy(tmp_path, NEWEST)
    if mode == "direct":
        go_read_only(registry)

    result = clean(registry, mode, tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    report = result.report
    gone = {"main-2", "main-4", "dev-old"}
    assert removed(report, repo) == {t: pushed[t].digest for t in gone}
    assert kept_tags(report, repo) == {"main-1", "main-3", "main-5", "dev-new"}
    assert digests(report, repo, "deleted") == {pushed[t].digest for t in gone}
    for tag, image in pushed.items():
        assert api.manifest_exists(repo, image.digest) == (tag not in gone), tag
    assert record(report, "team-a/x/app")["deleted"] == []
    assert api.manifest_exists("team-a/x/app", untouched.digest)
    survives_garbage_collect(
        registry, api,
        {repo: set(pushed) - gone, "team-a/x/app": {"main-0"}},
    )  # fmt: skip


# -- cosign signature tags --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_signature_of_a_deleted_image_goes_the_other_stays(
    mode: str, registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    kept = images.push_image(api, "signed", "keep-a", seed="signed-a")
    expired = images.push_image(api, "signed", "old-b", seed="signed-b")
    kept_sig = images.push_cosign_signature(api, "signed", kept, seed="sig-a")
    kept_att = images.push_image(
        api, "signed", signature_tag(kept, "att"), seed="att-a", oci=True,
        artifact_type="application/vnd.dsse.envelope.v1+json",
    )  # fmt: skip
    expired_sig = images.push_cosign_signature(api, "signed", expired, seed="sig-b")
    # A pattern that reads like it keeps every signature keeps none: they follow
    # the digest they sign.
    policy = write_policy(
        tmp_path,
        "policies:\n  - repositories: [signed]\n    keep:\n      - tags: ['^keep-', '^sha256-']\n",
    )
    if mode == "direct":
        go_read_only(registry)

    result = clean(registry, mode, tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    report = result.report
    assert digests(report, "signed", "deleted") == {expired.digest, expired_sig.digest}
    assert removed(report, "signed") == {
        "old-b": expired.digest,
        signature_tag(expired): expired_sig.digest,
    }
    reasons = {t["tag"]: t["reason"] for t in tags_of(report, "signed")["removed"]}
    assert expired.digest in reasons[signature_tag(expired)]
    survivors = {"keep-a", signature_tag(kept), signature_tag(kept, "att")}
    assert kept_tags(report, "signed") == survivors
    assert not api.manifest_exists("signed", expired.digest)
    assert not api.manifest_exists("signed", expired_sig.digest)
    assert api.manifest_exists("signed", kept_sig.digest)
    assert api.manifest_exists("signed", kept_att.digest)
    survives_garbage_collect(registry, api, {"signed": survivors})


def test_prune_orphan_signatures_without_a_policy(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    old = images.push_image(api, "plain", "v1", seed="plain-old")
    old_sig = images.push_cosign_signature(api, "plain", old, seed="plain-old-sig")
    new = images.push_image(api, "plain", "v1", seed="plain-new")  # old is now untagged
    new_sig = images.push_cosign_signature(api, "plain", new, seed="plain-new-sig")

    plain = clean(registry, "api", tmp_path / "d.json", "--dry-run")
    assert plain.exit_code == 0, plain.output
    assert digests(plain.report, "plain", "would_delete") == {old.digest}, (
        "without the flag a signature tag is an ordinary tag"
    )

    result = clean(registry, "api", tmp_path / "r.json", "--prune-orphan-signatures")
    assert result.exit_code == 0, result.output
    assert digests(result.report, "plain", "deleted") == {old.digest, old_sig.digest}
    assert removed(result.report, "plain") == {signature_tag(old): old_sig.digest}
    assert api.manifest_exists("plain", new_sig.digest)
    survives_garbage_collect(registry, api, {"plain": {"v1", signature_tag(new)}})


# -- a tag re-tagged during the run -----------------------------------------------------


def test_expired_tag_pushed_again_during_the_run_is_kept_api(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    keep = images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    pushed_again: list[Pushed] = []

    decide = DigestPathRace(
        lambda: pushed_again.append(images.push_image(api, "race", "old-b", seed="race-b-again"))
    )

    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    with running(FaultProxy(registry.url, FaultScript(decide=decide))) as proxy:
        result = clean(registry, "api", tmp_path / "r.json", "--policy", str(policy),
                       "--per-repository", "1", url=proxy.url)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(pushed_again) == 1
    again = pushed_again[0]
    assert set(api.tags("race")) == {"keep-a", "old-b"}
    assert again.digest in api.pull("race", "old-b")
    assert not api.manifest_exists("race", old_b.digest), "its old digest is untagged now"
    assert not api.manifest_exists("race", old_c.digest)
    assert api.manifest_exists("race", keep.digest)
    survives_garbage_collect(registry, api, {"race": {"keep-a", "old-b"}})


@pytest.mark.usefixtures("tags_go_with_their_digest")
def test_expired_tag_pushed_again_with_the_same_manifest_keeps_it_api(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    retag_after_the_scan(monkeypatch, api, "race", "old-b", old_b)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    result = clean(registry, "api", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    assert digests(result.report, "race", "deleted") == {old_c.digest}
    kept = {k["digest"]: k["reason"] for k in record(result.report, "race")["kept"]}
    assert kept[old_b.digest].startswith("tagged-during-run:"), kept
    assert set(api.tags("race")) == {"keep-a", "old-b"}
    assert old_b.digest in api.pull("race", "old-b")
    staying = expired_staying(result.report, "race")
    assert set(staying) == {"old-b"}
    assert staying["old-b"].startswith("digest-in-use:tagged-during-run"), staying
    survives_garbage_collect(registry, api, {"race": {"keep-a", "old-b"}})


def test_expired_tag_pushed_again_during_the_run_is_not_reported_removed(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    pushed_again: list[Pushed] = []

    decide = DigestPathRace(
        lambda: pushed_again.append(images.push_image(api, "race", "old-b", seed="race-b-again"))
    )

    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    with running(FaultProxy(registry.url, FaultScript(decide=decide))) as proxy:
        result = clean(registry, "api", tmp_path / "r.json", "--policy", str(policy),
                       "--per-repository", "1", url=proxy.url)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(pushed_again) == 1
    assert "old-b" in api.tags("race")
    assert not api.manifest_exists("race", old_b.digest)
    assert removed(result.report, "race") == {"old-c": old_c.digest}, tags_of(result.report, "race")
    staying = expired_staying(result.report, "race")
    assert staying == {"old-b": f"moved-during-run:{pushed_again[0].digest}"}, staying
    assert result.report is not None
    assert result.report["summary"]["tags_removed"] == 1
    assert result.report["summary"]["tags_expired_kept"] == 1


@pytest.mark.usefixtures("tags_go_with_their_digest")
def test_expired_tag_pushed_back_after_its_digest_went_is_not_reported_removed(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same manifest and tag pushed again after this run's DELETE took them: the
    tag exists again, on the same digest, and the report says so."""
    from regcleaner.engine import Engine
    from regcleaner.tagsfirst import RepositoryJob

    images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    body = api.get_manifest("race", old_b.digest)
    original = Engine._reread_going_tags
    pushed_back: list[bool] = []

    async def push_back_first(self: Engine, job: RepositoryJob) -> None:
        if job.record.name == "race":
            assert not api.manifest_exists("race", old_b.digest), "deleted by now"
            api.put_manifest("race", "old-b", body.body, body.headers["Content-Type"])
            pushed_back.append(True)
        await original(self, job)

    monkeypatch.setattr(Engine, "_reread_going_tags", push_back_first)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    result = clean(registry, "api", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    assert pushed_back == [True]
    assert digests(result.report, "race", "deleted") == {old_b.digest, old_c.digest}
    assert removed(result.report, "race") == {"old-c": old_c.digest}
    assert expired_staying(result.report, "race") == {
        "old-b": f"pushed-again-during-run:{old_b.digest}"
    }
    assert set(api.tags("race")) == {"keep-a", "old-b"}
    survives_garbage_collect(registry, api, {"race": {"keep-a", "old-b"}})


@pytest.mark.usefixtures("tags_go_with_their_digest")
def test_expired_tag_unreadable_after_its_digest_went_is_not_reported_removed(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the re-read cannot tell whether the tag went, the report does not claim it."""
    from regcleaner.engine import Engine
    from regcleaner.tagsfirst import RepositoryJob

    images.push_image(api, "race", "keep-a", seed="race-a")
    images.push_image(api, "race", "old-b", seed="race-b")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    original = Engine._reread_going_tags

    async def garble_first(self: Engine, job: RepositoryJob) -> None:
        link = tag_link(registry, "race", "old-b")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text("not a digest")
        await original(self, job)

    monkeypatch.setattr(Engine, "_reread_going_tags", garble_first)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    result = clean(registry, "api", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    assert removed(result.report, "race") == {"old-c": old_c.digest}
    staying = expired_staying(result.report, "race")
    assert set(staying) == {"old-b"}
    assert staying["old-b"].startswith("cannot re-read the tag: "), staying


def test_expired_tag_moved_before_its_removal_is_kept_direct(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    go_read_only(registry)
    original = DirectRemover.remove_tags

    async def move_first(self: DirectRemover, *args: Any, **kwargs: Any) -> dict[str, str | None]:
        # Between the scan and the tags' removal: old-b now points at keep-a's digest.
        tag_link(registry, "race", "old-b").write_text(keep.digest)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(DirectRemover, "remove_tags", move_first)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    result = clean(registry, "direct", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    assert removed(result.report, "race") == {"old-c": old_c.digest}
    assert expired_staying(result.report, "race") == {"old-b": f"moved-since-plan:{keep.digest}"}
    assert set(api.tags("race")) == {"keep-a", "old-b"}
    assert keep.digest in api.pull("race", "old-b")
    assert not api.manifest_exists("race", old_b.digest)
    survives_garbage_collect(registry, api, {"race": {"keep-a", "old-b"}})


@pytest.mark.parametrize("gc", [False, True], ids=["direct", "direct-gc"])
def test_expired_tag_whose_removal_is_refused_keeps_its_digest_direct(
    gc: bool, registry: RegistryProcess, api: RegistryAPI, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    go_read_only(registry)
    blobs_before = set((registry.root / "docker/registry/v2/blobs").rglob("data"))
    refuse_removal(monkeypatch, "/_manifests/tags/old-b/current/link")
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    extra = ["--gc"] if gc else []
    result = clean(registry, "direct", tmp_path / "r.json", "--policy", str(policy), *extra)
    assert result.exit_code == 1, result.output
    assert removed(result.report, "race") == {"old-c": old_c.digest}
    assert "EACCES" in expired_staying(result.report, "race")["old-b"]
    on_disk = revisions_on_disk(registry.root, "race")
    assert old_b.digest in on_disk, "the digest of a tag that stays was removed"
    assert old_c.digest not in on_disk
    if gc:
        after = set((registry.root / "docker/registry/v2/blobs").rglob("data"))
        assert after == blobs_before, "blobs were collected after a failed tag removal"
    monkeypatch.undo()
    survives_garbage_collect(registry, api, {"race": {"keep-a", "old-b"}})


def test_refused_tag_keeps_its_signature_direct(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signature tag of a digest the run was to delete goes only once that digest
    surely goes: here the digest stays (its expired tag's removal is refused), so its
    signature tag and signature manifest stay too; the other image's go."""
    images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    sig_b = images.push_cosign_signature(api, "race", old_b, seed="race-b-sig")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    sig_c = images.push_cosign_signature(api, "race", old_c, seed="race-c-sig")
    go_read_only(registry)
    refuse_removal(monkeypatch, "/_manifests/tags/old-b/current/link")
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    result = clean(registry, "direct", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 1, result.output
    assert removed(result.report, "race") == {
        "old-c": old_c.digest,
        signature_tag(old_c): sig_c.digest,
    }
    staying = expired_staying(result.report, "race")
    assert set(staying) == {"old-b", signature_tag(old_b)}, staying
    assert "EACCES" in staying["old-b"]
    assert staying[signature_tag(old_b)] == f"signature-of-kept:{old_b.digest}"
    on_disk = revisions_on_disk(registry.root, "race")
    assert {old_b.digest, sig_b.digest} <= on_disk, "a kept image lost its signature"
    assert not {old_c.digest, sig_c.digest} & on_disk
    kept = {k["digest"]: k["reason"] for k in record(result.report, "race")["kept"]}
    assert kept[old_b.digest] == "tagged:old-b", kept
    monkeypatch.undo()
    survives_garbage_collect(registry, api, {"race": {"keep-a", "old-b", signature_tag(old_b)}})


@pytest.mark.usefixtures("tags_go_with_their_digest")
def test_expired_tag_pushed_again_keeps_its_signature_api(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the API: an expired tag pushed again (same manifest) between the scan
    and the deletions keeps its digest, and with it the digest's signature."""
    images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    sig_b = images.push_cosign_signature(api, "race", old_b, seed="race-b-sig")
    old_c = images.push_image(api, "race", "old-c", seed="race-c")
    sig_c = images.push_cosign_signature(api, "race", old_c, seed="race-c-sig")
    retag_after_the_scan(monkeypatch, api, "race", "old-b", old_b)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    result = clean(registry, "api", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    assert digests(result.report, "race", "deleted") == {old_c.digest, sig_c.digest}
    assert api.manifest_exists("race", sig_b.digest), "a kept image lost its signature"
    assert set(api.tags("race")) == {"keep-a", "old-b", signature_tag(old_b)}
    kept = {k["digest"]: k["reason"] for k in record(result.report, "race")["kept"]}
    assert kept[sig_b.digest] == f"tagged-during-run:signature-of:{old_b.digest}", kept
    staying = expired_staying(result.report, "race")
    assert set(staying) == {"old-b", signature_tag(old_b)}, staying
    survives_garbage_collect(registry, api, {"race": {"keep-a", "old-b", signature_tag(old_b)}})


def test_expired_tags_go_in_a_repository_with_nothing_to_delete_direct(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    """With --direct an expired tag goes alone, even where no manifest goes: here it
    shares its digest with a kept tag."""
    kept = images.push_image(api, "only", "keep-a", seed="only-a")
    body = api.get_manifest("only", kept.digest)
    api.put_manifest("only", "old-b", body.body, body.headers["Content-Type"])
    go_read_only(registry)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="only"))
    result = clean(registry, "direct", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    assert removed(result.report, "only") == {"old-b": kept.digest}
    assert expired_staying(result.report, "only") == {}
    assert not tag_link(registry, "only", "old-b").exists()
    assert revisions_on_disk(registry.root, "only") == {kept.digest}
    survives_garbage_collect(registry, api, {"only": {"keep-a"}})


def test_a_blocked_repository_keeps_its_expired_tags_direct(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    """Anything unreadable keeps its whole repository, tags included: with --direct an
    expired tag there is not removed either."""
    from testkit.scenario import corrupt_blob

    images.push_image(api, "blocked", "keep-a", seed="blocked-a")
    old_b = images.push_image(api, "blocked", "old-b", seed="blocked-b")
    mystery = images.push_image(api, "blocked", None, seed="blocked-x", oci=True)
    corrupt_blob(registry.root, mystery.digest)
    go_read_only(registry)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="blocked"))
    result = clean(registry, "direct", tmp_path / "r.json", "--policy", str(policy))
    assert tag_link(registry, "blocked", "old-b").exists(), "a tag of a blocked repository went"
    assert removed(result.report, "blocked") == {}
    assert set(expired_staying(result.report, "blocked")) == {"old-b"}
    assert old_b.digest in revisions_on_disk(registry.root, "blocked")


def test_a_stop_during_tag_removal_removes_no_further_tags_direct(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that lands while the expired tags are removed: the signature tags, which
    go in a later batch, are not removed, and nothing else is."""
    from regcleaner.engine import Engine

    images.push_image(api, "race", "keep-a", seed="race-a")
    old_b = images.push_image(api, "race", "old-b", seed="race-b")
    images.push_cosign_signature(api, "race", old_b, seed="race-b-sig")
    go_read_only(registry)
    original = DirectRemover.remove_tags
    calls: list[list[str]] = []

    async def stop_after_the_first(self: DirectRemover, repository: str, snapshot: Any,
                                   tags: Any) -> dict[str, str | None]:  # fmt: skip
        calls.append([tag for tag, _ in tags])
        found = await original(self, repository, snapshot, tags)
        Engine.request_stop(engine_of[0], "SIGTERM")
        return found

    engine_of: list[Engine] = []
    engine_init = Engine.__init__

    def remember(self: Engine, *args: Any, **kwargs: Any) -> None:
        engine_init(self, *args, **kwargs)
        engine_of.append(self)

    monkeypatch.setattr(Engine, "__init__", remember)
    monkeypatch.setattr(DirectRemover, "remove_tags", stop_after_the_first)
    policy = write_policy(tmp_path, KEEP_PREFIX.format(repository="race"))
    result = clean(registry, "direct", tmp_path / "r.json", "--policy", str(policy))
    assert result.exit_code == 143, result.output
    assert calls == [["old-b"]], calls
    assert tag_link(registry, "race", signature_tag(old_b)).exists()
    assert removed(result.report, "race") == {"old-b": old_b.digest}
    assert old_b.digest in revisions_on_disk(registry.root, "race")


# -- a dry run ----------------------------------------------------------------------------


def push_mixed(registry: RegistryProcess, api: RegistryAPI) -> set[str]:
    """The shared repository, and ``other``; returns the tags of ``other`` that go."""
    push_shared(api)
    now = time.time()
    for n, tag in enumerate(("main-1", "main-2", "main-3", "dev-1")):
        images.push_image(api, "other", tag, seed=f"mixed-{tag}")
        set_push_time(registry, "other", tag, now - (n + 2) * DAY)
    a = images.push_image(api, "other", "keep-a", seed="mixed-a")
    images.push_cosign_signature(api, "other", a, seed="mixed-a-sig")
    b = images.push_image(api, "other", "dev-2", seed="mixed-b")
    set_push_time(registry, "other", "dev-2", now - 5 * DAY)
    images.push_cosign_signature(api, "other", b, seed="mixed-b-sig")
    images.push_multiarch(api, "other", "main-1", seed="mixed-idx")  # main-1 pushed over
    return {"main-3", "dev-1", "dev-2", signature_tag(b)}


MIXED = """\
policies:
  - repositories: [shared]
    keep:
      - tags: ["^keep-"]
  - repositories: ["**"]
    keep:
      - tags: ["^keep-"]
      - tags: ["^main-"]
        newest: 2
"""


@pytest.mark.parametrize("mode", MODES)
def test_dry_run_changes_nothing_and_lists_what_the_run_removes(
    mode: str, registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    other_going = push_mixed(registry, api)
    repositories = ["other", "shared"]
    policy = write_policy(tmp_path, MIXED)
    if mode == "direct":
        go_read_only(registry)
    before = storage_state(registry.root)
    tags_before = {r: set(api.tags(r)) for r in repositories}
    manifests_before = {r: revisions_on_disk(registry.root, r) for r in repositories}

    dry = clean(registry, mode, tmp_path / "d.json", "--policy", str(policy), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert storage_state(registry.root) == before, "a dry run changed storage"
    assert {r: set(api.tags(r)) for r in repositories} == tags_before
    for repository, found in manifests_before.items():
        for digest in found:
            assert api.manifest_exists(repository, digest)
    assert dry.report is not None
    assert dry.report["summary"]["deleted"] == 0
    would_remove = dry.report["summary"]["tags_would_remove"]
    assert would_remove > 0
    assert "tags_removed" not in dry.report["summary"]

    real = clean(registry, mode, tmp_path / "r.json", "--policy", str(policy))
    assert real.exit_code == 0, real.output
    assert real.report is not None
    summary, dry_summary = real.report["summary"], dry.report["summary"]
    assert summary["tags_removed"] == would_remove
    assert summary["tags_expired_kept"] == dry_summary["tags_expired_kept"]
    for repository in repositories:
        assert removed(real.report, repository) == removed(dry.report, repository)
        staying = expired_staying(real.report, repository)
        assert staying == expired_staying(dry.report, repository)
        deleted = digests(real.report, repository, "deleted")
        assert deleted == digests(dry.report, repository, "would_delete")
        left = revisions_on_disk(registry.root, repository)
        assert left == manifests_before[repository] - deleted
    expected = {
        r: tags_before[r] - set(removed(real.report, r)) for r in repositories
    }  # fmt: skip
    assert set(removed(real.report, "other")) == other_going
    # Direct removal takes expired tags alone; through the API they go with their digest.
    # On 3, through the API too (DELETE by tag).
    by_digest = mode == "api" and registry.flavour != "3.1.1"
    shared_going = {"old-2"} if by_digest else {"old-1", "old-2", "old-child"}
    assert set(removed(real.report, "shared")) == shared_going
    survives_garbage_collect(registry, api, expected)
