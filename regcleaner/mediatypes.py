"""Manifest media types and the Accept header that makes a registry answer with any of them."""

from __future__ import annotations

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# Briefly part of OCI 1.1 release candidates; some registries and tools still hold them.
OCI_ARTIFACT_MANIFEST = "application/vnd.oci.artifact.manifest.v1+json"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST_V2, OCI_MANIFEST, OCI_ARTIFACT_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_MANIFEST_V1_SIGNED, DOCKER_MANIFEST_V1})

ALL_MANIFEST_TYPES = (
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST_V2,
    OCI_ARTIFACT_MANIFEST,
    DOCKER_MANIFEST_V1_SIGNED,
    DOCKER_MANIFEST_V1,
)

# Without every type here a registry answers a tag HEAD/GET with a converted or
# different manifest (a Docker list resolves to its amd64 child) or 404 (OCI).
ACCEPT_ALL_MANIFESTS = ", ".join(ALL_MANIFEST_TYPES)
