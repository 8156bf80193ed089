"""Ways a cleaner could delete what is in use, closed against the real registry.

Go's JSON reading (field names folded, last duplicate wins, deep nesting), manifests
the registry cannot read, a symbolic link among the tags, a disk failing during the
last look, a URL that serves another registry's storage, a fatal stop half-way, and
the default grace period.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from regcleaner import mediatypes
from regcleaner.storage.base import FileInfo
from regcleaner.storage.filesystem import FilesystemStore
from testkit import images
from testkit.api import Pushed, RegistryAPI
from testkit.registry import Flavour, RegistryProcess, running
from tests.conftest import clean_args, run_cli
from tests.integration.test_clean_disk import revisions_on_disk

pytestmark = pytest.mark.integration

V2 = "docker/registry/v2"


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["repositories"]}


def kept(report: dict[str, Any], repo: str) -> dict[str, str]:
    return {k["digest"]: k["reason"] for k in by_name(report)[repo]["kept"]}


def deleted(report: dict[str, Any], repo: str) -> set[str]:
    return {d["digest"] for d in by_name(report)[repo]["deleted"]}


def push_over(api: RegistryAPI, repo: str, count: int, *, tag: str = "v") -> list[Pushed]:
    """``count`` images pushed over one tag: all but the last are untagged history."""
    return [images.push_image(api, repo, tag, seed=f"{repo}-{i}") for i in range(count)]


# -- Go's JSON ---------------------------------------------------------------------------


def entry(child: Pushed) -> str:
    return json.dumps(child.descriptor())


def put_index_text(api: RegistryAPI, repo: str, tag: str, text: str) -> str:
    """PUT hand-written index JSON (the registry reads it with Go's encoding/json)."""
    return api.put_manifest(repo, tag, text.encode(), mediatypes.OCI_INDEX)


def test_go_json_spellings_keep_the_children_the_registry_sees(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    head = f'{{"schemaVersion":2,"mediaType":"{mediatypes.OCI_INDEX}",'

    def kids(repo: str, count: int) -> list[Pushed]:
        return [images.push_image(api, repo, None, seed=f"{repo}-kid{i}", oci=True)
                for i in range(count)]  # fmt: skip

    seen: dict[tuple[str, str], list[Pushed]] = {}  # (repo, tag) -> children per Go
    junk: dict[str, Pushed] = {}  # an untagged, unreferenced image per repository

    upper = kids("go/upper", 2)
    put_index_text(api, "go/upper", "v", head + f'"Manifests":[{",".join(map(entry, upper))}]}}')
    seen["go/upper", "v"] = upper

    empty_then = kids("go/dup", 2)
    put_index_text(api, "go/dup", "v", head + '"manifests":[],'
                   f'"Manifests":[{",".join(map(entry, empty_then))}]}}')  # fmt: skip
    seen["go/dup", "v"] = empty_then

    long_s = kids("go/long-s", 2)
    put_index_text(
        api, "go/long-s", "v", head + f'"manife\u017fts":[{",".join(map(entry, long_s))}]}}'
    )
    seen["go/long-s", "v"] = long_s

    first, second = kids("go/digest", 2)
    twice = (f'{{"mediaType":"{second.media_type}","digest":"{first.digest}",'
             f'"Digest":"{second.digest}","size":{second.size}}}')  # fmt: skip
    put_index_text(api, "go/digest", "v", head + f'"manifests":[{twice}]}}')
    seen["go/digest", "v"] = [second]

    deep_kids = kids("go/deep", 2)
    nested = "[" * 5000 + "]" * 5000
    put_index_text(api, "go/deep", "v", head + f'"x-unknown":{nested},'
                   f'"manifests":[{",".join(map(entry, deep_kids))}]}}')  # fmt: skip
    seen["go/deep", "v"] = deep_kids

    for repo in ("go/upper", "go/dup", "go/long-s", "go/digest", "go/deep"):
        junk[repo] = images.push_image(api, repo, None, seed=f"{repo}-junk")

    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert result.report is not None
    report = result.report
    for (repo, tag), children in seen.items():
        reasons = kept(report, repo)
        index = api.get_manifest(repo, tag)
        assert index.status == 200, (repo, tag)
        index_digest = "sha256:" + hashlib.sha256(index.body).hexdigest()
        for child in children:
            assert reasons.get(child.digest) == f"child-of:{index_digest}", (repo, reasons)
            assert child.digest in api.pull(repo, child.digest)
        # Read like the registry reads it: not blocked, the repository's junk goes.
        assert deleted(report, repo) == (
            {junk[repo].digest, first.digest} if repo == "go/digest" else {junk[repo].digest}
        ), repo
    # "digest": A then "Digest": B: the registry uses B; A is referenced by nothing.
    assert not api.manifest_exists("go/digest", first.digest)
    # (testkit's pull reads JSON as Python does, so it would follow A: not used there.)
    for repo in ("go/upper", "go/dup", "go/long-s"):
        api.pull(repo, "v")


def write_manifest(root: Path, repo: str, data: bytes) -> str:
    """A manifest straight into storage: its blob and its revision link."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    v2 = root / V2
    blob = v2 / "blobs/sha256" / digest[7:9] / digest[7:] / "data"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = v2 / "repositories" / repo / "_manifests/revisions/sha256" / digest[7:] / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    return digest


def test_unknown_media_type_blocks_its_repository_only(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    history = push_over(api, "odd/type", 3)
    config_data = b'{"architecture":"amd64","os":"linux"}'
    config = api.push_blob("odd/type", config_data)
    media_type = "application/vnd.example.image.v9+json"
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": len(config_data)},
        "layers": [],
    }  # fmt: skip
    data = json.dumps(document).encode()
    # The registry refuses it on push (an unknown manifest type)...
    refused = api.request("PUT", "/v2/odd/type/manifests/strange", data,
                          {"Content-Type": media_type})  # fmt: skip
    assert refused.status >= 400
    # ...so it can only come from storage written by other means.
    strange = write_manifest(registry.root, "odd/type", data)
    others = push_over(api, "odd/fine", 3)

    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert result.report is not None
    report = result.report
    reasons = kept(report, "odd/type")
    assert reasons[strange].startswith("unreadable:"), reasons
    assert media_type in reasons[strange]
    for old in history[:-1]:
        assert reasons[old.digest] == f"blocked:{strange}"
        assert api.manifest_exists("odd/type", old.digest)
    assert deleted(report, "odd/type") == set()
    assert by_name(report)["odd/type"]["warnings"]
    assert deleted(report, "odd/fine") == {p.digest for p in others[:-1]}
    assert ("odd/type", strange) in revisions_on_disk(registry.root)


# -- a symbolic link among the tags --------------------------------------------------------


def test_symlinked_tag_folder_blocks_its_repository(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    # In "sym", seed "shared" is pushed over: untagged. In "elsewhere" the same bytes
    # (same digest) are tagged v1; sym's tag "alias" is a link to elsewhere's v1 folder.
    hidden = images.push_image(api, "sym", "v1", seed="shared")
    images.push_image(api, "sym", "v1", seed="sym-new")
    twin = images.push_image(api, "elsewhere", "v1", seed="shared")
    assert twin.digest == hidden.digest
    repos = registry.root / V2 / "repositories"
    os.symlink(repos / "elsewhere/_manifests/tags/v1", repos / "sym/_manifests/tags/alias")
    served = api.get_manifest("sym", "alias")
    assert served.status == 200, "the registry does not follow the symlinked tag"
    assert served.headers["Docker-Content-Digest"] == hidden.digest
    control = push_over(api, "control", 3)

    result = run_cli(clean_args(registry), report_path=tmp_path / "r.json")
    assert result.report is not None
    report = result.report
    assert result.exit_code == 0, result.output  # a warning, not a failure
    assert kept(report, "sym")[hidden.digest] == "blocked:tag:alias"
    assert deleted(report, "sym") == set()
    warnings = by_name(report)["sym"]["warnings"]
    assert any("alias" in w and "symbolic link" in w for w in warnings), warnings
    assert "alias" in result.stderr
    assert by_name(report)["sym"]["error"] is None
    assert deleted(report, "control") == {p.digest for p in control[:-1]}
    assert api.get_manifest("sym", "alias").status == 200
    api.pull("sym", "alias")


# -- the disk fails during the last look ---------------------------------------------------


EIO_REPOS = ("eio/bad", "eio/ok1", "eio/ok2")


def run_with_failing_looks(
    registry: RegistryProcess,
    api: RegistryAPI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    raw: bool,
) -> tuple[Any, dict[str, list[Pushed]]]:
    """Clean with every stat of an ``eio/bad`` revision link failing with EIO from the
    third on (the scan lists; the per-DELETE look and its checks stat the links). With
    ``raw``, ``_stat_many_sync`` itself raises the OSError; else ``os.stat`` does, inside
    the real ``_stat_many_sync``."""
    history = {repo: push_over(api, repo, 7)[:-1] for repo in EIO_REPOS}
    original = FilesystemStore._stat_many_sync
    looks = 0

    def eio(*args: object, **kwargs: object) -> os.stat_result:
        raise OSError(errno.EIO, "Input/output error")

    def failing(self: FilesystemStore, keys: Sequence[str]) -> list[FileInfo | None]:
        nonlocal looks
        if any("eio/bad/_manifests/revisions/sha256/" in k and k.endswith("/link") for k in keys):
            looks += 1
            if looks > 2 and raw:
                raise OSError(errno.EIO, "Input/output error")
            if looks > 2:
                with monkeypatch.context() as patch:
                    patch.setattr(os, "stat", eio)
                    return original(self, keys)
        return original(self, keys)

    monkeypatch.setattr(FilesystemStore, "_stat_many_sync", failing)
    result = run_cli(clean_args(registry, "--per-repository", "1"),
                     report_path=tmp_path / "r.json")  # fmt: skip
    monkeypatch.undo()
    assert looks > 2, "the failure was never injected"
    return result, history


def assert_bad_repository_stopped_and_others_cleaned(
    api: RegistryAPI, report: dict[str, Any], history: dict[str, list[Pushed]]
) -> None:
    gone = deleted(report, "eio/bad")
    assert 1 <= len(gone) <= 2, gone
    still = {p.digest for p in history["eio/bad"]} - gone
    reasons = kept(report, "eio/bad")
    assert still <= reasons.keys(), reasons
    for digest in still:
        assert api.manifest_exists("eio/bad", digest)
    for repo in ("eio/ok1", "eio/ok2"):
        assert deleted(report, repo) == {p.digest for p in history[repo]}
        for pushed in history[repo]:
            assert not api.manifest_exists(repo, pushed.digest)


def test_disk_error_during_the_last_look_keeps_the_rest_of_that_repository(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, history = run_with_failing_looks(registry, api, tmp_path, monkeypatch, raw=False)
    assert result.report is not None
    assert "internal error" not in result.output
    assert result.report["error"] is None
    assert_bad_repository_stopped_and_others_cleaned(api, result.report, history)
    reasons = kept(result.report, "eio/bad").values()
    assert any(r.startswith("recheck-failed:") and "Input/output error" in r for r in reasons)


def test_disk_error_during_the_last_look_fails_that_repository_with_exit_1(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = run_with_failing_looks(registry, api, tmp_path, monkeypatch, raw=False)
    assert result.report is not None
    bad = by_name(result.report)["eio/bad"]
    assert bad["error"], bad
    assert "Input/output error" in bad["error"]
    assert result.report["summary"]["repositories_failed"] == 1
    assert result.exit_code == 1, result.output


def test_oserror_from_stat_many_during_the_last_look_is_not_an_internal_error(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, history = run_with_failing_looks(registry, api, tmp_path, monkeypatch, raw=True)
    assert result.report is not None
    assert "internal error" not in result.output
    assert result.report["error"] is None
    assert_bad_repository_stopped_and_others_cleaned(api, result.report, history)
    bad = by_name(result.report)["eio/bad"]
    assert bad["error"], bad
    assert result.report["summary"]["repositories_failed"] == 1
    assert result.exit_code == 1, result.output


# -- a URL that serves another registry's storage ------------------------------------------


@pytest.fixture
def two_registries(
    tmp_path: Path, registry_flavour: Flavour
) -> Iterator[tuple[RegistryProcess, RegistryProcess]]:
    with (
        running(RegistryProcess(tmp_path / "a", flavour=registry_flavour)) as a,
        running(RegistryProcess(tmp_path / "b", flavour=registry_flavour)) as b,
    ):
        yield a, b


def mismatch_args(a: RegistryProcess, b: RegistryProcess) -> list[str]:
    args = clean_args(a, "--concurrency", "1", "--per-repository", "1")
    args[args.index(a.url)] = b.url
    return args


@pytest.mark.parametrize("b_has_them", [False, True], ids=["b-answers-404", "b-answers-202"])
def test_url_and_storage_of_different_registries_stop_with_exit_3(
    two_registries: tuple[RegistryProcess, RegistryProcess], tmp_path: Path, b_has_them: bool
) -> None:
    a, b = two_registries
    for server in (a, b) if b_has_them else (a,):
        client = RegistryAPI(server.url)
        for repo in ("m/one", "m/two"):
            push_over(client, repo, 6)
    before = revisions_on_disk(a.root)

    result = run_cli(mismatch_args(a, b), report_path=tmp_path / "r.json")
    assert result.exit_code == 3, result.output
    assert b.url in result.stderr
    assert str(a.root) in result.stderr
    assert "not the same registry" in result.stderr
    assert result.report is not None
    assert result.report["error"]
    assert revisions_on_disk(a.root) == before, "A lost links"
    # It stopped early: most of the 10 planned deletions were never sent.
    assert result.report["summary"]["delete_requests"] < 10


def test_url_of_another_registry_with_the_same_images_stops_after_the_first_delete(
    two_registries: tuple[RegistryProcess, RegistryProcess], tmp_path: Path
) -> None:
    a, b = two_registries
    pushed = {}
    for server in (a, b):
        pushed[server.url] = push_over(RegistryAPI(server.url), "m/one", 6)
    result = run_cli(mismatch_args(a, b), report_path=tmp_path / "r.json")
    assert result.exit_code == 3, result.output
    assert result.report is not None
    assert result.report["summary"]["delete_requests"] == 1
    b_api = RegistryAPI(b.url)
    assert sum(b_api.manifest_exists("m/one", p.digest) for p in pushed[b.url]) == 5


# -- a fatal stop says what it did not attempt ---------------------------------------------


def test_fatal_stop_accounts_for_every_planned_deletion(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    with running(
        RegistryProcess(tmp_path / "reg", flavour=registry_flavour, delete_enabled=False)
    ) as server:
        client = RegistryAPI(server.url)
        planned = 0
        for i in range(8):
            planned += len(push_over(client, f"fatal/r{i}", 4)) - 1
        result = run_cli(clean_args(server), report_path=tmp_path / "r.json")
    assert result.exit_code == 3, result.output
    assert result.report is not None
    summary = result.report["summary"]
    assert summary["deleted"] == 0
    assert summary["failed"] >= 1
    assert summary["not_attempted"] + summary["failed"] == planned, summary
    reasons = [k["reason"] for r in result.report["repositories"] for k in r["kept"]]
    not_attempted = [r for r in reasons if r.startswith("not-attempted:")]
    assert len(not_attempted) == summary["not_attempted"]
    assert all("storage.delete.enabled" in r for r in not_attempted)
    assert len(result.report["repositories"]) == 8


def test_fatal_stop_says_the_scan_was_not_complete(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    """A fatal answer stops the run at once: repositories not scanned yet are not in the
    report (their candidates were never planned), and the report says the scan stopped."""
    with running(
        RegistryProcess(tmp_path / "reg", flavour=registry_flavour, delete_enabled=False)
    ) as server:
        client = RegistryAPI(server.url)
        for i in range(48):
            push_over(client, f"many/r{i:02d}", 2)
        result = run_cli(clean_args(server), report_path=tmp_path / "r.json")
    assert result.exit_code == 3, result.output
    assert result.report is not None
    summary = result.report["summary"]
    listed = result.report["repositories"]
    assert summary["not_attempted"] + summary["failed"] == len(listed), summary
    if len(listed) < 48:
        assert result.report["scan_complete"] is False
    else:
        assert result.report["scan_complete"] is True


# -- safe by default -----------------------------------------------------------------------


def test_default_min_age_keeps_fresh_history_and_min_age_env_0_deletes_it(
    registry: RegistryProcess, api: RegistryAPI, tmp_path: Path
) -> None:
    history = {p.digest for repo in ("fresh/a", "fresh/b") for p in push_over(api, repo, 3)[:-1]}
    args = ["clean", "--registry-url", registry.url, "--registry-dir", str(registry.root),
            "--progress-interval", "0"]  # fmt: skip

    first = run_cli(args, report_path=tmp_path / "1.json")
    assert first.exit_code == 0, first.output
    assert first.report is not None
    assert first.report["summary"]["kept_young"] == len(history)
    assert first.report["summary"]["deleted"] == 0
    assert all(api.manifest_exists(d_repo, d) for d_repo, d in revisions_on_disk(registry.root))
    assert {d for _, d in revisions_on_disk(registry.root)} >= history

    second = run_cli(args, env={"MIN_AGE": "0"}, report_path=tmp_path / "2.json")
    assert second.exit_code == 0, second.output
    assert second.report is not None
    assert second.report["summary"]["deleted"] == len(history)
    assert not {d for _, d in revisions_on_disk(registry.root)} & history
