"""Build and push test images: single-arch, multi-arch indexes, referrers, signatures."""

from __future__ import annotations

import json
from typing import Any

from regcleaner import mediatypes
from testkit.api import Pushed, RegistryAPI, sha256


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def push_image(
    api: RegistryAPI,
    repository: str,
    tag: str | None,
    *,
    seed: str,
    oci: bool = False,
    layers: int = 1,
    subject: Pushed | None = None,
    artifact_type: str | None = None,
    platform: str = "linux/amd64",
) -> Pushed:
    """Push a small image (config + layers) and its manifest; tag it if ``tag``."""
    os_name, arch = platform.split("/")
    config = _json(
        {
            "architecture": arch,
            "os": os_name,
            "seed": seed,
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    )
    config_type = (
        artifact_type or mediatypes.OCI_MANIFEST.replace("manifest.v1+json", "config.v1+json")
        if oci
        else "application/vnd.docker.container.image.v1+json"
    )
    layer_type = (
        "application/vnd.oci.image.layer.v1.tar+gzip"
        if oci
        else "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )
    config_digest = api.push_blob(repository, config)
    layer_descriptors: list[dict[str, Any]] = []
    for index in range(layers):
        data = f"layer {index} of {seed} {platform}".encode() * 8
        layer_descriptors.append(
            {"mediaType": layer_type, "digest": api.push_blob(repository, data), "size": len(data)}
        )
    media_type = mediatypes.OCI_MANIFEST if oci or subject else mediatypes.DOCKER_MANIFEST_V2
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": len(config)},
        "layers": layer_descriptors,
    }
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    if subject is not None:
        document["subject"] = subject.descriptor()
    body = _json(document)
    digest = api.put_manifest(repository, tag or sha256(body), body, media_type)
    blobs = (config_digest, *(str(layer["digest"]) for layer in layer_descriptors))
    return Pushed(repository, digest, media_type, len(body), blobs, (), (tag,) if tag else ())


def push_index(
    api: RegistryAPI,
    repository: str,
    tag: str | None,
    children: list[Pushed],
    *,
    oci: bool = True,
    with_media_type: bool = True,
) -> Pushed:
    """Push an index (OCI) or manifest list (Docker) of ``children``."""
    media_type = mediatypes.OCI_INDEX if oci else mediatypes.DOCKER_MANIFEST_LIST
    platforms = ["amd64", "arm64", "arm", "ppc64le", "s390x", "386"]
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "manifests": [
            child.descriptor(platform={"os": "linux", "architecture": platforms[i % 6]})
            for i, child in enumerate(children)
        ],
    }
    if with_media_type:
        document["mediaType"] = media_type
    body = _json(document)
    digest = api.put_manifest(repository, tag or sha256(body), body, media_type)
    return Pushed(
        repository,
        digest,
        media_type,
        len(body),
        (),
        tuple(c.digest for c in children),
        (tag,) if tag else (),
    )


def push_multiarch(
    api: RegistryAPI,
    repository: str,
    tag: str | None,
    *,
    seed: str,
    oci: bool = True,
    arches: int = 2,
) -> tuple[Pushed, list[Pushed]]:
    """An index with ``arches`` untagged single-platform children."""
    names = ["linux/amd64", "linux/arm64", "linux/arm", "linux/ppc64le"]
    children = [
        push_image(api, repository, None, seed=f"{seed}-{i}", oci=oci, platform=names[i % 4])
        for i in range(arches)
    ]
    return push_index(api, repository, tag, children, oci=oci), children


def push_referrer(
    api: RegistryAPI,
    repository: str,
    subject: Pushed,
    *,
    seed: str,
    artifact_type: str = "application/spdx+json",
) -> Pushed:
    """An OCI 1.1 artifact (e.g. an SBOM) pushed by digest with ``subject``."""
    return push_image(
        api, repository, None, seed=seed, oci=True, subject=subject, artifact_type=artifact_type
    )


def push_cosign_signature(
    api: RegistryAPI, repository: str, signed: Pushed, *, seed: str
) -> Pushed:
    """A cosign-style signature: an image tagged ``sha256-<hex>.sig``."""
    tag = "sha256-" + signed.digest.split(":", 1)[1] + ".sig"
    return push_image(
        api,
        repository,
        tag,
        seed=seed,
        oci=True,
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
    )
