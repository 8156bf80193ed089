"""Write a synthetic registry straight into distribution's disk layout.

Deterministic and fast (no registry API involved), and exactly the layout the real
registry then serves. Each repository of ``per_repo`` manifests holds: a live OCI index
with two untagged children, an SBOM referrer of that index, a cosign signature tag,
four tagged images whose tags were pushed over (their ``index/`` history lists old
digests), an old index with two children, and untagged history images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
FIXED_IN_USE = 9  # index + 2 children + referrer + signature + 4 tagged images


@dataclass
class SyntheticRegistry:
    """What was generated, and what a correct cleanup must keep and delete."""

    root: Path
    repositories: list[str] = field(default_factory=list)
    in_use: list[tuple[str, str]] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    tags: int = 0

    @property
    def manifests(self) -> int:
        return len(self.in_use) + len(self.history)


def repository_names(count: int) -> list[str]:
    """Nested names, some of them prefixes of others (``team3`` beside ``team3/app53``)."""
    names: list[str] = []
    for i in range(count):
        if i % 10 == 9:
            names.append(f"org{i % 5}/team{i % 7}/svc{i}")
        elif i % 25 == 0 and i < 50:
            names.append(f"team{i % 50}")
        else:
            names.append(f"team{i % 50}/app{i}")
    assert len(set(names)) == len(names)
    return names


class _Writer:
    def __init__(self, root: Path, sink: Callable[[str, bytes], None] | None = None) -> None:
        self.v2 = os.path.join(root, "docker/registry/v2")
        self._made: set[str] = set()
        self._sink = sink
        self._root = len(str(root).rstrip("/")) + 1

    def _write(self, path: str, data: bytes) -> None:
        if self._sink is not None:  # no disk: each key (relative to root) and its bytes
            self._sink(path[self._root :], data)
            return
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        with open(path, "wb") as stream:
            stream.write(data)

    def blob(self, data: bytes) -> str:
        hex_part = hashlib.sha256(data).hexdigest()
        self._write(f"{self.v2}/blobs/sha256/{hex_part[:2]}/{hex_part}/data", data)
        return "sha256:" + hex_part

    def link(self, repo: str, relative: str, digest: str) -> None:
        self._write(f"{self.v2}/repositories/{repo}/{relative}", digest.encode())

    def forget_dirs(self) -> None:
        self._made.clear()


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class _Repository:
    """Writes one repository's manifests and tags."""

    def __init__(self, writer: _Writer, name: str, result: SyntheticRegistry) -> None:
        self.writer = writer
        self.name = name
        self.result = result
        self.counter = 0
        writer.forget_dirs()
        self.config = writer.blob(_dumps({"architecture": "amd64", "os": "linux", "repo": name}))
        self.layer = writer.blob(f"layer of {name}".encode() * 4)
        for blob in (self.config, self.layer):
            writer.link(name, f"_layers/sha256/{blob[7:]}/link", blob)

    def image(self, *, own_layers: int = 0, **extra: Any) -> dict[str, Any]:
        """An image: the repository's config, and its shared layer or ``own_layers``
        layer blobs of its own (freed with the image: for blob collection)."""
        self.counter += 1
        layers = [self.layer]
        if own_layers:
            layers = []
            for n in range(own_layers):
                which = f"{self.counter}.{n}" if n else f"{self.counter}"
                data = f"layer {which} of {self.name}".encode() * 8
                layers.append(self.writer.blob(data))
                self.writer.link(self.name, f"_layers/sha256/{layers[-1][7:]}/link", layers[-1])
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.config, "size": 60},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer, "size": 40} for layer in layers],
            "annotations": {"bench.id": f"{self.name}#{self.counter}"},
            **extra,
        }  # fmt: skip
        return self._put(document, OCI_MANIFEST)

    def index(self, children: list[dict[str, Any]]) -> dict[str, Any]:
        return self._put({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children},
                         OCI_INDEX)  # fmt: skip

    def _put(self, document: dict[str, Any], media_type: str) -> dict[str, Any]:
        data = _dumps(document)
        digest = self.writer.blob(data)
        self.writer.link(self.name, f"_manifests/revisions/sha256/{digest[7:]}/link", digest)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def tag(self, tag: str, digest: str, history: list[str]) -> None:
        self.writer.link(self.name, f"_manifests/tags/{tag}/current/link", digest)
        for old in [*history, digest]:
            self.writer.link(self.name, f"_manifests/tags/{tag}/index/sha256/{old[7:]}/link", old)
        self.result.tags += 1


def generate(
    root: Path,
    repositories: int,
    per_repo: int = 32,
    *,
    own_layers: bool = False,
    layers_per_image: int = 0,
    tagged: int = 4,
    sink: Callable[[str, bytes], None] | None = None,
) -> SyntheticRegistry:
    """Generate ``repositories`` repositories of ``per_repo`` manifests under ``root``;
    with ``own_layers`` every history image has a layer blob of its own; with
    ``layers_per_image`` every image has that many (history and in use); ``tagged``
    images are tagged besides the index and the signature. With ``sink``, no file is
    written: ``sink`` gets each key (relative to ``root``) and its bytes."""
    in_use_count = FIXED_IN_USE - 4 + tagged
    if per_repo < in_use_count + 3:
        raise ValueError(f"per_repo must be at least {in_use_count + 3}")
    history_layers = layers_per_image or int(own_layers)
    writer = _Writer(root, sink)
    result = SyntheticRegistry(root)
    for name in repository_names(repositories):
        result.repositories.append(name)
        repo = _Repository(writer, name, result)
        # History first (older), then what is live.
        old_kids = [repo.image(own_layers=history_layers) for _ in range(2)]
        old_index = repo.index(old_kids)
        history = [old_index["digest"], *(k["digest"] for k in old_kids)]
        history += [
            repo.image(own_layers=history_layers)["digest"]
            for _ in range(per_repo - in_use_count - 3)
        ]

        kids = [repo.image(own_layers=layers_per_image) for _ in range(2)]
        index = repo.index(kids)
        sbom = repo.image(own_layers=layers_per_image, subject=index,
                          artifactType="application/spdx+json")  # fmt: skip
        signature = repo.image(
            own_layers=layers_per_image,
            artifactType="application/vnd.dev.cosign.artifact.sig.v1+json",
        )
        repo.tag("latest", index["digest"], [old_index["digest"]])
        repo.tag(f"sha256-{index['digest'][7:]}.sig", signature["digest"], [])
        images = [repo.image(own_layers=layers_per_image) for _ in range(tagged)]
        plain_history = history[3:]
        for n, image in enumerate(images):
            # Tags v1..vN were each pushed over by a share of the history images.
            repo.tag(f"v{n + 1}", image["digest"], plain_history[n::tagged])
        in_use = [index, *kids, sbom, signature, *images]
        result.in_use += [(name, m["digest"]) for m in in_use]
        result.history += [(name, d) for d in history]
    return result


def generate_tagged_repository(
    root: Path, tags: int = 1000, manifests: int = 5000
) -> SyntheticRegistry:
    """One repository of ``manifests`` images, ``tags`` of them tagged (each tag pushed
    over by a share of the rest, which is untagged history): the registry reads every
    tag of the repository on every DELETE, so this is where its DELETE is slowest."""
    return generate_tagged_repositories(root, 1, tags, manifests, names=["big/app"])


def generate_tagged_repositories(
    root: Path, repositories: int, tags: int, manifests: int, *, names: list[str] | None = None
) -> SyntheticRegistry:
    """``repositories`` repositories as ``generate_tagged_repository`` makes one."""
    writer = _Writer(root)
    result = SyntheticRegistry(root)
    for name in names or repository_names(repositories):
        result.repositories.append(name)
        repo = _Repository(writer, name, result)
        history = [repo.image()["digest"] for _ in range(manifests - tags)]
        for n in range(tags):
            image = repo.image()
            repo.tag(f"build-{n}", image["digest"], history[n::tags])
            result.in_use.append((name, image["digest"]))
        result.history += [(name, d) for d in history]
    return result


def remaining_revisions(root: Path) -> set[tuple[str, str]]:
    """Every (repository, digest) that still has a revision link."""
    base = os.path.join(root, "docker/registry/v2/repositories")
    found: set[tuple[str, str]] = set()
    for directory, subdirs, _ in os.walk(base):
        if directory.endswith("/_manifests/revisions/sha256"):
            repo = os.path.relpath(directory, base).rsplit("/_manifests/", 1)[0]
            for hex_part in subdirs:
                if os.path.exists(os.path.join(directory, hex_part, "link")):
                    found.add((repo, "sha256:" + hex_part))
            subdirs[:] = []
        else:
            subdirs[:] = [d for d in subdirs if d not in ("_layers", "_uploads")]
    return found
