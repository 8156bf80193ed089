"""Real clients push, regcleaner cleans, garbage-collect sweeps, real clients pull back.

Nobody on this team wrote the bytes pushed here: umoci builds the images (OCI, without
``mediaType`` in its manifests), skopeo pushes them as single images, OCI indexes and Docker
manifest lists (converting with ``--format v2s2``), buildah pushes a manifest list it built
``FROM scratch``, and the ORAS SDK (the ``oras`` Python package) attaches referrers with a
``subject`` (SBOMs, and Notation-style signatures of SBOMs: referrer chains) and pushes a
cosign-style ``sha256-<hex>.sig`` tag. The first multi-arch index also stays tagged in
another repository (``mirror/app``). Every tag is re-pushed with
new content, so the registry holds real untagged history next to what is in use.

Then ``regcleaner clean --min-age 0``, ``docker-registry garbage-collect`` with the registry
stopped, a restart, and the proof: every tag pulls completely with ``skopeo copy --all``
(every blob verified), every child of a live index and every referrer of a live manifest
is served, the signature tag pulls with oras, and the history answers 404 by digest.

What runs here (Debian bookworm, as root, no daemon): skopeo 1.9.3, umoci 0.4.7, buildah
1.28.2 (``--storage-driver vfs`` with a private root; ``from scratch``/``copy``/``commit``
and ``manifest push --all`` work, nothing is ever run in a container), oras 0.2.43 over
plain http. Not used: skopeo's sigstore signing (Debian builds it disabled, so the
signature tag comes from oras); podman 4.3.1 builds, pushes and pulls here but cannot run
a container (crun: setrlimit RLIMIT_NOFILE: Operation not permitted) and would add nothing
skopeo does not already do; nested indexes (skopeo 1.9 refuses to copy an index of
indexes, and the ORAS SDK uploads image manifests only). The skopeo, umoci and oras parts
must run; only the buildah part is skipped, naming buildah, where it is not installed.

The registry and the whole scenario are module-scoped (one registry, one clean, one
garbage-collect), built the way ``tests/conftest.py``'s ``registry`` fixture builds its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testkit.api import RegistryAPI
from testkit.clients import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Buildah,
    Manifest,
    OrasClient,
    Skopeo,
    UmociLayout,
    missing_reason,
)
from testkit.registry import Flavour, RegistryProcess, running
from tests.conftest import CliResult, clean_args, run_cli

pytestmark = pytest.mark.integration

Pair = tuple[str, str]  # (repository, digest)

SBOM_TYPE = "application/spdx+json"
SIGNATURE_TYPE = "application/vnd.cncf.notary.signature"  # as Notation signs an SBOM

REPOSITORIES = (
    "single/docker",  # umoci image, pushed by skopeo --format v2s2
    "single/oci",  # umoci image, pushed by skopeo as OCI
    "multi/oci",  # OCI index of two umoci images, skopeo copy --all
    "multi/docker",  # the same converted to a Docker manifest list (v2s2)
    "multi/buildah",  # buildah FROM scratch, manifest push --all --format v2s2
    "mirror/app",  # the first multi/oci index, still tagged in another repository
)

HISTORY_KINDS = (
    "old Docker image",
    "old OCI image",
    "referrers of the old OCI image (an SBOM and its signature)",
    "old OCI index",
    "children of the old OCI index",
    "old Docker manifest list",
    "replaced child of the old Docker manifest list",
    "old buildah manifest list and its children",
)

ENV_NAMES = (
    "REGISTRY_URL", "REGISTRY_DIR", "REGISTRY_STORAGE", "REGISTRY_AUTH", "SELF_SIGNED_CERT",
    "DRY_RUN", "ACCESS_KEY", "SECRET_KEY", "BUCKET", "REGION",
)  # fmt: skip


@dataclass(frozen=True)
class Referrer:
    """An artifact oras attached to a manifest."""

    repository: str
    manifest: Manifest
    subject: str
    filename: str
    content: bytes


@dataclass
class World:
    """The registry after the pushes, the clean and garbage-collect, and what was seen."""

    registry: RegistryProcess
    api: RegistryAPI
    skopeo: Skopeo
    oras: OrasClient
    buildah_skip: str | None = None
    tags: dict[str, dict[str, Manifest]] = field(default_factory=dict)
    live: set[Pair] = field(default_factory=set)
    history_by_kind: dict[str, set[Pair]] = field(default_factory=dict)
    live_children: dict[Pair, str] = field(default_factory=dict)  # child -> its index
    live_referrers: list[Referrer] = field(default_factory=list)
    dead_referrer: Referrer | None = None
    cosign: tuple[str, str, str, Manifest] | None = None  # repo, tag, digest, signed
    shared_docker_children: set[str] = field(default_factory=set)
    umoci_children_without_media_type: int = 0
    revisions_before: set[Pair] = field(default_factory=set)
    not_served_before: set[Pair] = field(default_factory=set)
    dry: CliResult | None = None
    real: CliResult | None = None
    again: CliResult | None = None

    @property
    def history(self) -> set[Pair]:
        return set().union(*self.history_by_kind.values())

    def tag(self, repository: str, tag: str, manifest: Manifest) -> None:
        self.tags.setdefault(repository, {})[tag] = manifest
        self.live.add((repository, manifest.digest))

    def skip_if_unbuilt(self, repository_or_kind: str) -> None:
        if "buildah" in repository_or_kind and self.buildah_skip:
            pytest.skip(self.buildah_skip)


def revisions_on_disk(root: Path) -> set[Pair]:
    """Every (repository, digest) with a revision link, read straight from storage."""
    base = root / "docker/registry/v2/repositories"
    found: set[Pair] = set()
    for link in base.glob("**/_manifests/revisions/sha256/*/link"):
        repo = str(link.relative_to(base)).split("/_manifests/")[0]
        found.add((repo, "sha256:" + link.parent.name))
    return found


def report_pairs(report: dict[str, object] | None, section: str) -> set[Pair]:
    assert report is not None, "no JSON report was written"
    repositories = report["repositories"]
    assert isinstance(repositories, list)
    return {(r["name"], item["digest"]) for r in repositories for item in r[section]}


def kept_reasons(report: dict[str, object] | None) -> dict[Pair, str]:
    assert report is not None
    repositories = report["repositories"]
    assert isinstance(repositories, list)
    return {(r["name"], k["digest"]): k["reason"] for r in repositories for k in r["kept"]}


def files(repository: str, label: str, arch: str) -> dict[str, bytes]:
    """Content unique to (repository, label, arch): no repository shares a blob by chance."""
    return {
        "hello.txt": f"{repository} {label} {arch}\n".encode(),
        "etc/build-info": f"label={label}\narch={arch}\n".encode() * 20,
    }


def push_multiarch(
    world: World,
    layout: UmociLayout,
    repository: str,
    label: str,
    builds: dict[str, str],
    *,
    docker_format: bool,
) -> Manifest:
    """An index of umoci images (arch -> build label, reusing a build keeps its digest)."""
    images = []
    for arch, build in builds.items():
        tag = f"{repository}-{build}-{arch}".replace("/", "-")
        try:
            images.append(layout.manifest(tag))
        except KeyError:
            images.append(layout.build(tag, files(repository, build, arch), arch=arch))
    index_tag = f"{repository}-{label}".replace("/", "-")
    layout.write_index(index_tag, images)
    return world.skopeo.push_layout(
        layout, index_tag, repository, "app", docker_format=docker_format
    )


def push_with_buildah(world: World, buildah: Buildah, label: str) -> Manifest:
    """Two architectures built FROM scratch, pushed as a Docker manifest list."""
    ids = [
        buildah.build(
            f"localhost/buildah-{label}:{arch}",
            files("multi/buildah", label, arch),
            arch=arch,
            docker_format=True,
        )
        for arch in ("amd64", "arm64")
    ]
    buildah.push_list(
        f"localhost/buildah-list-{label}",
        ids,
        f"{world.skopeo.host}/multi/buildah:app",
        docker_format=True,
    )
    return world.skopeo.inspect_raw("multi/buildah", "app")


def attach_sbom(world: World, repository: str, subject: Manifest, label: str) -> Referrer:
    """oras attaches an SPDX SBOM to ``subject``, by digest, untagged."""
    content = json.dumps({"spdxVersion": "SPDX-2.3", "name": label}).encode()
    manifest = world.oras.attach(
        repository, subject, artifact_type=SBOM_TYPE, filename="sbom.spdx.json", content=content
    )
    return Referrer(repository, manifest, subject.digest, "sbom.spdx.json", content)


def attach(world: World, subject: Referrer, artifact_type: str, label: str) -> Referrer:
    """oras attaches an artifact to a referrer: a chain subject <- SBOM <- signature."""
    content = json.dumps({"signature": label}).encode()
    manifest = world.oras.attach(
        subject.repository,
        subject.manifest,
        artifact_type=artifact_type,
        filename="signature.jws",
        content=content,
    )
    return Referrer(subject.repository, manifest, subject.manifest.digest, "signature.jws", content)


def build_world(world: World, workdir: Path) -> None:
    """Every push, first generation then second; records what must live and what not."""
    layout = UmociLayout(workdir / "layout")
    skopeo = world.skopeo
    history = world.history_by_kind = {kind: set() for kind in HISTORY_KINDS}

    # 1. single-arch images, Docker (v2s2) and OCI, each re-pushed with new content.
    singles: dict[str, list[Manifest]] = {}
    for repository, docker_format in (("single/docker", True), ("single/oci", False)):
        for label in ("v1", "v2"):
            tag = f"{repository}-{label}".replace("/", "-")
            layout.build(tag, files(repository, label, "amd64"), arch="amd64")
            pushed = skopeo.push_layout(layout, tag, repository, "app", docker_format=docker_format)
            singles.setdefault(repository, []).append(pushed)
            if (repository, label) == ("single/oci", "v1"):  # its SBOM becomes history too
                world.dead_referrer = attach_sbom(world, repository, pushed, "old")
        world.tag(repository, "app", singles[repository][1])
    history["old Docker image"].add(("single/docker", singles["single/docker"][0].digest))
    history["old OCI image"].add(("single/oci", singles["single/oci"][0].digest))
    assert world.dead_referrer is not None
    dead_signature = attach(world, world.dead_referrer, SIGNATURE_TYPE, "old signature")
    history["referrers of the old OCI image (an SBOM and its signature)"] |= {
        ("single/oci", world.dead_referrer.manifest.digest),
        ("single/oci", dead_signature.manifest.digest),
    }
    # SBOMs on live images, one of them a Docker manifest.
    for repository in ("single/docker", "single/oci"):
        world.live_referrers.append(
            attach_sbom(world, repository, singles[repository][1], f"{repository} v2")
        )

    # 2. multi-arch: an OCI index and a Docker manifest list, each re-pushed.
    oci_old = push_multiarch(
        world, layout, "multi/oci", "v1", {"amd64": "v1", "arm64": "v1"}, docker_format=False
    )
    oci_new = push_multiarch(
        world, layout, "multi/oci", "v2", {"amd64": "v2", "arm64": "v2"}, docker_format=False
    )
    world.tag("multi/oci", "app", oci_new)
    history["old OCI index"].add(("multi/oci", oci_old.digest))
    history["children of the old OCI index"] |= {("multi/oci", c) for c in oci_old.children}
    for child in oci_new.children:
        world.live_children[("multi/oci", child)] = oci_new.digest
    world.umoci_children_without_media_type = sum(
        "mediaType" not in skopeo.inspect_raw("multi/oci", c).document for c in oci_new.children
    )
    # The same first index stays tagged in another repository: reachability is per
    # repository, and garbage-collect must keep blobs that repository still uses.
    mirror = skopeo.push_layout(layout, "multi-oci-v1", "mirror/app", "v1")
    assert mirror.digest == oci_old.digest
    world.tag("mirror/app", "v1", mirror)
    for child in mirror.children:
        world.live_children[("mirror/app", child)] = mirror.digest

    # The Docker list: only amd64 is rebuilt, arm64 is the same image in both lists.
    docker_old = push_multiarch(
        world, layout, "multi/docker", "v1", {"amd64": "v1", "arm64": "v1"}, docker_format=True
    )
    docker_new = push_multiarch(
        world, layout, "multi/docker", "v2", {"amd64": "v2", "arm64": "v1"}, docker_format=True
    )
    world.tag("multi/docker", "app", docker_new)
    world.shared_docker_children = set(docker_old.children) & set(docker_new.children)
    history["old Docker manifest list"].add(("multi/docker", docker_old.digest))
    history["replaced child of the old Docker manifest list"] |= {
        ("multi/docker", c) for c in docker_old.children if c not in docker_new.children
    }
    for child in docker_new.children:
        world.live_children[("multi/docker", child)] = docker_new.digest

    # buildah's manifest list, re-pushed with new content, if buildah is here.
    world.buildah_skip = missing_reason("buildah")
    if world.buildah_skip is None:
        buildah = Buildah(workdir / "buildah")
        buildah_old = push_with_buildah(world, buildah, "v1")
        buildah_new = push_with_buildah(world, buildah, "v2")
        world.tag("multi/buildah", "app", buildah_new)
        history["old buildah manifest list and its children"] |= {
            ("multi/buildah", d) for d in (buildah_old.digest, *buildah_old.children)
        }
        for child in buildah_new.children:
            world.live_children[("multi/buildah", child)] = buildah_new.digest

    # 3. referrers of a live index and of one of its children; a cosign signature tag.
    index_sbom = attach_sbom(world, "multi/oci", oci_new, "index v2")
    world.live_referrers.append(index_sbom)
    world.live_referrers.append(attach(world, index_sbom, SIGNATURE_TYPE, "index sbom signature"))
    amd64_child = skopeo.inspect_raw("multi/oci", oci_new.children[0])
    world.live_referrers.append(attach_sbom(world, "multi/oci", amd64_child, "amd64 v2"))
    tag, digest = world.oras.push_cosign_signature("multi/oci", oci_new)
    world.cosign = ("multi/oci", tag, digest, oci_new)
    world.tag("multi/oci", tag, skopeo.inspect_raw("multi/oci", tag))

    world.live |= set(world.live_children)
    world.live |= {(r.repository, r.manifest.digest) for r in world.live_referrers}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, registry_flavour: Flavour) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("real-clients")
    with pytest.MonkeyPatch.context() as env:
        for name in ENV_NAMES:  # as conftest's _clean_env, for this module-scoped run
            env.delenv(name, raising=False)
        with running(RegistryProcess(workdir / "registry", flavour=registry_flavour)) as registry:
            host = f"127.0.0.1:{registry.port}"
            with OrasClient(host, workdir / "oras") as oras:
                world = World(
                    registry, RegistryAPI(registry.url), Skopeo(host, workdir / "skopeo"), oras
                )
                build_world(world, workdir)
                world.revisions_before = revisions_on_disk(registry.root)
                world.not_served_before = {
                    (repo, digest)
                    for repo, digest in world.live | world.history
                    if not world.api.manifest_exists(repo, digest)
                }

                world.dry = run_cli(
                    clean_args(registry, "--min-age", "0", "--dry-run"),
                    report_path=workdir / "dry.json",
                )
                world.real = run_cli(
                    clean_args(registry, "--min-age", "0"), report_path=workdir / "real.json"
                )
                registry.stop()
                registry.garbage_collect()
                registry.start()
                world.again = run_cli(
                    clean_args(registry, "--min-age", "0", "--dry-run"),
                    report_path=workdir / "again.json",
                )
                yield world


# --- the scenario is what it claims to be ---------------------------------------------


def test_every_manifest_in_the_registry_is_accounted_for(world: World) -> None:
    assert world.live.isdisjoint(world.history)
    assert world.revisions_before == world.live | world.history, (
        "manifests the scenario does not know about, or expected ones never pushed"
    )
    assert not world.not_served_before, "these were never served, so a later 404 proves nothing"


def test_the_clients_pushed_the_formats_the_scenario_needs(world: World) -> None:
    assert world.tags["single/docker"]["app"].media_type == DOCKER_MANIFEST
    assert world.tags["single/oci"]["app"].media_type == OCI_MANIFEST
    assert world.tags["multi/oci"]["app"].media_type == OCI_INDEX
    assert world.tags["multi/docker"]["app"].media_type == DOCKER_LIST
    for repository in ("multi/oci", "multi/docker", "mirror/app"):
        tags = world.tags[repository]
        index = tags["app"] if "app" in tags else tags["v1"]
        assert len(index.children) >= 2, f"{repository} is not multi-arch"
    # umoci writes OCI manifests without mediaType: regcleaner must tell them by shape.
    assert world.umoci_children_without_media_type == 2
    # Re-pushing the list with only amd64 rebuilt kept arm64's manifest: one shared child.
    assert len(world.shared_docker_children) == 1
    assert world.dead_referrer is not None
    assert all(r.manifest.subject == r.subject for r in world.live_referrers)
    assert world.dead_referrer.manifest.subject == world.dead_referrer.subject
    assert world.cosign is not None


def test_buildah_pushed_a_docker_manifest_list(world: World) -> None:
    world.skip_if_unbuilt("multi/buildah")
    listed = world.tags["multi/buildah"]["app"]
    assert listed.media_type == DOCKER_LIST
    assert len(listed.children) == 2
    for child in listed.children:
        assert world.api.manifest_exists("multi/buildah", child)


# --- what regcleaner did ----------------------------------------------------------------


def test_dry_run_plans_exactly_the_history(world: World) -> None:
    assert world.dry is not None
    assert world.dry.exit_code == 0, world.dry.output
    assert report_pairs(world.dry.report, "would_delete") == world.history
    assert report_pairs(world.dry.report, "deleted") == set()


def test_clean_deletes_exactly_the_history(world: World) -> None:
    assert world.real is not None
    assert world.real.exit_code == 0, world.real.output
    report = world.real.report
    deleted = report_pairs(report, "deleted")
    assert deleted - world.history == set(), "deleted something in use"
    assert world.history - deleted == set(), "left history behind"
    assert report is not None
    summary = report["summary"]
    assert isinstance(summary, dict)
    assert summary["deleted"] == len(world.history)
    assert summary["failed"] == 0


def test_kept_manifests_say_why_they_are_in_use(world: World) -> None:
    assert world.real is not None
    reasons = kept_reasons(world.real.report)
    assert set(reasons) == world.live
    for repository, tags in world.tags.items():
        for tag, manifest in tags.items():
            assert reasons[(repository, manifest.digest)] == f"tagged:{tag}"
    for pair, index in world.live_children.items():
        assert reasons[pair] == f"child-of:{index}", pair
    for referrer in world.live_referrers:
        pair = (referrer.repository, referrer.manifest.digest)
        assert reasons[pair] == f"referrer-of:{referrer.subject}", pair


def test_a_second_run_finds_nothing_more_to_delete(world: World) -> None:
    assert world.again is not None
    assert world.again.exit_code == 0, world.again.output
    assert report_pairs(world.again.report, "would_delete") == set()


# --- after garbage-collect: everything in use pulls with the real clients -------------


@pytest.mark.parametrize("repository", REPOSITORIES)
def test_every_tag_pulls_completely_with_skopeo(world: World, repository: str) -> None:
    world.skip_if_unbuilt(repository)
    expected = world.tags[repository]
    assert sorted(world.api.tags(repository)) == sorted(expected)
    for tag, manifest in expected.items():
        pulled = world.skopeo.pull(repository, tag)  # verifies every manifest and blob
        assert len(pulled.manifests) == 1 + len(manifest.children)
        if manifest.media_type in (OCI_MANIFEST, OCI_INDEX):
            assert pulled.manifests == {manifest.digest, *manifest.children}
        # And the in-house client, which checks every digest as the registry serves it.
        served = world.api.pull(repository, tag)
        assert {manifest.digest, *manifest.children} <= served


def test_every_child_of_a_live_index_is_served(world: World) -> None:
    for (repository, child), index in sorted(world.live_children.items()):
        got = world.skopeo.inspect_raw(repository, child)  # checks the digest
        assert got.digest == child, (repository, index)
        world.api.pull(repository, child)


def test_every_referrer_of_a_live_manifest_is_served(world: World) -> None:
    assert len(world.live_referrers) == 5
    for referrer in world.live_referrers:
        digest = referrer.manifest.digest
        assert world.skopeo.inspect_raw(referrer.repository, digest).subject == referrer.subject
        pulled = world.oras.pull(referrer.repository, digest)
        assert pulled == {referrer.filename: referrer.content}
        # ...and its subject is still there to be described.
        assert world.api.manifest_exists(referrer.repository, referrer.subject)


def test_the_cosign_signature_tag_still_pulls(world: World) -> None:
    assert world.cosign is not None
    repository, tag, digest, signed = world.cosign
    assert tag == "sha256-" + signed.digest.split(":")[1] + ".sig"
    pulled = world.oras.pull(repository, tag)
    payload = json.loads(pulled["payload.json"])
    assert payload["critical"]["image"]["docker-manifest-digest"] == signed.digest
    assert world.skopeo.pull(repository, tag).top.digest == digest
    assert world.skopeo.inspect_raw(repository, signed.digest).digest == signed.digest


# --- after garbage-collect: the history is gone ----------------------------------------


@pytest.mark.parametrize("kind", HISTORY_KINDS)
def test_history_answers_404_by_digest(world: World, kind: str) -> None:
    world.skip_if_unbuilt(kind)
    pairs = world.history_by_kind[kind]
    assert pairs, f"the scenario made no {kind}"
    for repository, digest in sorted(pairs):
        response = world.api.get_manifest(repository, digest)
        assert response.status == 404, f"{repository}@{digest} ({kind}) answered {response.status}"
        assert world.skopeo.manifest_unknown(repository, digest)


def test_garbage_collect_freed_the_history_manifests(world: World) -> None:
    live_digests = {digest for _, digest in world.live}
    blobs = world.registry.root / "docker/registry/v2/blobs/sha256"
    freed = {digest for _, digest in world.history} - live_digests
    # The first OCI index is history in multi/oci but still tagged in mirror/app.
    assert {digest for _, digest in world.history} & live_digests
    for digest in sorted(freed):
        hex_part = digest.split(":")[1]
        assert not (blobs / hex_part[:2] / hex_part).exists(), f"{digest} was not swept"
    for digest in sorted(live_digests):
        hex_part = digest.split(":")[1]
        assert (blobs / hex_part[:2] / hex_part / "data").is_file(), f"{digest} was swept"
