"""Pushes that land while regcleaner deletes, at chosen moments (the issue's reproduction).

The fault proxy sits between regcleaner and the real registry; its ``decide`` runs for
the n-th DELETE before it is forwarded, and there the test pushes straight to the
registry (not through the proxy). With one DELETE in flight per repository the order
of the DELETEs is the plan's: old untagged indexes first (wave 1), then their children
(wave 2), each wave sorted by digest. The target X is the largest child digest, so it
is the last DELETE of the run, after every moment a push is made at.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testkit import images
from testkit.api import Pushed, RegistryAPI
from testkit.faults import FaultProxy, FaultScript
from testkit.registry import Flavour, RegistryProcess, running
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

REPO = "race/app"
_buckets = itertools.count()


# -- where the registry keeps its files -------------------------------------------------


@dataclass
class Backend:
    """A running registry and the options that point regcleaner at its storage."""

    name: str
    registry: RegistryProcess
    storage_args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def args(self, url: str, *extra: str) -> list[str]:
        return [
            "clean", "--registry-url", url, *self.storage_args,
            "--progress-interval", "0", "--min-age", "0",
            "--per-repository", "1", "--rate", "20", *extra,
        ]  # fmt: skip


@pytest.fixture(params=["disk", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, registry_flavour: Flavour
) -> Iterator[Backend]:
    if request.param == "disk":
        with running(RegistryProcess(tmp_path / "registry", flavour=registry_flavour)) as server:
            yield Backend("disk", server, ["--registry-dir", str(server.root)])
        return
    moto: MotoS3 = request.getfixturevalue("moto_server")
    bucket = f"races-{next(_buckets)}"
    moto.create_bucket(bucket)
    storage = moto.registry_storage(bucket, "/races")
    with running(
        RegistryProcess(tmp_path / "registry", flavour=registry_flavour, storage=storage)
    ) as server:
        yield Backend(
            "s3", server,
            ["--storage", "S3", "--bucket", bucket, "--registry-dir", "/races",
             "--s3-endpoint", moto.url, "--region", REGION],
            {"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY},
        )  # fmt: skip


@pytest.fixture
def disk(tmp_path: Path, registry_flavour: Flavour) -> Iterator[Backend]:
    with running(RegistryProcess(tmp_path / "registry", flavour=registry_flavour)) as server:
        yield Backend("disk", server, ["--registry-dir", str(server.root)])


# -- history and the moments pushes happen at ---------------------------------------------


@dataclass
class History:
    """Old untagged indexes with their children, and the live tagged index."""

    indexes: list[Pushed]
    children: dict[str, list[Pushed]]
    live: Pushed
    live_children: list[Pushed]

    @property
    def old_children(self) -> list[Pushed]:
        """Every child of an old index, in the order regcleaner deletes them."""
        return sorted((c for kids in self.children.values() for c in kids), key=by_digest)

    @property
    def target(self) -> Pushed:
        """X: the last DELETE of the last wave."""
        return self.old_children[-1]

    def parent_of(self, child: Pushed) -> Pushed:
        return next(i for i in self.indexes if child in self.children[i.digest])


def by_digest(pushed: Pushed) -> str:
    return pushed.digest


def push_history(api: RegistryAPI, indexes: int = 4, arches: int = 2) -> History:
    """``indexes`` pushes of a multi-arch image over the tag ``latest``, then the live one."""
    old: list[Pushed] = []
    children: dict[str, list[Pushed]] = {}
    for i in range(indexes):
        index, kids = images.push_multiarch(api, REPO, "latest", seed=f"old{i}", arches=arches)
        old.append(index)
        children[index.digest] = kids
    live, live_kids = images.push_multiarch(api, REPO, "latest", seed="live", arches=arches)
    return History(old, children, live, live_kids)


def digest_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


@dataclass
class Trigger:
    """Runs ``action`` once, at the first DELETE ``when`` picks; records what happened."""

    when: Callable[[int, str], bool]
    action: Callable[[], Any]
    fired_at: int | None = None
    result: Any = None
    error: BaseException | None = None
    deleted_before: list[str] = field(default_factory=list)

    def decide(self, n: int, path: str) -> None:
        if self.fired_at is None and self.when(n, path):
            self.fired_at = n
            try:
                self.result = self.action()
            except BaseException as exc:  # reported by check(), not lost in the proxy
                self.error = exc
        elif self.fired_at is None:
            self.deleted_before.append(digest_of(path))

    def check(self) -> Any:
        assert self.error is None, f"the push at DELETE {self.fired_at} failed: {self.error!r}"
        assert self.fired_at is not None, "the push never happened"
        return self.result


def run_through_proxy(
    backend: Backend, trigger: Trigger, tmp_path: Path, *extra: str
) -> tuple[dict[str, Any], FaultProxy]:
    with running(FaultProxy(upstream=backend.registry.url)) as proxy:
        proxy.script = FaultScript(decide=trigger.decide)
        result = run_cli(
            backend.args(proxy.url, *extra), env=backend.env, report_path=tmp_path / "r.json"
        )
    trigger.check()
    assert result.exit_code == 0, result.output
    assert result.report is not None
    assert result.report["summary"]["failed"] == 0
    return result.report, proxy


def repository(report: dict[str, Any], name: str = REPO) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in report["repositories"] if r["name"] == name)
    return found


def kept_reasons(report: dict[str, Any], name: str = REPO) -> dict[str, str]:
    return {k["digest"]: k["reason"] for k in repository(report, name)["kept"]}


def deleted(report: dict[str, Any], name: str = REPO) -> set[str]:
    return {d["digest"] for d in repository(report, name)["deleted"]}


def assert_gone(api: RegistryAPI, digests: set[str]) -> None:
    still = sorted(d for d in digests if api.manifest_exists(REPO, d))
    assert not still, f"history still served: {still}"


# Where, in the order of the DELETEs, the push happens.
MOMENTS = ["before-first-delete", "between-waves", "during-last-wave"]


def moment(name: str, history: History) -> Callable[[int, str], bool]:
    children = [c.digest for c in history.old_children]
    if name == "before-first-delete":
        return lambda n, path: n == 1
    if name == "between-waves":
        return lambda n, path: digest_of(path) == children[0]
    assert name == "during-last-wave"
    return lambda n, path: digest_of(path) == children[2]


@pytest.mark.parametrize("when", MOMENTS)
def test_new_tagged_index_of_a_child_in_the_last_wave_keeps_it(
    backend: Backend, tmp_path: Path, when: str
) -> None:
    api = RegistryAPI(backend.registry.url)
    history = push_history(api)
    target = history.target
    other = history.old_children[-2]  # a second old child, due in the same wave
    assert len(history.old_children) == 8

    trigger = Trigger(
        moment(when, history),
        lambda: images.push_index(api, REPO, "fresh", [target, other]),
    )
    report, proxy = run_through_proxy(backend, trigger, tmp_path)
    fresh: Pushed = trigger.result
    # The push came where it was meant to: after the first wave for the later moments.
    wave1 = {i.digest for i in history.indexes}
    if when != "before-first-delete":
        assert wave1 <= set(trigger.deleted_before)
    assert target.digest not in trigger.deleted_before

    assert api.manifest_exists(REPO, target.digest)
    assert api.manifest_exists(REPO, other.digest)
    pulled = api.pull(REPO, "fresh")
    assert {target.digest, other.digest, fresh.digest} <= pulled
    api.pull(REPO, "latest")
    reasons = kept_reasons(report)
    assert reasons[target.digest] == f"tagged-during-run:child-of:{fresh.digest}", reasons
    assert reasons[other.digest] == f"tagged-during-run:child-of:{fresh.digest}", reasons
    # Everything else of the history went; nothing was sent for X.
    rest = wave1 | ({c.digest for c in history.old_children} - {target.digest, other.digest})
    assert deleted(report) == rest
    assert_gone(api, rest)
    assert not any(digest_of(hit.path) == target.digest for hit in proxy.seen)


def test_repushed_index_from_the_first_wave_keeps_its_children(
    backend: Backend, tmp_path: Path
) -> None:
    api = RegistryAPI(backend.registry.url)
    history = push_history(api)
    first_child = history.old_children[0]
    revived = next(i for i in history.indexes if first_child not in history.children[i.digest])
    body = api.get_manifest(REPO, revived.digest)
    assert body.status == 200
    kids = {c.digest for c in history.children[revived.digest]}

    # Identical bytes, tagged, once wave 1 (which deleted it) is over: at the first
    # DELETE of the children's wave, which is not one of its children.
    trigger = Trigger(
        lambda n, path: digest_of(path) == first_child.digest,
        lambda: api.put_manifest(REPO, "again", body.body, body.headers["Content-Type"]),
    )
    report, _ = run_through_proxy(backend, trigger, tmp_path)
    assert trigger.result == revived.digest
    assert revived.digest in deleted(report), "the index was not deleted in wave 1"
    assert revived.digest in trigger.deleted_before

    reasons = kept_reasons(report)
    for kid in kids:
        assert reasons[kid] == f"tagged-during-run:child-of:{revived.digest}", reasons
        assert api.manifest_exists(REPO, kid)
    assert kids <= api.pull(REPO, "again")
    api.pull(REPO, "latest")
    rest = {i.digest for i in history.indexes} | {c.digest for c in history.old_children}
    rest -= kids
    assert deleted(report) == rest
    assert_gone(api, rest - {revived.digest})


def test_issue_reproduction_index_pushed_after_the_first_delete(
    disk: Backend, tmp_path: Path
) -> None:
    api = RegistryAPI(disk.registry.url)
    history = [images.push_image(api, REPO, None, seed=f"old-{i}") for i in range(31)]
    images.push_image(api, REPO, "latest", seed="live")
    target = max(history, key=by_digest)  # X: the last of the 31 DELETEs
    aged = time.time() - 7200
    for link in (disk.registry.root / "docker/registry/v2/repositories").glob(
        f"{REPO}/_manifests/revisions/sha256/*/link"
    ):
        os.utime(link, (aged, aged))

    proxy = FaultProxy(upstream=disk.registry.url)
    answered: list[int] = []

    def push() -> Pushed:
        answered.append(proxy.seen[0].answered)
        return images.push_index(api, REPO, "multi", [target], oci=False)

    trigger = Trigger(lambda n, path: n == 2, push)  # the first DELETE has been answered
    with running(proxy):
        proxy.script = FaultScript(decide=trigger.decide)
        args = disk.args(proxy.url, "--min-age", "1h", "--rate", "5")
        result = run_cli(args, report_path=tmp_path / "r.json")
    index: Pushed = trigger.check()
    assert answered == [202], "the push did not come after the first DELETE landed"
    assert result.exit_code == 0, result.output
    assert result.report is not None
    reasons = kept_reasons(result.report)
    assert reasons[target.digest] == f"tagged-during-run:child-of:{index.digest}", reasons
    assert api.manifest_exists(REPO, target.digest)
    assert target.digest in api.pull(REPO, "multi")
    api.pull(REPO, "latest")
    rest = {p.digest for p in history} - {target.digest}
    assert deleted(result.report) == rest
    assert result.report["summary"]["deleted"] == 30
    assert_gone(api, rest)


def test_push_in_progress_children_first_then_an_untagged_index(
    disk: Backend, tmp_path: Path
) -> None:
    """--min-age 0: a client pushes an image's manifests by digest (a new one, and one
    identical to an old untagged child), then the untagged index of those and of another
    old child that is due for deletion. All of it was pushed during the run: kept."""
    api = RegistryAPI(disk.registry.url)
    history = push_history(api)
    target = history.target  # re-pushed by digest
    other = history.old_children[-2]  # only referenced by the new index
    repush = api.get_manifest(REPO, target.digest)
    pushed: dict[str, Pushed] = {}

    def children_first() -> None:
        pushed["new"] = images.push_image(api, REPO, None, seed="in-progress", oci=True)
        api.put_manifest(REPO, target.digest, repush.body, repush.headers["Content-Type"])

    def then_the_index() -> None:
        pushed["index"] = images.push_index(api, REPO, None, [pushed["new"], target, other])

    first = Trigger(lambda n, path: n == 1, children_first)
    second = Trigger(lambda n, path: digest_of(path) == history.old_children[0].digest,
                     then_the_index)  # fmt: skip

    def decide(n: int, path: str) -> None:
        first.decide(n, path)
        if first.fired_at is not None:
            second.decide(n, path)

    with running(FaultProxy(upstream=disk.registry.url)) as proxy:
        proxy.script = FaultScript(decide=decide)
        result = run_cli(disk.args(proxy.url), report_path=tmp_path / "r.json")
    first.check()
    second.check()
    assert result.exit_code == 0, result.output
    assert result.report is not None
    index = pushed["index"]
    reasons = kept_reasons(result.report)
    assert reasons[target.digest].startswith("pushed-during-run"), reasons
    assert reasons[other.digest] == f"pushed-during-run:child-of:{index.digest}", reasons
    pulled = api.pull(REPO, index.digest)
    assert {pushed["new"].digest, target.digest, other.digest} <= pulled
    api.pull(REPO, "latest")
    rest = {i.digest for i in history.indexes} | {c.digest for c in history.old_children}
    rest -= {target.digest, other.digest}
    assert deleted(result.report) == rest
    assert_gone(api, rest)


def test_untagged_image_tagged_during_the_run_keeps_its_referrers_and_signature(
    disk: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old untagged image D with an SBOM (subject D) and a cosign signature tag is
    tagged again (a rollback by digest) after the scan: D's own look sees it, and D
    goes before what depends on it, so its SBOM and signature are kept with it."""
    from regcleaner.engine import PushWatch

    api = RegistryAPI(disk.registry.url)
    images.push_image(api, REPO, "latest", seed="live")
    old = images.push_image(api, REPO, None, seed="rollback", oci=True)
    sbom = images.push_referrer(api, REPO, subject=old, seed="rollback-sbom")
    signature = images.push_cosign_signature(api, REPO, old, seed="rollback-sig")
    lone = [images.push_image(api, REPO, None, seed=f"lone{i}") for i in range(4)]
    original = PushWatch.start

    async def tag_between_scan_and_deletions(self: PushWatch) -> None:
        body = api.get_manifest(REPO, old.digest)
        api.put_manifest(REPO, "rollback", body.body, body.headers["Content-Type"])
        await original(self)

    monkeypatch.setattr(PushWatch, "start", tag_between_scan_and_deletions)
    result = run_cli(disk.args(disk.registry.url, "--prune-orphan-signatures"),
                     report_path=tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.report is not None
    reasons = kept_reasons(result.report)
    assert reasons[old.digest].startswith("tagged-during-run"), reasons
    for dependent in (sbom, signature):
        assert api.manifest_exists(REPO, dependent.digest), (dependent, reasons)
    assert deleted(result.report) == {x.digest for x in lone}
    sig_tag = "sha256-" + old.digest.split(":", 1)[1] + ".sig"
    assert set(api.tags(REPO)) == {"latest", "rollback", sig_tag}
    for tag in ("latest", "rollback", sig_tag):
        api.pull(REPO, tag)
