"""Write a registry straight into distribution's storage layout (test code only).

The registry's API refuses much of what a long-lived registry's storage holds: blobs
nobody references, manifests whose revision link was deleted, blobs referenced from
another repository only, broken links. This writer puts those files where
distribution 2.8.2 looks for them, on disk or in an S3 bucket, through one small sink
protocol (``put(key, bytes)`` with keys relative to the registry's root directory).

Layout (registry/storage/paths.go):

- ``docker/registry/v2/blobs/sha256/<hh>/<hex>/data``: every blob, manifests included;
- ``.../repositories/<name>/_layers/sha256/<hex>/link``: each blob uploaded to or
  mounted into the repository. The registry's repository enumeration (catalog.go,
  ``handleRepository``) finds a repository by its ``_layers`` folder, so its
  garbage-collect only marks repositories that have one;
- ``.../_manifests/revisions/sha256/<hex>/link``: each manifest pushed to it;
- ``.../_manifests/tags/<tag>/current/link`` and ``.../index/sha256/<hex>/link``.

Manifests are real JSON in the forms 2.8.2 reads, each with its ``mediaType``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

V2 = "docker/registry/v2"
BLOBS = f"{V2}/blobs"
REPOSITORIES = f"{V2}/repositories"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

_PLATFORMS = ("amd64", "arm64", "arm", "ppc64le", "s390x", "386")


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of the bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of ``sha256:<hex>``."""
    algorithm, _, hex_part = digest.partition(":")
    if algorithm != "sha256" or not hex_part:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hex_part


def blob_data_key(digest: str) -> str:
    """``docker/registry/v2/blobs/sha256/<hh>/<hex>/data``."""
    hex_part = hex_of(digest)
    return f"{BLOBS}/sha256/{hex_part[:2]}/{hex_part}/data"


def repository_key(repository: str, rest: str) -> str:
    """A key below ``repositories/<repository>/``."""
    return f"{REPOSITORIES}/{repository}/{rest}"


def layer_link_key(repository: str, digest: str) -> str:
    return repository_key(repository, f"_layers/sha256/{hex_of(digest)}/link")


def revision_link_key(repository: str, digest: str) -> str:
    return repository_key(repository, f"_manifests/revisions/sha256/{hex_of(digest)}/link")


def tag_current_key(repository: str, tag: str) -> str:
    return repository_key(repository, f"_manifests/tags/{tag}/current/link")


def tag_index_key(repository: str, tag: str, digest: str) -> str:
    return repository_key(repository, f"_manifests/tags/{tag}/index/sha256/{hex_of(digest)}/link")


def canonical_json(document: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the same document always has the same digest."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


# -- sinks -------------------------------------------------------------------------------


class Sink(Protocol):
    """Where the files go: keys relative to the registry's root directory."""

    def put(self, key: str, data: bytes) -> None: ...


class DiskSink:
    """Files below a filesystem driver's ``rootdirectory``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class S3Sink:
    """Objects in a bucket below the s3 driver's ``rootdirectory`` (leading ``/``
    dropped, as the driver does). Puts run on a thread pool; ``flush`` (or leaving the
    with-block) waits for them and raises the first error."""

    def __init__(self, client: Any, bucket: str, rootdirectory: str = "", *, workers: int = 16):
        self.client = client
        self.bucket = bucket
        root = rootdirectory.strip("/")
        self.prefix = f"{root}/" if root else ""
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3sink")
        self._pending: list[Future[Any]] = []

    def put(self, key: str, data: bytes) -> None:
        put = self.client.put_object
        self._pending.append(
            self._pool.submit(put, Bucket=self.bucket, Key=self.prefix + key, Body=data)
        )

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> S3Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class MemorySink:
    """Keys and bytes in a dict (to write the same registry several times)."""

    files: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, data: bytes) -> None:
        self.files[key] = data

    def replay(self, *sinks: Sink) -> None:
        """Put every file into each sink, in the order written."""
        for sink in sinks:
            for key, data in self.files.items():
                sink.put(key, data)


# -- descriptors and manifests ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI descriptor: media type, digest, size."""

    media_type: str
    digest: str
    size: int

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    @classmethod
    def of(cls, data: bytes, media_type: str) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data))


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest's bytes, descriptor and what distribution 2.8.2's ``References()``
    returns for it (config then layers, or the index entries)."""

    data: bytes
    descriptor: Descriptor
    references: tuple[str, ...]

    @property
    def digest(self) -> str:
        return self.descriptor.digest


def image_manifest(
    config: Descriptor,
    layers: Sequence[Descriptor],
    *,
    oci: bool,
    subject: Descriptor | None = None,
    artifact_type: str | None = None,
) -> Manifest:
    """A Docker v2 image manifest, or an OCI image manifest (optionally a referrer:
    with ``subject``, which 2.8.2 does not count among the references)."""
    if subject is not None and not oci:
        raise ValueError("only OCI manifests carry a subject")
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    if subject is not None:
        document["subject"] = subject.to_json()
    data = canonical_json(document)
    references = (config.digest, *(layer.digest for layer in layers))
    return Manifest(data, Descriptor.of(data, media_type), references)


def index_manifest(
    children: Sequence[Descriptor], *, oci: bool, subject: Descriptor | None = None
) -> Manifest:
    """An OCI image index or a Docker manifest list of ``children``."""
    if subject is not None and not oci:
        raise ValueError("only OCI indexes carry a subject")
    media_type = OCI_INDEX if oci else DOCKER_LIST
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            child.to_json(platform={"os": "linux", "architecture": _PLATFORMS[i % 6]})
            for i, child in enumerate(children)
        ],
    }
    if subject is not None:
        document["subject"] = subject.to_json()
    data = canonical_json(document)
    return Manifest(data, Descriptor.of(data, media_type), tuple(c.digest for c in children))


def image_config(seed: str, *, oci: bool) -> tuple[bytes, Descriptor]:
    """A small image configuration blob."""
    data = canonical_json(
        {"architecture": "amd64", "os": "linux", "seed": seed,
         "rootfs": {"type": "layers", "diff_ids": []}}
    )  # fmt: skip
    return data, Descriptor.of(data, OCI_CONFIG if oci else DOCKER_CONFIG)


def layer_blob(seed: str, *, oci: bool) -> tuple[bytes, Descriptor]:
    """A small (fake) layer blob."""
    data = f"layer {seed}\n".encode() * 4
    return data, Descriptor.of(data, OCI_LAYER if oci else DOCKER_LAYER)


# -- the writer --------------------------------------------------------------------------


class RegistryWriter:
    """Writes blobs, links and manifests through a sink, and remembers what it wrote."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.blobs: set[str] = set()

    def raw(self, key: str, data: bytes) -> None:
        """Any file, for storage the registry would never write itself."""
        self.sink.put(key, data)

    def blob(self, data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
        """The blob's ``data`` file (no link anywhere: uploaded nowhere, referenced by
        nothing until something links it)."""
        descriptor = Descriptor.of(data, media_type)
        self.sink.put(blob_data_key(descriptor.digest), data)
        self.blobs.add(descriptor.digest)
        return descriptor

    def link_layer(self, repository: str, digest: str) -> None:
        """``_layers/sha256/<hex>/link``: the blob is linked into the repository."""
        self.sink.put(layer_link_key(repository, digest), digest.encode())

    def upload(self, repository: str, data: bytes, media_type: str) -> Descriptor:
        """A finished blob upload: the blob and its ``_layers`` link."""
        descriptor = self.blob(data, media_type)
        self.link_layer(repository, descriptor.digest)
        return descriptor

    def revision(self, repository: str, digest: str) -> None:
        """``_manifests/revisions/sha256/<hex>/link``."""
        self.sink.put(revision_link_key(repository, digest), digest.encode())

    def manifest(self, repository: str, manifest: Manifest, *, revision: bool = True) -> Manifest:
        """The manifest blob and, unless ``revision`` is False (its revision link was
        deleted since), its revision link in ``repository``."""
        self.sink.put(blob_data_key(manifest.digest), manifest.data)
        self.blobs.add(manifest.digest)
        if revision:
            self.revision(repository, manifest.digest)
        return manifest

    def tag(self, repository: str, tag: str, digest: str, *, history: Iterable[str] = ()) -> None:
        """A tag's ``current/link`` and its ``index/`` entries (``digest`` included)."""
        self.sink.put(tag_current_key(repository, tag), digest.encode())
        for past in dict.fromkeys((*history, digest)):
            self.sink.put(tag_index_key(repository, tag, past), past.encode())

    def image(
        self,
        repository: str,
        config: bytes,
        layers: Sequence[bytes],
        *,
        oci: bool,
        subject: Descriptor | None = None,
        artifact_type: str | None = None,
        revision: bool = True,
        link_blobs: bool = True,
    ) -> Manifest:
        """An image as a push leaves it: config and layer blobs (linked into the
        repository unless ``link_blobs`` is False), the manifest blob and its revision."""
        config_descriptor = self.blob(config, OCI_CONFIG if oci else DOCKER_CONFIG)
        layer_descriptors = [self.blob(data, OCI_LAYER if oci else DOCKER_LAYER)
                             for data in layers]  # fmt: skip
        if link_blobs:
            for descriptor in (config_descriptor, *layer_descriptors):
                self.link_layer(repository, descriptor.digest)
        manifest = image_manifest(config_descriptor, layer_descriptors, oci=oci, subject=subject,
                                  artifact_type=artifact_type)  # fmt: skip
        return self.manifest(repository, manifest, revision=revision)

    def schema1_image(self, repository: str, layers: Sequence[bytes]) -> Manifest:
        """A Docker schema1 image (unsigned, as the oldest clients pushed it): layer blobs
        linked into the repository and the manifest with its revision. distribution 2.8
        reads it; 3.x cannot serve it and its garbage-collect fails on it when tagged."""
        sums = [self.upload(repository, data, DOCKER_LAYER).digest for data in layers]
        document = {
            "schemaVersion": 1,
            "name": repository,
            "tag": "old",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": digest} for digest in sums],
            "history": [{"v1Compatibility": "{}"} for _ in sums],
        }
        data = canonical_json(document)
        descriptor = Descriptor.of(data, SCHEMA1_MANIFEST)
        return self.manifest(repository, Manifest(data, descriptor, tuple(sums)))

    def index(
        self,
        repository: str,
        children: Sequence[Descriptor],
        *,
        oci: bool,
        subject: Descriptor | None = None,
        revision: bool = True,
    ) -> Manifest:
        """An index (OCI) or manifest list (Docker) of ``children``."""
        return self.manifest(repository, index_manifest(children, oci=oci, subject=subject),
                             revision=revision)  # fmt: skip

    def unfinished_upload(
        self, repository: str, upload_id: str, started: datetime, data: bytes = b""
    ) -> None:
        """``_uploads/<id>/startedat`` (RFC 3339, as the registry writes it) and
        ``_uploads/<id>/data``."""
        stamp = started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.sink.put(repository_key(repository, f"_uploads/{upload_id}/startedat"),
                      stamp.encode())  # fmt: skip
        self.sink.put(repository_key(repository, f"_uploads/{upload_id}/data"), data)


def blobs_on_disk(root: Path) -> set[str]:
    """Digests of every ``blobs/sha256/<hh>/<hex>/data`` below a disk root."""
    base = root / BLOBS / "sha256"
    if not base.is_dir():
        return set()
    return {"sha256:" + path.parent.name for path in base.glob("*/*/data")}


def blobs_in_bucket(client: Any, bucket: str, rootdirectory: str = "") -> set[str]:
    """Digests of every ``blobs/sha256/<hh>/<hex>/data`` object below a bucket root."""
    root = rootdirectory.strip("/")
    prefix = f"{root}/{BLOBS}/sha256/" if root else f"{BLOBS}/sha256/"
    found: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            parts = str(item["Key"])[len(prefix) :].split("/")
            if len(parts) == 3 and parts[2] == "data":
                found.add("sha256:" + parts[1])
    return found
