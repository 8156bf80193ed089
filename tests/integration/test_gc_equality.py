"""``regcleaner gc`` removes exactly what ``docker-registry garbage-collect`` removes.

Random registries are written straight into distribution's layout (testkit's
registry_writer), twice: the real registry's garbage-collect (distribution 2.8.2,
without ``--delete-untagged``) runs on one copy, ``regcleaner gc`` on the other, and
the blobs left under ``blobs/`` must be the same, on disk and on S3 (moto).

Where the registry's garbage-collect fails, regcleaner must refuse too (exit 1,
nothing deleted). Where the registry silently skips something a sane registry never
holds (a revision whose blob is missing, a link naming another digest, a manifest that
does not hash to its digest), regcleaner deliberately refuses instead.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from regcleaner.collector import Collector
from regcleaner.config import GcSettings
from regcleaner.reporting.collection import GcReport
from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.view import RegistryView
from testkit.api import RegistryAPI
from testkit.registry import V3, Flavour, RegistryProcess, running
from testkit.registry_writer import (
    BLOBS,
    DiskSink,
    Manifest,
    MemorySink,
    RegistryWriter,
    S3Sink,
    blob_data_key,
    blobs_in_bucket,
    blobs_on_disk,
    hex_of,
    image_config,
    image_manifest,
    layer_blob,
    repository_key,
    revision_link_key,
    sha256_digest,
)
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.integration

S3_ROOT = "/root"
_buckets = itertools.count()

# -- the random registry ---------------------------------------------------------------

# Nested names, and names that are a prefix of another (team/app and team/app/web).
REPOSITORY_NAMES = ("app", "team/app", "team/app/web", "lib", "org/x/y")
# A repository that only ever received blob uploads: _layers, no _manifests.
UPLOADS_ONLY = "cache/uploads"


@dataclass(frozen=True)
class Item:
    """One manifest in one repository."""

    kind: str  # image | index | referrer | copy (of an image from another repository)
    repository: str
    oci: bool
    config: int  # image and referrer: which config (shared configs share a blob)
    layers: tuple[int, ...]  # image and referrer: indices into the layer pool
    targets: tuple[int, ...]  # index: children; referrer: (subject,); copy: (original,)
    revision: bool  # False: its revision link was deleted since (its blob stays)
    link_layers: bool  # False: the layers are linked into no _layers of this repository
    tag: str | None


@dataclass(frozen=True)
class Spec:
    """A registry's storage, as data."""

    items: tuple[Item, ...]
    orphans: tuple[tuple[int, str | None], ...]  # blobs uploaded, never referenced
    foreign_links: tuple[tuple[int, str], ...]  # layer i linked into another repository


@st.composite
def registries(draw: st.DrawFn) -> Spec:
    repositories = draw(st.lists(st.sampled_from(REPOSITORY_NAMES), min_size=1, max_size=4,
                                 unique=True))  # fmt: skip
    items: list[Item] = []
    for number in range(draw(st.integers(1, 12))):
        repository = draw(st.sampled_from(repositories))
        earlier = [i for i, item in enumerate(items) if item.repository == repository]
        images_elsewhere = [i for i, item in enumerate(items)
                            if item.repository != repository and item.kind != "index"]  # fmt: skip
        kinds = ["image", "image", "index", "index", "referrer"] if earlier else ["image"]
        if images_elsewhere:
            kinds.append("copy")
        kind = draw(st.sampled_from(kinds))
        oci = draw(st.booleans())
        targets: tuple[int, ...] = ()
        if kind == "copy":
            # The same manifest in a second repository (crane copy, a mount and a PUT).
            targets = (draw(st.sampled_from(images_elsewhere)),)
        elif kind == "index":
            # Children in the same repository; an index among them nests indexes.
            targets = tuple(draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3,
                                          unique=True)))  # fmt: skip
        elif kind == "referrer":
            oci = True  # only OCI manifests carry a subject
            targets = (draw(st.sampled_from(earlier)),)
        layers: tuple[int, ...] = ()
        if kind in ("image", "referrer"):
            # A small pool: layers shared within and across repositories.
            layers = tuple(draw(st.lists(st.integers(0, 7), max_size=3, unique=True)))
        revision = draw(st.integers(0, 3)) > 0
        tagged = revision and draw(st.booleans())
        items.append(
            Item(
                kind, repository, oci,
                config=draw(st.integers(0, 5)),
                layers=layers,
                targets=targets,
                revision=revision,
                link_layers=draw(st.integers(0, 3)) > 0,
                tag=f"t{number}" if tagged else None,
            )
        )  # fmt: skip
    homes = st.sampled_from((None, UPLOADS_ONLY, *repositories))
    seeds = sorted(draw(st.sets(st.integers(0, 9), max_size=4)))
    orphans = tuple((seed, draw(homes)) for seed in seeds)
    foreign = tuple(draw(st.lists(st.tuples(st.integers(0, 7), st.sampled_from(repositories)),
                                  max_size=3)))  # fmt: skip
    return Spec(tuple(items), orphans, foreign)


def features(spec: Spec) -> set[str]:
    """What a spec exercises (``pytest --hypothesis-show-statistics`` counts them)."""
    found: set[str] = set()
    items = spec.items
    by_layer: dict[int, set[str]] = {}
    for item in items:
        for layer in item.layers:
            by_layer.setdefault(layer, set()).add(item.repository)
        if item.kind == "index" and any(items[t].kind == "index" for t in item.targets):
            found.add("nested index")
        if item.kind == "referrer":
            found.add("referrer")
        if item.kind == "copy":
            found.add("manifest in two repositories")
        if not item.revision:
            found.add("revision link deleted")
        if item.layers and not item.link_layers:
            found.add("layers not linked into their repository")
        if item.tag:
            found.add("tag")
    if any(len(repos) > 1 for repos in by_layer.values()):
        found.add("layer shared across repositories")
    if any(home == UPLOADS_ONLY for _, home in spec.orphans):
        found.add("repository with uploads only")
    if spec.orphans:
        found.add("blob never referenced")
    if spec.foreign_links:
        found.add("blob linked into another repository")
    if len({item.repository for item in items}) > 1:
        found.add("several repositories")
    return found


@dataclass(frozen=True)
class Written:
    """The files of a spec, and what the registry's garbage-collect must sweep."""

    files: MemorySink
    blobs: frozenset[str]
    sweep: frozenset[str]


def write_spec(spec: Spec) -> Written:
    """Write ``spec`` into memory (to replay into each copy); compute the model's sweep:
    every blob but each revision's manifest and its references, in repositories that
    have a ``_layers`` folder (every one here: each image or copy links its config)."""
    files = MemorySink()
    writer = RegistryWriter(files)
    manifests: list[Manifest] = []
    marked: set[str] = set()
    for item in spec.items:
        if item.kind == "copy":
            manifest = writer.manifest(item.repository, manifests[item.targets[0]],
                                       revision=item.revision)  # fmt: skip
            for reference in manifest.references:
                writer.link_layer(item.repository, reference)
        elif item.kind == "index":
            manifest = writer.index(
                item.repository, [manifests[t].descriptor for t in item.targets],
                oci=item.oci, revision=item.revision,
            )  # fmt: skip
        else:
            config, config_descriptor = image_config(f"c{item.config}", oci=item.oci)
            writer.upload(item.repository, config, config_descriptor.media_type)
            layer_descriptors = []
            for layer in item.layers:
                data, descriptor = layer_blob(f"L{layer}", oci=item.oci)
                writer.blob(data, descriptor.media_type)
                if item.link_layers:
                    writer.link_layer(item.repository, descriptor.digest)
                layer_descriptors.append(descriptor)
            subject = manifests[item.targets[0]].descriptor if item.kind == "referrer" else None
            manifest = writer.manifest(
                item.repository,
                image_manifest(
                    config_descriptor, layer_descriptors, oci=item.oci, subject=subject,
                    artifact_type="application/spdx+json" if subject else None,
                ),
                revision=item.revision,
            )  # fmt: skip
        manifests.append(manifest)
        if item.revision:
            marked.add(manifest.digest)
            marked.update(manifest.references)
        if item.tag is not None:
            history = [m.digest for m, it in zip(manifests, spec.items, strict=False)
                       if it.repository == item.repository]  # fmt: skip
            writer.tag(item.repository, item.tag, manifest.digest, history=history)
    for seed, home in spec.orphans:
        descriptor = writer.blob(f"orphan {seed}".encode())
        if home is not None:
            writer.link_layer(home, descriptor.digest)
    for layer, repository in spec.foreign_links:
        data, descriptor = layer_blob(f"L{layer}", oci=True)
        writer.blob(data)
        writer.link_layer(repository, descriptor.digest)
    blobs = frozenset(writer.blobs)
    return Written(files, blobs, blobs - frozenset(marked))


# -- running both collectors -----------------------------------------------------------


def registry_gc(theirs: RegistryProcess) -> subprocess.CompletedProcess[str]:
    """The registry's own ``garbage-collect CONFIG`` (no --delete-untagged), as it is."""
    return theirs.run_garbage_collect()


def regcleaner_gc_disk(root: Path, report: Path, *extra: str) -> CliResult:
    return run_cli(
        ["gc", "--registry-stopped", "--registry-dir", str(root), "--progress-interval", "0",
         *extra],
        report_path=report,
    )  # fmt: skip


def regcleaner_gc_s3(moto: MotoS3, bucket: str, report: Path, *extra: str) -> CliResult:
    return run_cli(
        ["gc", "--registry-stopped", "--storage", "s3", "--bucket", bucket,
         "--registry-dir", S3_ROOT, "--s3-endpoint", moto.url, "--region", REGION,
         "--progress-interval", "0", *extra],
        env={"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY},
        report_path=report,
    )  # fmt: skip


def swept_in_report(report: dict[str, Any] | None) -> set[str]:
    assert report is not None
    return {entry["digest"] for entry in report["swept"]}


def assert_same_as_registry(
    before: set[str], after_registry: set[str], after_ours: set[str], result: CliResult,
    model: frozenset[str],
) -> None:  # fmt: skip
    assert result.exit_code == 0, result.output
    assert after_ours == after_registry, (
        f"only the registry swept {sorted(after_ours - after_registry)}; "
        f"only regcleaner swept {sorted(after_registry - after_ours)}"
    )
    removed = before - after_registry
    assert removed == model, "the test's model of garbage-collect is wrong"
    assert result.report is not None
    assert result.report["summary"]["blobs_swept"] == len(removed)
    assert result.report["summary"]["blobs_failed"] == 0
    assert swept_in_report(result.report) == removed


# -- equality on disk and on S3 ----------------------------------------------------------


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(registries())
def test_gc_on_disk_sweeps_exactly_what_the_registry_sweeps(
    registry_flavour: Flavour, spec: Spec
) -> None:
    for feature in features(spec):
        event(feature)
    written = write_spec(spec)
    with tempfile.TemporaryDirectory(prefix="gc-equality-") as tmp:
        theirs = RegistryProcess(Path(tmp) / "registry", flavour=registry_flavour)
        ours = Path(tmp) / "ours"
        written.files.replay(DiskSink(theirs.root), DiskSink(ours))
        before = blobs_on_disk(ours)
        assert before == written.blobs

        gc = registry_gc(theirs)
        assert gc.returncode == 0, gc.stdout + gc.stderr
        result = regcleaner_gc_disk(ours, Path(tmp) / "report.json")

        assert_same_as_registry(before, blobs_on_disk(theirs.root), blobs_on_disk(ours), result,
                                written.sweep)  # fmt: skip


@settings(max_examples=16, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(registries())
def test_gc_on_s3_sweeps_exactly_what_the_registry_sweeps(
    moto_server: MotoS3, registry_flavour: Flavour, spec: Spec
) -> None:
    for feature in features(spec):
        event(feature)
    written = write_spec(spec)
    client = moto_server.client()
    number = next(_buckets)
    theirs_bucket, ours_bucket = f"gc-eq-registry-{number}", f"gc-eq-ours-{number}"
    for bucket in (theirs_bucket, ours_bucket):
        moto_server.create_bucket(bucket)
        with S3Sink(client, bucket, S3_ROOT) as sink:
            written.files.replay(sink)
    before = blobs_in_bucket(client, ours_bucket, S3_ROOT)
    assert before == written.blobs
    with tempfile.TemporaryDirectory(prefix="gc-equality-s3-") as tmp:
        theirs = RegistryProcess(
            Path(tmp) / "registry",
            flavour=registry_flavour,
            storage=moto_server.registry_storage(theirs_bucket, S3_ROOT),
        )
        theirs.garbage_collect()
        result = regcleaner_gc_s3(moto_server, ours_bucket, Path(tmp) / "report.json")
    assert_same_as_registry(
        before, blobs_in_bucket(client, theirs_bucket, S3_ROOT),
        blobs_in_bucket(client, ours_bucket, S3_ROOT), result, written.sweep,
    )  # fmt: skip


# -- storage the registry's garbage-collect fails on: regcleaner refuses ------------------


@dataclass(frozen=True)
class Base:
    """A tagged image, and a blob nobody references (which a sweep would remove)."""

    writer: RegistryWriter
    image: Manifest
    root: Path


Damage = Callable[[Base], None]


def base_registry(root: Path) -> Base:
    writer = RegistryWriter(DiskSink(root))
    image = writer.image("app", b'{"config":1}', [b"layer one", b"layer two"], oci=True)
    writer.tag("app", "v1", image.digest)
    other = writer.image("team/app", b'{"config":2}', [b"layer three"], oci=False)
    writer.tag("team/app", "v1", other.digest)
    writer.blob(b"never referenced")
    return Base(writer, image, root)


def garbage_manifest(base: Base) -> None:
    junk = base.writer.blob(b'{"schemaVersion": 2, "mediaType": ')
    base.writer.revision("app", junk.digest)


def empty_manifest(base: Base) -> None:
    base.writer.revision("app", base.writer.blob(b"").digest)


def garbage_revision_link(base: Base) -> None:
    base.writer.raw(revision_link_key("app", sha256_digest(b"x")), b"not a digest")


def empty_revision_link(base: Base) -> None:
    base.writer.raw(revision_link_key("app", base.image.digest), b"")


def uppercase_revision_link(base: Base) -> None:
    digest = base.image.digest
    base.writer.raw(revision_link_key("app", digest), b"sha256:" + hex_of(digest).upper().encode())


def garbage_signature_link(base: Base) -> None:
    # schema1 signatures: the registry's Enumerate reads every link below revisions/.
    hex_part = hex_of(base.image.digest)
    key = f"_manifests/revisions/sha256/{hex_part}/signatures/sha256/{'1' * 64}/link"
    base.writer.raw(repository_key("app", key), b"garbage")


def not_hex_blob(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/ab/not-hex/data", b"x")


def blob_in_wrong_prefix(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/ab/{'cd' + '0' * 62}/data", b"x")


def uppercase_blob(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/AB/{'AB' + '0' * 62}/data", b"x")


def one_letter_blob(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/ab/a/data", b"x")  # 2.8.2 panics on this one


def invalid_repository_name(name: str) -> Damage:
    def damage(base: Base) -> None:
        base.writer.image(name, b'{"config":9}', [b"layer nine"], oci=True)

    damage.__name__ = f"repository_named_{name}"
    return damage


def revision_link_with_newline(base: Base) -> None:
    digest = base.image.digest
    base.writer.raw(revision_link_key("app", digest), digest.encode() + b"\n")


def link_outside_sha256(base: Base) -> None:
    base.writer.raw(repository_key("app", "_manifests/revisions/sha512/abc/link"), b"garbage")


def data_below_a_blob(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/ab/{'ab' + '0' * 62}/sub/data", b"x")


def unknown_digest_algorithm_blob(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/md5/ab/{'ab' + '0' * 30}/data", b"x")


def sha512_blob_of_the_wrong_length(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha512/ab/{'ab' + '0' * 62}/data", b"x")


def data_directly_under_blobs(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/data", b"x")


def data_directly_under_an_algorithm(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/data", b"x")


def layers_file_in_an_invalid_repository(base: Base) -> None:
    # The registry's walk takes a file named _layers for a repository, too.
    base.writer.raw(repository_key("App", "_layers"), b"x")


def layers_only_in_an_invalid_repository(base: Base) -> None:
    base.writer.link_layer("App", base.image.digest)


def layers_directly_under_repositories(base: Base) -> None:
    base.writer.raw(f"docker/registry/v2/repositories/_layers/sha256/{'1' * 64}/link",
                    base.image.digest.encode())  # fmt: skip


def link_at_a_path_the_driver_rejects(base: Base) -> None:
    # The walk lists it; reading it goes through the driver's path check, which fails.
    key = "_manifests/revisions/sha256/not a digest/link"
    base.writer.raw(repository_key("app", key), base.image.digest.encode())


REGISTRY_FAILS: list[Any] = [
    garbage_manifest,
    empty_manifest,
    garbage_revision_link,
    empty_revision_link,
    uppercase_revision_link,
    garbage_signature_link,
    not_hex_blob,
    blob_in_wrong_prefix,
    uppercase_blob,
    one_letter_blob,
    invalid_repository_name("App"),
    invalid_repository_name("a..b"),
    invalid_repository_name("localhost:5000/app"),  # WithName takes it; the driver's paths do not
    revision_link_with_newline,
    link_outside_sha256,
    data_below_a_blob,
    unknown_digest_algorithm_blob,
    sha512_blob_of_the_wrong_length,
    data_directly_under_blobs,
    data_directly_under_an_algorithm,
    layers_file_in_an_invalid_repository,
    layers_only_in_an_invalid_repository,
    layers_directly_under_repositories,
    link_at_a_path_the_driver_rejects,
]


# distribution 3 finds repositories by _manifests, not _layers: it never opens these, so
# its garbage-collect succeeds. regcleaner still refuses on either registry (it cannot
# tell a mistyped repository from a real one): stricter than 3, never the other way.
V3_NEVER_OPENS = (
    layers_file_in_an_invalid_repository,
    layers_only_in_an_invalid_repository,
    layers_directly_under_repositories,
)


@pytest.mark.parametrize("damage", REGISTRY_FAILS)
def test_where_the_registry_gc_fails_regcleaner_refuses(
    damage: Damage, tmp_path: Path, registry_flavour: Flavour
) -> None:
    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    damage(base_registry(theirs.root))
    ours = tmp_path / "ours"
    damage(base_registry(ours))
    before = blobs_on_disk(ours)

    gc = registry_gc(theirs)
    if registry_flavour == V3 and damage in V3_NEVER_OPENS:
        assert gc.returncode == 0, gc.stdout + gc.stderr  # 3 does not see it...
    else:
        assert gc.returncode != 0, f"{registry_flavour} did not fail: {gc.stdout}"
        assert blobs_on_disk(theirs.root) == before

    result = regcleaner_gc_disk(ours, tmp_path / "report.json")
    assert result.exit_code == 1, result.output
    assert blobs_on_disk(ours) == before
    assert result.report is not None
    assert result.report["summary"]["blobs_swept"] == 0
    assert result.report["problems"]
    assert "refusing to sweep" in result.output


# A file named data where no blob can be, but whose path still parses as a digest: the
# registry's enumeration takes it for that blob, and its sweep fails when it removes the
# blob's canonical folder, which is not there (after removing the blobs it reached
# first, in random order).


def blob_without_its_fan_out_folder(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/{'ab' + '0' * 62}/data", b"x")


def blob_below_an_algorithm_folder_in_a_fan_out(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha256/ab/sha256/{'ab' + '0' * 62}/data", b"x")


@pytest.mark.parametrize(
    "damage", [blob_without_its_fan_out_folder, blob_below_an_algorithm_folder_in_a_fan_out]
)
def test_where_the_registry_gc_fails_mid_sweep_regcleaner_refuses_before(
    damage: Damage, tmp_path: Path, registry_flavour: Flavour
) -> None:
    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    damage(base_registry(theirs.root))
    ours = tmp_path / "ours"
    damage(base_registry(ours))
    before = data_files(ours)

    gc = registry_gc(theirs)
    assert gc.returncode != 0, f"2.8.2 did not fail: {gc.stdout}"
    assert "failed to delete blob" in gc.stderr

    result = regcleaner_gc_disk(ours, tmp_path / "report.json")
    assert result.exit_code == 1, result.output
    assert data_files(ours) == before
    assert result.report is not None
    assert result.report["summary"]["blobs_swept"] == 0
    assert "refusing to sweep" in result.output


# -- odd storage the registry's garbage-collect accepts: the same sweep -------------------


def data_files(root: Path) -> set[str]:
    """Every file named ``data`` below ``blobs/``, any algorithm, any depth."""
    return {str(path.relative_to(root)) for path in (root / BLOBS).rglob("data")
            if path.is_file()}  # fmt: skip


def sha384_and_sha512_blobs(base: Base) -> None:
    base.writer.raw(f"{BLOBS}/sha512/ab/{'ab' + '0' * 126}/data", b"x")
    base.writer.raw(f"{BLOBS}/sha384/cd/{'cd' + '0' * 94}/data", b"y")


def repository_with_a_domain_like_first_component(base: Base) -> None:
    # reference.WithName takes "App/x" (a domain may hold capitals): marked, kept.
    image = base.writer.image("App/x", b'{"config":9}', [b"layer nine"], oci=True)
    base.writer.tag("App/x", "v1", image.digest)


def valid_link_outside_sha256(base: Base) -> None:
    key = "_manifests/revisions/sha512/abc/link"
    base.writer.raw(repository_key("app", key), base.image.digest.encode())


def valid_link_directly_under_sha256(base: Base) -> None:
    key = "_manifests/revisions/sha256/link"
    base.writer.raw(repository_key("app", key), base.image.digest.encode())


def files_beside_blobs(base: Base) -> None:
    hex_part = "ab" + "0" * 62
    base.writer.raw(f"{BLOBS}/sha256/ab/{hex_part}/not-data", b"x")
    base.writer.raw(f"{BLOBS}/sha256/ab/{'ab' + '1' * 62}/data/inside", b"x")  # a folder
    base.writer.raw(f"{BLOBS}/sha256/ab/loose", b"x")
    base.writer.raw(f"{BLOBS}/sha256/loose", b"x")
    base.writer.raw(f"{BLOBS}/loose", b"x")


@pytest.mark.parametrize(
    "damage",
    [sha384_and_sha512_blobs, repository_with_a_domain_like_first_component,
     valid_link_outside_sha256, valid_link_directly_under_sha256, files_beside_blobs],
)  # fmt: skip
def test_odd_storage_the_registry_accepts_is_swept_the_same(
    damage: Damage, tmp_path: Path, registry_flavour: Flavour
) -> None:
    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    damage(base_registry(theirs.root))
    ours = tmp_path / "ours"
    damage(base_registry(ours))
    before = data_files(ours)

    gc = registry_gc(theirs)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    result = regcleaner_gc_disk(ours, tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    after = data_files(ours)
    assert after == data_files(theirs.root)
    assert after < before
    assert result.report is not None
    assert result.report["summary"]["blobs_swept"] == len(before - after)


# -- deliberately stricter than the registry ---------------------------------------------
# In each case below 2.8.2's garbage-collect exits 0 and sweeps; regcleaner refuses
# (exit 1, nothing deleted). This is a deliberate difference: a registry in that state
# needs a look before anything is deleted (the registry's sweep can even remove the
# blobs of a tagged image, see link_naming_another_revision).


def missing_manifest_blob(base: Base) -> None:
    base.writer.revision("app", sha256_digest(b"a manifest nobody wrote"))


def link_naming_an_unknown_digest(base: Base) -> None:
    elsewhere = base.writer.image("app", b'{"config":3}', [b"layer four"], oci=True,
                                  revision=False)  # fmt: skip
    base.writer.raw(revision_link_key("app", sha256_digest(b"y")), elsewhere.digest.encode())


def link_naming_another_revision(base: Base) -> None:
    # The tagged image's revision link names a manifest without a revision: 2.8.2 skips
    # it, marks nothing of the tagged image and sweeps its layers.
    elsewhere = base.writer.image("app", b'{"config":3}', [b"layer four"], oci=True,
                                  revision=False)  # fmt: skip
    base.writer.raw(revision_link_key("app", base.image.digest), elsewhere.digest.encode())


def manifest_not_matching_its_digest(base: Base) -> None:
    config, layer = base.writer.blob(b'{"config":5}'), base.writer.blob(b"layer five")
    real = image_manifest(config, [layer], oci=True)
    claimed = sha256_digest(b"claimed")
    base.writer.raw(blob_data_key(claimed), real.data)
    base.writer.revision("app", claimed)


def invalid_repository_name_without_layers(base: Base) -> None:
    # The registry never opens it (no _layers folder), so never fails on its name.
    base.writer.image("App", b'{"config":6}', [b"layer six"], oci=True, link_blobs=False)


def _outside(base: Base) -> Path:
    outside = base.root.parent / f"{base.root.name}-outside"
    outside.mkdir(exist_ok=True)
    return outside


def symlinked_repository(base: Base) -> None:
    # The registry's disk driver follows the link and marks what the manifests there
    # reference; regcleaner follows no links.
    image = base.writer.image("app/linked", b'{"config":6}', [b"layer six"], oci=True)
    base.writer.tag("app/linked", "v1", image.digest)
    folder = base.root / repository_key("app/linked", "")
    moved = _outside(base) / "linked"
    folder.rename(moved)
    folder.symlink_to(moved, target_is_directory=True)


def symlinked_revision_folder(base: Base) -> None:
    folder = (base.root / revision_link_key("app", base.image.digest)).parent
    moved = _outside(base) / "revision"
    folder.rename(moved)
    folder.symlink_to(moved, target_is_directory=True)


def symlinked_blob_folder(base: Base) -> None:
    garbage = base.writer.blob(b"garbage behind a symbolic link")
    folder = (base.root / blob_data_key(garbage.digest)).parent
    moved = _outside(base) / "blob"
    folder.rename(moved)
    folder.symlink_to(moved, target_is_directory=True)


@pytest.mark.parametrize(
    "damage",
    [missing_manifest_blob, link_naming_an_unknown_digest, link_naming_another_revision,
     manifest_not_matching_its_digest, invalid_repository_name_without_layers,
     symlinked_repository, symlinked_revision_folder, symlinked_blob_folder],
)  # fmt: skip
def test_deliberately_stricter_than_the_registry(
    damage: Damage, tmp_path: Path, registry_flavour: Flavour
) -> None:
    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    damage(base_registry(theirs.root))
    ours = tmp_path / "ours"
    damage(base_registry(ours))
    before = blobs_on_disk(ours)

    gc = registry_gc(theirs)
    if registry_flavour == V3 and damage is invalid_repository_name_without_layers:
        # 3 finds the repository by _manifests and fails on its name, as regcleaner.
        assert gc.returncode != 0, gc.stdout
        assert "failed to parse repo name App" in gc.stderr
        assert blobs_on_disk(theirs.root) == before
    else:
        assert gc.returncode == 0, gc.stderr  # the registry skips silently...
        assert blobs_on_disk(theirs.root) < before  # ...and sweeps

    result = regcleaner_gc_disk(ours, tmp_path / "report.json")  # regcleaner refuses
    assert result.exit_code == 1, result.output
    assert blobs_on_disk(ours) == before
    assert result.report is not None
    assert result.report["summary"]["blobs_swept"] == 0
    assert result.report["problems"]
    assert "refusing to sweep" in result.output


def test_a_repository_without_layers_folder_is_kept_deliberately(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    """2.8.2 enumerates repositories by their ``_layers`` folder (catalog.go,
    handleRepository): it never marks the manifests of a repository without one and
    sweeps their blobs. 3.1.1 finds it by ``_manifests`` and stops (``Path not found
    .../_layers``), sweeping nothing. regcleaner marks them (keeps their blobs), sweeps
    the rest (what 3 would sweep if it went on) and warns."""

    def damage(base: Base) -> Manifest:
        return base.writer.image("nolayers", b'{"config":7}', [b"layer seven"], oci=True,
                                 link_blobs=False)  # fmt: skip

    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    damage(base_registry(theirs.root))
    ours = tmp_path / "ours"
    hidden = damage(base_registry(ours))
    before = blobs_on_disk(ours)
    hidden_blobs = {hidden.digest, *hidden.references}
    garbage = sha256_digest(b"never referenced")

    gc = registry_gc(theirs)
    if registry_flavour == V3:
        assert gc.returncode != 0, gc.stdout
        assert "Path not found" in gc.stderr
        assert "nolayers/_layers" in gc.stderr
        assert blobs_on_disk(theirs.root) == before
    else:
        assert gc.returncode == 0, gc.stderr
        assert before - blobs_on_disk(theirs.root) == hidden_blobs | {garbage}

    result = regcleaner_gc_disk(ours, tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert before - blobs_on_disk(ours) == {garbage}
    assert result.report is not None
    warnings = result.report["warnings"]
    assert len(warnings) == 1
    assert "nolayers" in warnings[0]
    assert "_layers" in warnings[0]
    assert "nolayers" in result.stderr


def test_a_file_starting_with_underscore_hides_repositories_from_the_registry_only(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    """2.8.2's disk walk (WalkFallback) stops listing a folder at a file whose name
    starts with ``_``: every repository sorted after it goes unmarked, its blobs swept.
    regcleaner marks them. 3.1.1 fixed the walk: it sweeps what regcleaner sweeps."""

    def damage(base: Base) -> None:
        base.writer.raw("docker/registry/v2/repositories/_stray", b"x")

    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    damage(base_registry(theirs.root))
    ours = tmp_path / "ours"
    base = base_registry(ours)
    damage(base)
    before = blobs_on_disk(ours)
    garbage = sha256_digest(b"never referenced")

    gc = registry_gc(theirs)
    assert gc.returncode == 0, gc.stderr
    if registry_flavour == V3:
        assert before - blobs_on_disk(theirs.root) == {garbage}
    else:
        assert {base.image.digest, *base.image.references} <= before - blobs_on_disk(theirs.root)

    result = regcleaner_gc_disk(ours, tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert before - blobs_on_disk(ours) == {garbage}


def test_report_names_each_swept_blob_once(tmp_path: Path) -> None:
    """The report file is one JSON document and names each swept blob once."""
    ours = tmp_path / "ours"
    base_registry(ours)
    result = regcleaner_gc_disk(ours, tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["command"] == "gc"
    assert [entry["digest"] for entry in document["swept"]] == [sha256_digest(b"never referenced")]


# -- distribution 3: what its garbage-collect does besides sweeping blobs -----------------
# regcleaner's Collector takes the registry that runs on the storage (``registry_flavour``:
# "2", "3" or None when unknown). It never changes which blobs are swept; on 3 the
# ``_layers`` links of swept blobs go too, as 3's garbage-collect removes them.


def layer_links_on_disk(root: Path) -> set[str]:
    """Every ``_layers/.../link`` below ``repositories/``, as a path from the root."""
    repositories = root / "docker/registry/v2/repositories"
    return {str(path.relative_to(root)) for path in repositories.rglob("link")
            if "/_layers/" in str(path)}  # fmt: skip


def collect(root: Path, registry_flavour: str | None) -> GcReport:
    """regcleaner's Collector over ``root``, told which registry runs on it (the CLI's
    ``--registry-version`` passes it the same way)."""
    settings = GcSettings(registry_url=None, registry_dir=root, registry_stopped=True)
    store = FilesystemStore(root)
    report = GcReport(dry_run=False, storage=store.describe())
    collector = Collector(settings, RegistryView(store), report, gate=None,
                          registry_flavour=registry_flavour)  # fmt: skip

    async def run() -> None:
        try:
            await collector.run()
        finally:
            await store.aclose()

    asyncio.run(run())
    return report


def swept_links_storage(root: Path) -> tuple[RegistryWriter, Manifest, Manifest]:
    """A tagged image; an image whose revision is gone (its blobs linked, now garbage);
    a link to a blob that never existed; a repository with ``_layers`` only, linking a
    garbage blob."""
    writer = RegistryWriter(DiskSink(root))
    kept = writer.image("app", b'{"config":1}', [b"l1", b"l2"], oci=True)
    writer.tag("app", "v1", kept.digest)
    gone = writer.image("app", b'{"config":2}', [b"l3"], oci=True, revision=False)
    writer.link_layer("app", sha256_digest(b"never written"))
    writer.upload("lonely", b"orphan", "application/octet-stream")
    return writer, kept, gone


def test_layer_links_of_swept_blobs_go_as_each_registry_leaves_them(
    tmp_path: Path, registry_flavour: Flavour
) -> None:
    """3.1.1's garbage-collect removes the ``_layers`` links of the blobs it sweeps, in
    the repositories it finds (by ``_manifests``); a link to a blob that never existed
    stays, and so does the link in a repository with ``_layers`` only. 2.8.2 removes no
    link. Told which registry it is, regcleaner leaves the same links as that registry;
    not told, it leaves them all (the side that removes less)."""
    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    swept_links_storage(theirs.root)
    ours, unknown = tmp_path / "ours", tmp_path / "unknown"
    _, kept, gone = swept_links_storage(ours)
    swept_links_storage(unknown)
    links_before = layer_links_on_disk(ours)

    gc = registry_gc(theirs)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    report = collect(ours, registry_flavour)
    unknown_report = collect(unknown, None)

    assert blobs_on_disk(ours) == blobs_on_disk(theirs.root) == blobs_on_disk(unknown)
    assert layer_links_on_disk(ours) == layer_links_on_disk(theirs.root)
    removed = links_before - layer_links_on_disk(ours)
    if registry_flavour == V3:
        assert removed == {f"{repository_key('app', '')}_layers/sha256/{hex_of(d)}/link"
                           for d in gone.references}  # fmt: skip
        assert report.counters.layer_links_removed == len(removed)
    else:
        assert removed == set()
    assert layer_links_on_disk(unknown) == links_before
    assert unknown_report.counters.layer_links_removed == 0
    assert set(kept.references) <= blobs_on_disk(ours)
    report.close()
    unknown_report.close()


def test_schema1_on_3_is_kept_and_named(tmp_path: Path, registry_flavour: Flavour) -> None:
    """A schema1 manifest: 2.8.2 serves it and its garbage-collect marks its layers;
    3.1.1 answers 500 to its GET and its garbage-collect stops on it and sweeps
    nothing. regcleaner marks its layers on both (sweeps only the garbage) and, on 3 or
    when the registry is unknown, names it in a warning."""
    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour)
    ours = tmp_path / "ours"
    for root in (theirs.root, ours):
        writer = RegistryWriter(DiskSink(root))
        image = writer.image("app", b'{"config":1}', [b"l1"], oci=True)
        writer.tag("app", "v1", image.digest)
        old = writer.schema1_image("old", [b"schema1 layer"])
        writer.tag("old", "v1", old.digest)
        writer.blob(b"never referenced")
    before = blobs_on_disk(ours)
    garbage = sha256_digest(b"never referenced")

    with running(theirs):
        served = RegistryAPI(theirs.url).get_manifest("old", old.digest)
    gc = registry_gc(theirs)
    if registry_flavour == V3:
        assert served.status == 500
        assert gc.returncode != 0, gc.stdout
        assert "unrecognized manifest schema version 1" in gc.stderr
        assert blobs_on_disk(theirs.root) == before
    else:
        assert served.status == 200
        assert gc.returncode == 0, gc.stderr
        assert before - blobs_on_disk(theirs.root) == {garbage}

    report = collect(ours, registry_flavour)
    assert before - blobs_on_disk(ours) == {garbage}
    assert report.problem_count == 0
    named = [w for w in report.warnings if old.digest in w]
    assert len(named) == (1 if registry_flavour == V3 else 0)
    assert all("schema1" in w for w in named)
    report.close()

    unknown = tmp_path / "unknown"
    writer = RegistryWriter(DiskSink(unknown))
    writer.schema1_image("old", [b"schema1 layer"])
    unknown_report = collect(unknown, None)
    assert len(unknown_report.warnings) == 1
    assert "distribution 3" in unknown_report.warnings[0]
    unknown_report.close()


def test_pruning_never_empties_the_layers_of_a_repository_with_manifests(
    moto_server: MotoS3, tmp_path: Path, registry_flavour: Flavour
) -> None:
    """On S3 a folder is its keys: removing every ``_layers`` link of a repository
    removes its ``_layers``. 2.8.2's garbage-collect then no longer sees the repository
    and sweeps what its manifests reference; 3.1.1's stops on it. regcleaner keeps one
    (dangling) link, and each registry's own collector still keeps the tagged image."""
    bucket = f"gc-keep-layers-{next(_buckets)}"
    moto_server.create_bucket(bucket)
    client = moto_server.client()
    with S3Sink(client, bucket, S3_ROOT) as sink:
        writer = RegistryWriter(sink)
        # Its blobs are linked into no repository (mounted from one deleted since).
        image = writer.image("app", b'{"config":8}', [b"layer eight"], oci=True,
                             link_blobs=False)  # fmt: skip
        writer.tag("app", "v1", image.digest)
        garbage = writer.upload("app", b"garbage linked into app", "application/octet-stream")
    layers = f"{S3_ROOT.strip('/')}/{repository_key('app', '_layers/')}"

    result = regcleaner_gc_s3(moto_server, bucket, tmp_path / "r.json", "--prune-layer-links")
    assert result.exit_code == 0, result.output
    assert swept_in_report(result.report) == {garbage.digest}
    kept = client.list_objects_v2(Bucket=bucket, Prefix=layers).get("Contents", [])
    assert [item["Key"] for item in kept] == [f"{layers}sha256/{hex_of(garbage.digest)}/link"]

    theirs = RegistryProcess(tmp_path / "registry", flavour=registry_flavour,
                             storage=moto_server.registry_storage(bucket, S3_ROOT))  # fmt: skip
    gc = registry_gc(theirs)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert {image.digest, *image.references} <= blobs_in_bucket(client, bucket, S3_ROOT)
