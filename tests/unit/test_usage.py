"""``regcleaner usage`` against a reference model on random registries.

Each example writes a registry straight into distribution's layout (testkit's
registry_writer) on disk: repositories that share layers, configs and whole manifests,
indexes with children, referrers, untagged history, revisions already deleted (their
blobs stay), orphaned blobs of several sizes. The model computes every number from
sets, with the definitions of docs/usage.md; the scan must give the same numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.usage.command import usage
from regcleaner.usage.ledger import RepositoryCounts, UsageLedger
from regcleaner.usage.model import RepositoryUsage, UsageTotals, sort_column
from regcleaner.usage.scan import UsageScan
from regcleaner.view import RegistryView
from testkit.registry_writer import DiskSink, Manifest, RegistryWriter

REPOSITORY_NAMES = ("app", "team/app", "team/app/web", "lib")


def _layer(seed: int) -> bytes:
    """Layers of different sizes, so that a wrong blob shows in the byte counts."""
    return f"layer {seed}\n".encode() * (seed + 1)


@dataclass
class Model:
    """What the registry holds, as sets: the reference the scan is checked against."""

    sizes: dict[str, int] = field(default_factory=dict)  # every blob in storage
    manifests: dict[str, Manifest] = field(default_factory=dict)
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subject: dict[str, str] = field(default_factory=dict)
    revisions: dict[str, set[str]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)

    def marks(self, digests: set[str]) -> set[str]:
        """What garbage-collect marks for these revisions."""
        found = set(digests)
        for digest in digests:
            found.update(self.manifests[digest].references)
        return found

    def kept(self, repository: str) -> set[str]:
        """Revisions a clean keeps (no grace): tagged, children of kept indexes,
        referrers of kept subjects. Only the manifests clean reads (revisions and tag
        targets) lead anywhere: an index whose revision link is gone keeps nothing (the
        registry no longer serves it, so nothing below it can be pulled through it)."""
        revisions = self.revisions[repository]
        known = revisions | set(self.tags[repository].values())
        keep = set(self.tags[repository].values())
        while True:
            more = {c for d in keep & known for c in self.children.get(d, ())}
            more |= {r for r in known if self.subject.get(r) in keep}
            if more <= keep:
                return keep & revisions
            keep |= more

    def expected(self) -> tuple[dict[str, tuple[int, int, int]], dict[str, int]]:
        """Per repository (referenced, exclusive, reclaimable) bytes, and totals."""
        referenced = {r: self.marks(revs) for r, revs in self.revisions.items()}
        kept = {r: self.marks(self.kept(r)) for r in self.revisions}

        def size(blobs: set[str]) -> int:
            return sum(self.sizes.get(b, 0) for b in blobs)

        per: dict[str, tuple[int, int, int]] = {}
        for name, blobs in referenced.items():
            others = set().union(*(b for r, b in referenced.items() if r != name))
            exclusive = blobs - others
            per[name] = (size(blobs), size(exclusive), size(exclusive - kept[name]))
        every = set().union(*referenced.values())
        counts: dict[str, int] = {}
        for blobs in referenced.values():
            for blob in blobs:
                counts[blob] = counts.get(blob, 0) + 1
        all_kept = set().union(*kept.values())
        totals = {
            "blob_bytes": size(set(self.sizes)),
            "referenced_bytes": size(every),
            "shared_bytes": size({b for b, n in counts.items() if n > 1}),
            "orphaned_bytes": size(set(self.sizes) - every),
            "reclaimable_bytes": size(every - all_kept),
        }
        return per, totals


@st.composite
def registries(draw: st.DrawFn) -> list[tuple[str, ...]]:
    """A list of steps; each names what to write (see ``build``)."""
    names = draw(st.lists(st.sampled_from(REPOSITORY_NAMES), min_size=1, max_size=4,
                          unique=True))  # fmt: skip
    steps: list[tuple[str, ...]] = []
    for number in range(draw(st.integers(1, 10))):
        repository = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["image", "image", "index", "referrer", "copy"]))
        revision = draw(st.integers(0, 4)) > 0
        tag = f"t{number}" if revision and draw(st.booleans()) else ""
        layers = ",".join(str(i) for i in draw(st.lists(st.integers(0, 6), max_size=3,
                                                        unique=True)))  # fmt: skip
        config = str(draw(st.integers(0, 4)))
        pick = str(draw(st.integers(0, 1000)))
        steps.append((kind, repository, str(revision), tag, layers, config, pick))
    for seed in draw(st.sets(st.integers(20, 26), max_size=3)):
        steps.append(("orphan", "", "", "", str(seed), "", ""))
    return steps


def build(root: Path, steps: list[tuple[str, ...]]) -> Model:
    """Write the steps into ``root`` and return the model of what was written."""
    writer = RegistryWriter(DiskSink(root))
    model = Model()
    by_repository: dict[str, list[str]] = {}
    images: list[str] = []

    def blob(data: bytes, media_type: str = "application/octet-stream") -> str:
        digest = writer.blob(data, media_type).digest
        model.sizes[digest] = len(data)
        return digest

    for kind, repository, revision_text, tag, layers, config, pick in steps:
        if kind == "orphan":
            blob(_layer(int(layers)))
            continue
        revision = revision_text == "True"
        model.revisions.setdefault(repository, set())
        model.tags.setdefault(repository, {})
        earlier = by_repository.setdefault(repository, [])
        if kind == "index" and earlier:
            chosen = sorted({earlier[int(pick) % len(earlier)], earlier[-1]})
            manifest = writer.index(
                repository, [model.manifests[d].descriptor for d in chosen], oci=True,
                revision=revision,
            )  # fmt: skip
            model.children[manifest.digest] = tuple(chosen)
        elif kind == "copy" and images:
            manifest = model.manifests[images[int(pick) % len(images)]]
            writer.manifest(repository, manifest, revision=revision)
        else:
            subject = None
            if kind == "referrer" and earlier:
                subject = model.manifests[earlier[int(pick) % len(earlier)]].descriptor
            config_data = f'{{"config":{config}}}'.encode()
            blob(config_data)
            layer_data = [_layer(int(s)) for s in layers.split(",") if s]
            for data in layer_data:
                blob(data)
            manifest = writer.image(repository, config_data, layer_data, oci=True,
                                    subject=subject, revision=revision)  # fmt: skip
            if subject is not None:
                model.subject[manifest.digest] = subject.digest
            else:
                images.append(manifest.digest)
        model.manifests[manifest.digest] = manifest
        model.sizes[manifest.digest] = len(manifest.data)
        earlier.append(manifest.digest)
        if revision:
            model.revisions[repository].add(manifest.digest)
        if tag:
            writer.tag(repository, tag, manifest.digest)
            model.tags[repository][tag] = manifest.digest
    # Repositories whose every step was skipped still exist only if written to.
    for name in list(model.revisions):
        if not (root / f"docker/registry/v2/repositories/{name}/_manifests").is_dir():
            del model.revisions[name], model.tags[name]
    return model


def measure(root: Path) -> tuple[list[RepositoryUsage], UsageTotals]:
    """Run the scan over the disk root; every repository and the totals."""
    ledger = UsageLedger()
    try:
        store = FilesystemStore(root)

        async def run() -> None:
            try:
                await UsageScan(RegistryView(store), ledger).run()
            finally:
                await store.aclose()

        asyncio.run(run())
        totals = ledger.settle()
        return list(ledger.repositories("name", descending=False)), totals
    finally:
        ledger.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=registries())
def test_numbers_equal_the_reference_model(steps: list[tuple[str, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        model = build(root, steps)
        (root / "docker/registry/v2/repositories").mkdir(parents=True, exist_ok=True)
        (root / "docker/registry/v2/blobs").mkdir(parents=True, exist_ok=True)
        rows, totals = measure(root)
    per, expected_totals = model.expected()
    found = {r.name: (r.referenced_bytes, r.exclusive_bytes, r.reclaimable_bytes) for r in rows}
    assert found == per
    for row in rows:
        assert row.reclaimable_bytes <= row.exclusive_bytes <= row.referenced_bytes
        assert row.manifests == len(model.revisions[row.name])
        assert row.tags == len(model.tags[row.name])
    assert {k: getattr(totals, k) for k in expected_totals} == expected_totals
    assert totals.reclaimable_shared_bytes == totals.reclaimable_bytes - sum(
        r.reclaimable_bytes for r in rows
    )


def _ledger_with(rows: dict[str, tuple[set[int], set[int]]], blobs: dict[int, int]
                 ) -> UsageLedger:  # fmt: skip
    ledger = UsageLedger()
    ledger.add_blobs(blobs.items())
    for name, (referenced, kept) in rows.items():
        ledger.add_repository(RepositoryCounts(name), referenced, kept)
    return ledger


def test_a_blob_two_repositories_share_is_exclusive_to_neither() -> None:
    ledger = _ledger_with({"a": ({1, 2}, {1}), "b": ({2, 3}, set())}, {1: 10, 2: 200, 3: 3000})
    try:
        rows = {r.name: r for r in ledger.repositories("name", descending=False)}
        totals = ledger.settle()
    finally:
        ledger.close()
    assert (rows["a"].referenced_bytes, rows["a"].exclusive_bytes,
            rows["a"].reclaimable_bytes) == (210, 10, 0)  # fmt: skip
    assert (rows["b"].referenced_bytes, rows["b"].exclusive_bytes,
            rows["b"].reclaimable_bytes) == (3200, 3000, 3000)  # fmt: skip
    assert totals.shared_bytes == 200
    # Blob 2 goes only when both are cleaned: counted in the total, in no repository.
    assert totals.reclaimable_bytes == 3200
    assert totals.reclaimable_shared_bytes == 200


def test_missing_and_orphaned_blobs_are_counted_apart() -> None:
    ledger = _ledger_with({"a": ({1, 9}, {1, 9})}, {1: 10, 5: 55})
    try:
        row = next(ledger.repositories())
        totals = ledger.settle()
    finally:
        ledger.close()
    assert (row.referenced_bytes, row.referenced_blobs, row.missing_blobs) == (10, 2, 1)
    assert (totals.orphaned_blobs, totals.orphaned_bytes, totals.missing_blobs) == (1, 55, 1)
    assert (totals.blobs, totals.blob_bytes) == (2, 65)


def test_sorting_by_every_column() -> None:
    ledger = _ledger_with({"b": ({1}, set()), "a": ({2}, {2}), "c": ({3}, set())},
                          {1: 5, 2: 50, 3: 500})  # fmt: skip
    try:
        assert [r.name for r in ledger.repositories()] == ["c", "a", "b"]
        column, descending = sort_column("exclusive")
        assert [r.name for r in ledger.repositories(column, descending=descending)] == [
            "c", "a", "b"]  # fmt: skip
        column, descending = sort_column("-reclaimable")
        assert [r.name for r in ledger.repositories(column, descending=descending)] == [
            "a", "b", "c"]  # fmt: skip
        column, descending = sort_column("name")
        assert [r.name for r in ledger.repositories(column, descending=descending)] == [
            "a", "b", "c"]  # fmt: skip
    finally:
        ledger.close()
    with pytest.raises(ValueError, match="unknown sort column"):
        sort_column("size")


# -- the command, through a typer app of its own (until regcleaner.cli registers it) ----

APP = typer.Typer()
APP.command("usage")(usage)
APP.command("unused")(lambda: None)  # two commands: the name is given on the command line


@pytest.fixture
def small_registry(tmp_path: Path) -> tuple[Path, Model]:
    steps: list[tuple[str, ...]] = [
        ("image", "app", "True", "v1", "0,1", "0", "0"),
        ("image", "app", "True", "", "2", "1", "0"),
        ("copy", "lib", "True", "latest", "", "", "0"),
        ("image", "lib", "True", "", "1,3", "2", "0"),
        ("orphan", "", "", "", "25", "", ""),
    ]
    return tmp_path, build(tmp_path, steps)


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(APP, ["usage", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_json_output_holds_each_repository_exact_bytes(
    small_registry: tuple[Path, Model],
) -> None:
    root, model = small_registry
    code, stdout, _ = _invoke("--registry-dir", str(root), "--output", "json", "--min-age", "0",
                              "--progress-interval", "0")  # fmt: skip
    assert code == 0
    document = json.loads(stdout)
    per, totals = model.expected()
    found = {r["name"]: (r["referenced_bytes"], r["exclusive_bytes"], r["reclaimable_bytes"])
             for r in document["repositories"]}  # fmt: skip
    assert found == per
    assert document["totals"]["orphaned_bytes"] == totals["orphaned_bytes"] > 0
    assert document["command"] == "usage"


def test_grace_keeps_young_manifests_out_of_reclaimable(
    small_registry: tuple[Path, Model],
) -> None:
    root, _ = small_registry
    _, stdout, _ = _invoke("--registry-dir", str(root), "--output", "json")  # --min-age 1h
    document = json.loads(stdout)
    assert all(r["reclaimable_bytes"] == 0 for r in document["repositories"])
    assert any(r["exclusive_bytes"] > 0 for r in document["repositories"])


def test_csv_top_and_filters(small_registry: tuple[Path, Model]) -> None:
    root, _ = small_registry
    code, stdout, _ = _invoke("--registry-dir", str(root), "--output", "csv", "--sort", "name",
                              "--top", "1", "--min-age", "0")  # fmt: skip
    assert code == 0
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("name,tags,manifests")
    assert [line.split(",")[0] for line in lines[1:]] == ["app"]
    _, stdout, _ = _invoke("--registry-dir", str(root), "--output", "csv", "--exclude", "app")
    assert [line.split(",")[0] for line in stdout.strip().splitlines()[1:]] == ["lib"]


def test_text_table_metrics_and_page(small_registry: tuple[Path, Model], tmp_path: Path) -> None:
    root, model = small_registry
    metrics = tmp_path / "usage.prom"
    page = tmp_path / "usage.html"
    code, stdout, _ = _invoke("--registry-dir", str(root), "--min-age", "0",
                              "--metrics-file", str(metrics), "--html", str(page))  # fmt: skip
    assert code == 0
    assert "Space by repository" in stdout
    assert "lib" in stdout
    per, _ = model.expected()
    text = metrics.read_text()
    assert f'regcleaner_usage_repository_exclusive_bytes{{repository="lib"}} {per["lib"][1]}' in (
        text.replace(".0\n", "\n"))  # fmt: skip
    html = page.read_text()
    assert "http://" not in html
    assert "https://" not in html
    assert "src=" not in html
    assert f'data-repository="lib" data-referenced="{per["lib"][0]}"' in html


def test_bad_options_are_usage_errors(small_registry: tuple[Path, Model]) -> None:
    root, _ = small_registry
    assert _invoke("--registry-dir", str(root), "--output", "yaml")[0] == 2
    assert _invoke("--registry-dir", str(root), "--sort", "size")[0] == 2
    assert _invoke("--registry-dir", str(root), "--top", "0")[0] == 2


def test_reclaimable_follows_a_retention_policy(tmp_path: Path) -> None:
    steps: list[tuple[str, ...]] = [
        ("image", "app", "True", f"build-{n}", str(n), str(n), "0") for n in range(3)
    ]
    root = tmp_path / "storage"
    model = build(root, steps)
    for n in range(3):  # pushed one after the other: build-2 is the newest
        link = root / f"docker/registry/v2/repositories/app/_manifests/tags/build-{n}/current/link"
        os.utime(link, (1_700_000_000 + n * 100, 1_700_000_000 + n * 100))
    policy = tmp_path / "policy.yaml"
    policy.write_text('policies:\n  - repositories: ["app"]\n    keep:\n'
                      '      - tags: ["^build-"]\n        newest: 1\n')  # fmt: skip
    args = ("--registry-dir", str(root), "--output", "json", "--min-age", "0")
    without = json.loads(_invoke(*args)[1])["repositories"][0]
    with_policy = json.loads(_invoke(*args, "--policy", str(policy))[1])["repositories"][0]
    assert without["reclaimable_bytes"] == 0  # every image is tagged
    assert with_policy["deletable_manifests"] == 2  # two of three tags expire
    # What the two expired images hold alone: their manifests, configs and layers.
    expired = [d for t, d in model.tags["app"].items() if t != "build-2"]
    newest = model.tags["app"]["build-2"]
    freed = model.marks(set(expired)) - model.marks({newest})
    assert with_policy["reclaimable_bytes"] == sum(model.sizes[b] for b in freed) > 0


def test_a_policy_with_pulled_within_is_refused_with_why(tmp_path: Path) -> None:
    """usage reads no pull record: it says so rather than asking for an option it lacks."""
    from typer.testing import CliRunner

    from regcleaner.cli import app

    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    policy = tmp_path / "p.yaml"
    policy.write_text('policies:\n  - repositories: ["*"]\n    keep:\n      - pulled_within: 30d\n')
    result = CliRunner().invoke(
        app, ["usage", "--registry-dir", str(root), "--policy", str(policy)]
    )
    assert result.exit_code == 2
    assert "usage reads no pull times yet" in result.stderr
