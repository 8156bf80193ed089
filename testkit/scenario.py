"""The standard scenario: every shape of registry content regcleaner must handle.

``build_scenario`` pushes it through the registry API and returns what a correct
cleanup must keep and what it must delete, per repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from testkit import images
from testkit.api import Pushed, RegistryAPI


@dataclass
class Expectation:
    """What a correct cleanup leaves behind."""

    keep: set[tuple[str, str]] = field(default_factory=set)
    delete: set[tuple[str, str]] = field(default_factory=set)
    tags: set[tuple[str, str]] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)

    def kept(self, *items: Pushed) -> None:
        for item in items:
            self.keep.add((item.repository, item.digest))
            self.tags.update((item.repository, tag) for tag in item.tags)

    def deleted(self, *items: Pushed) -> None:
        for item in items:
            self.delete.add((item.repository, item.digest))

    def repositories(self) -> set[str]:
        return {repo for repo, _ in self.keep | self.delete}


def build_scenario(api: RegistryAPI) -> Expectation:
    """Push the scenario; return the expectation."""
    ex = Expectation()

    # Pushed-over tags: each re-push leaves the old manifest untagged.
    old1 = images.push_image(api, "app", "latest", seed="app-1")
    old2 = images.push_image(api, "app", "latest", seed="app-2", layers=2)
    live = images.push_image(api, "app", "latest", seed="app-3")
    stable = images.push_image(api, "app", "stable", seed="app-stable")
    ex.deleted(old1, old2)
    ex.kept(live, stable)
    ex.tags.add(("app", "latest"))

    # Nested names, and a repository that is a prefix of another.
    for repo in ("a", "a/b", "a/b/c"):
        gone = images.push_image(api, repo, "v1", seed=f"{repo}-old")
        kept = images.push_image(api, repo, "v1", seed=f"{repo}-new")
        ex.deleted(gone)
        ex.kept(kept)

    # A live Docker manifest list and a live OCI index, each pushed over once.
    for repo, oci in (("multi/docker", False), ("multi/oci", True)):
        old_index, old_children = images.push_multiarch(
            api, repo, "latest", seed=f"{repo}-o", oci=oci
        )
        new_index, new_children = images.push_multiarch(
            api, repo, "latest", seed=f"{repo}-n", oci=oci, arches=3
        )
        ex.deleted(old_index, *old_children)
        ex.kept(new_index, *new_children)

    # An index of indexes (buildx-style nesting), and its pushed-over predecessor.
    inner_a, kids_a = images.push_multiarch(api, "nested", None, seed="nest-a")
    inner_b, kids_b = images.push_multiarch(api, "nested", None, seed="nest-b", oci=False)
    outer = images.push_index(api, "nested", "latest", [inner_a, inner_b])
    ex.kept(outer, inner_a, inner_b, *kids_a, *kids_b)
    gone_inner, gone_kids = images.push_multiarch(api, "nested", None, seed="nest-old")
    gone_outer = images.push_index(api, "nested", None, [gone_inner])
    ex.deleted(gone_inner, gone_outer, *gone_kids)

    # An index without mediaType (optional in OCI): its children are still in use.
    bare_kids = [images.push_image(api, "bare", None, seed=f"bare-{i}", oci=True) for i in (1, 2)]
    bare = images.push_index(api, "bare", "v2", bare_kids, with_media_type=False)
    ex.kept(bare, *bare_kids)
    bare_old = images.push_image(api, "bare", None, seed="bare-untagged", oci=True)
    ex.deleted(bare_old)

    # Referrers: an SBOM of a live image, a signature of that SBOM, a cosign tag;
    # and an SBOM of an untagged image, which goes with its subject.
    subject = images.push_image(api, "signed", "v1", seed="signed-live", oci=True)
    sbom = images.push_referrer(api, "signed", subject, seed="sbom-live")
    sbom_sig = images.push_referrer(
        api,
        "signed",
        sbom,
        seed="sbom-sig",
        artifact_type="application/vnd.dev.sigstore.bundle+json",
    )
    cosign = images.push_cosign_signature(api, "signed", subject, seed="cosign")
    ex.kept(subject, sbom, sbom_sig, cosign)
    orphan_subject = images.push_image(api, "signed", None, seed="signed-old", oci=True)
    orphan_sbom = images.push_referrer(api, "signed", orphan_subject, seed="sbom-old")
    ex.deleted(orphan_subject, orphan_sbom)

    # A referrer of a child of a live index is in use too.
    multi_live, multi_kids = images.push_multiarch(api, "attest", "v1", seed="attest")
    attestation = images.push_referrer(
        api,
        "attest",
        multi_kids[0],
        seed="attest-prov",
        artifact_type="application/vnd.in-toto+json",
    )
    ex.kept(multi_live, *multi_kids, attestation)
    return ex


def corrupt_blob(storage_root: Path, digest: str, data: bytes = b"{ not json") -> Path:
    """Overwrite a manifest's blob in the registry's disk layout; returns the path."""
    hex_part = digest.split(":", 1)[1]
    path = storage_root / "docker/registry/v2/blobs/sha256" / hex_part[:2] / hex_part / "data"
    path.write_bytes(data)
    return path
