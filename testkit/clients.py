"""Drive real container clients that nobody on this team wrote: umoci, skopeo, buildah, oras.

The in-house client (``testkit.api``) pushes exactly the bytes a test asks for. These helpers
let the real tools decide the bytes instead, as they do in production:

- ``UmociLayout``: umoci builds each architecture's image into an OCI image layout; an
  image index is written into that layout by hand (umoci has no command for it).
- ``Skopeo``: pushes a layout to the registry (``copy --all``, optionally converting to
  Docker ``v2s2``), reads raw manifests, and pulls everything back into a fresh OCI
  layout, which is then verified blob by blob.
- ``Buildah``: builds ``FROM scratch`` images and pushes a manifest list; as root, with
  the ``vfs`` storage driver and its own storage root, no daemon.
- ``OrasClient``: the ``oras`` Python package (ORAS SDK) pushes artifacts: a referrer with
  a ``subject``, by digest and untagged (what ``oras attach`` does), and a cosign-style
  ``sha256-<hex>.sig`` tag.

Every helper fails with ``MissingClient`` naming the tool and how to install it, and with
``ClientFailed`` quoting the command and its stderr when the tool itself fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
REF_NAME = "org.opencontainers.image.ref.name"

COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

# Debian package for each command-line client.
PACKAGES = {"skopeo": "skopeo", "umoci": "umoci", "buildah": "buildah"}


class MissingClient(RuntimeError):
    """A client these tests drive is not installed."""


class ClientFailed(RuntimeError):
    """A client ran and failed; the message quotes its command line and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)} exited with {returncode}:\n{stderr.strip()[-3000:]}")


def which(tool: str) -> str:
    """The path of ``tool``, or ``MissingClient`` saying which Debian package provides it."""
    path = shutil.which(tool)
    if path is None:
        package = PACKAGES.get(tool, tool)
        raise MissingClient(
            f"{tool} is not installed: apt-get install {package} (make system-deps does)"
        )
    return path


def missing_reason(tool: str) -> str | None:
    """Why ``tool`` cannot run here (for a skip), or None if it is installed."""
    try:
        which(tool)
    except MissingClient as exc:
        return str(exc)
    return None


def run(argv: Sequence[str], *, timeout_s: float = 120.0) -> str:
    """Run a client; its stdout, or ``ClientFailed`` with its stderr."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise ClientFailed(argv, result.returncode, result.stderr or result.stdout)
    return result.stdout


def version(tool: str) -> str:
    """``tool --version``, first line (for reports and failure messages)."""
    return run([which(tool), "--version"]).strip().splitlines()[0]


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of the bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as a client or the registry holds it."""

    raw: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.raw)
        return document

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def children(self) -> tuple[str, ...]:
        """Digests of the manifests an index lists (empty for an image)."""
        return tuple(str(d["digest"]) for d in self.document.get("manifests") or [])

    @property
    def subject(self) -> str | None:
        """The digest this manifest is a referrer of, if any."""
        subject = self.document.get("subject")
        return str(subject["digest"]) if isinstance(subject, dict) else None

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor of this manifest."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def parse_manifest(raw: bytes, media_type: str | None = None) -> Manifest:
    """A ``Manifest`` of these bytes. ``mediaType`` is optional in OCI (umoci omits it):
    without it or an explicit ``media_type``, an index is told by its ``manifests``."""
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError(f"not a manifest: {raw[:80]!r}")
    found = document.get("mediaType") or media_type
    if not found:
        found = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    return Manifest(raw, str(found))


# --- umoci: build OCI image layouts ---------------------------------------------------


class UmociLayout:
    """An OCI image layout that umoci builds images into."""

    def __init__(self, path: Path) -> None:
        self.umoci = which("umoci")
        self.path = path
        self._staging = path.parent / f"{path.name}.staging"
        if not (path / "index.json").exists():
            run([self.umoci, "init", "--layout", str(path)])

    def build(
        self, tag: str, files: Mapping[str, bytes], *, arch: str, os_name: str = "linux"
    ) -> Manifest:
        """A one-layer image holding ``files`` (path in image -> bytes), tagged in the layout."""
        image = f"{self.path}:{tag}"
        shutil.rmtree(self._staging, ignore_errors=True)
        for name, data in files.items():
            target = self._staging / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        run([self.umoci, "new", "--image", image])
        run([self.umoci, "insert", "--image", image, str(self._staging), "/"])
        command = "/" + next(iter(files)).lstrip("/")
        run([self.umoci, "config", "--image", image, "--architecture", arch, "--os", os_name,
             "--config.cmd", command])  # fmt: skip
        shutil.rmtree(self._staging, ignore_errors=True)
        return self.manifest(tag)

    def _index(self) -> dict[str, Any]:
        index: dict[str, Any] = json.loads((self.path / "index.json").read_text())
        return index

    def blob(self, digest: str) -> bytes:
        algorithm, hex_part = digest.split(":", 1)
        return (self.path / "blobs" / algorithm / hex_part).read_bytes()

    def manifest(self, tag: str) -> Manifest:
        """The manifest ``tag`` names in the layout."""
        for descriptor in self._index()["manifests"]:
            if (descriptor.get("annotations") or {}).get(REF_NAME) == tag:
                return parse_manifest(self.blob(descriptor["digest"]), descriptor["mediaType"])
        raise KeyError(f"{tag} is not in {self.path}/index.json")

    def platform(self, image: Manifest) -> dict[str, str]:
        """``os``/``architecture`` from the image's config blob."""
        config = json.loads(self.blob(image.document["config"]["digest"]))
        return {"architecture": str(config["architecture"]), "os": str(config["os"])}

    def write_index(self, tag: str, images: Sequence[Manifest]) -> Manifest:
        """Write an OCI image index of ``images`` (with platforms) and tag it in the layout.

        umoci has no command for an index: this is the few lines of JSON it leaves to us.
        """
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [image.descriptor(platform=self.platform(image)) for image in images],
        }
        raw = json.dumps(document, indent=2).encode()
        index = parse_manifest(raw)
        (self.path / "blobs/sha256" / index.digest.split(":")[1]).write_bytes(raw)
        layout = self._index()
        layout["manifests"] = [
            d for d in layout["manifests"] if (d.get("annotations") or {}).get(REF_NAME) != tag
        ]
        layout["manifests"].append(index.descriptor(annotations={REF_NAME: tag}))
        (self.path / "index.json").write_text(json.dumps(layout))
        return index


# --- skopeo: push, inspect, pull ------------------------------------------------------


@dataclass(frozen=True)
class Pulled:
    """What a pull wrote into an OCI layout, every blob verified against its digest."""

    top: Manifest
    manifests: frozenset[str]
    blobs: frozenset[str]


def verify_layout(layout: Path, tag: str) -> Pulled:
    """Walk ``tag`` in an OCI layout: every manifest and blob must be present, with the
    digest and size its descriptor states. Raises AssertionError naming what is wrong."""
    index = json.loads((layout / "index.json").read_text())
    tops = [d for d in index["manifests"] if (d.get("annotations") or {}).get(REF_NAME) == tag]
    assert len(tops) == 1, f"{layout}: tag {tag} appears {len(tops)} times in index.json"
    manifests: set[str] = set()
    blobs: set[str] = set()

    def read(descriptor: dict[str, Any], trail: str) -> bytes:
        digest = str(descriptor["digest"])
        algorithm, hex_part = digest.split(":", 1)
        path = layout / "blobs" / algorithm / hex_part
        assert path.is_file(), f"{trail}: {digest} is missing from the pulled layout"
        data = path.read_bytes()
        assert sha256_digest(data) == digest, f"{trail}: {digest} does not match its content"
        assert len(data) == descriptor["size"], f"{trail}: {digest} has the wrong size"
        return data

    def walk(descriptor: dict[str, Any], trail: str) -> Manifest:
        manifest = parse_manifest(read(descriptor, trail), descriptor.get("mediaType"))
        manifests.add(manifest.digest)
        for child in manifest.document.get("manifests") or []:
            walk(child, f"{trail} -> {child['digest'][:19]}")
        document = manifest.document
        for blob in [document["config"]] if "config" in document else []:
            read(blob, f"{trail} config")
            blobs.add(str(blob["digest"]))
        for blob in document.get("layers") or []:
            read(blob, f"{trail} layer")
            blobs.add(str(blob["digest"]))
        return manifest

    top = walk(tops[0], f"{layout.name}:{tag}")
    return Pulled(top, frozenset(manifests), frozenset(blobs))


class Skopeo:
    """skopeo against one plain-http registry on loopback."""

    def __init__(self, host: str, workdir: Path) -> None:
        self.skopeo = which("skopeo")
        self.host = host
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # Our own trust policy, so a machine's stricter /etc/containers/policy.json
        # (or none at all) does not change what the tests see.
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self._pulls = 0

    def _cmd(self, *args: str) -> list[str]:
        return [self.skopeo, "--policy", str(self.policy), *args]

    def ref(self, repository: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"docker://{self.host}/{repository}{sep}{reference}"

    def push_layout(
        self,
        layout: UmociLayout,
        tag: str,
        repository: str,
        dest_tag: str,
        *,
        docker_format: bool = False,
    ) -> Manifest:
        """``skopeo copy --all oci:LAYOUT:TAG docker://HOST/REPO:DEST_TAG``; returns the
        manifest the registry now serves for the tag (read back, not guessed)."""
        args = ["copy", "--all", "--dest-tls-verify=false", "--quiet"]
        if docker_format:
            args += ["--format", "v2s2"]
        run(self._cmd(*args, f"oci:{layout.path}:{tag}", self.ref(repository, dest_tag)))
        return self.inspect_raw(repository, dest_tag)

    def inspect_raw(self, repository: str, reference: str) -> Manifest:
        """``skopeo inspect --raw``; by digest, the bytes must hash to that digest."""
        out = subprocess.run(
            self._cmd("inspect", "--raw", "--tls-verify=false", self.ref(repository, reference)),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise ClientFailed(
                ["skopeo", "inspect", "--raw", self.ref(repository, reference)],
                out.returncode,
                out.stderr.decode(errors="replace"),
            )
        manifest = parse_manifest(out.stdout)
        if reference.startswith("sha256:"):
            assert manifest.digest == reference, f"skopeo read {manifest.digest} for {reference}"
        return manifest

    def manifest_unknown(self, repository: str, digest: str) -> bool:
        """True if skopeo is told the manifest is unknown; raises on any other error."""
        try:
            self.inspect_raw(repository, digest)
        except ClientFailed as exc:
            if "manifest unknown" in exc.stderr:
                return True
            raise
        return False

    def pull(self, repository: str, reference: str) -> Pulled:
        """``skopeo copy --all docker://... oci:DIR:pulled`` into a fresh layout, then verify
        every manifest and blob in it. OCI sources keep their digests (the pulled top
        manifest is the registry's); Docker ones are converted to OCI on the way."""
        self._pulls += 1
        dest = self.workdir / f"pull-{self._pulls}"
        source = self.inspect_raw(repository, reference)
        args = ["copy", "--all", "--src-tls-verify=false", "--quiet"]
        if source.media_type in (OCI_MANIFEST, OCI_INDEX):
            args.append("--preserve-digests")
        run(self._cmd(*args, self.ref(repository, reference), f"oci:{dest}:pulled"))
        pulled = verify_layout(dest, "pulled")
        shutil.rmtree(dest)
        if "--preserve-digests" in args:
            assert pulled.top.digest == source.digest, "skopeo changed an OCI manifest's digest"
        return pulled


# --- buildah: FROM scratch images and manifest lists, rootful, vfs --------------------


class Buildah:
    """buildah as root with the vfs driver and a private storage root (no daemon)."""

    def __init__(self, workdir: Path) -> None:
        self.buildah = which("buildah")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._base = [
            self.buildah,
            "--storage-driver",
            "vfs",
            "--root",
            str(workdir / "root"),
            "--runroot",
            str(workdir / "runroot"),
        ]

    def _run(self, *args: str) -> str:
        return run([*self._base, *args]).strip()

    def build(
        self, name: str, files: Mapping[str, bytes], *, arch: str, docker_format: bool
    ) -> str:
        """``FROM scratch`` + ``COPY`` files, committed as ``name``; returns the image id."""
        source = self.workdir / f"{name.replace('/', '_').replace(':', '_')}.ctx"
        container = self._run("from", "--quiet", "scratch")
        try:
            for path, data in files.items():
                local = source / path.lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                self._run("copy", container, str(local), "/" + path.lstrip("/"))
            self._run("config", "--arch", arch, "--os", "linux", container)
            fmt = "docker" if docker_format else "oci"
            return self._run("commit", "--quiet", "--format", fmt, container, name)
        finally:
            self._run("rm", container)

    def push_list(
        self, list_name: str, images: Sequence[str], destination: str, *, docker_format: bool
    ) -> None:
        """``manifest create`` + ``add`` + ``push --all`` to ``docker://destination``."""
        self._run("manifest", "create", list_name)
        for image in images:
            self._run("manifest", "add", list_name, image)
        self._run(
            "manifest",
            "push",
            "--all",
            "--quiet",
            "--tls-verify=false",
            "--format",
            "v2s2" if docker_format else "oci",
            list_name,
            f"docker://{destination}",
        )


# --- oras (the ORAS Python SDK): referrers and cosign-style signature tags ------------


def _import_oras() -> Any:
    try:
        import oras.container  # type: ignore[import-untyped]
        import oras.oci  # type: ignore[import-untyped]
        import oras.provider  # type: ignore[import-untyped]
        import oras.schemas  # type: ignore[import-untyped]
        import oras.version  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingClient(
            "the oras Python package (ORAS SDK) is not installed: pip install -e '.[dev]'"
        ) from exc
    return oras


class OrasClient:
    """The ORAS SDK against one plain-http registry on loopback."""

    def __init__(self, host: str, workdir: Path) -> None:
        self._oras = _import_oras()
        self.host = host
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.registry = self._oras.provider.Registry(hostname=host, insecure=True)
        self._count = 0

    def close(self) -> None:
        self.registry.session.close()

    def __enter__(self) -> OrasClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def version() -> str:
        return f"oras (Python SDK) {_import_oras().version.__version__}"

    def _target(self, repository: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.host}/{repository}{sep}{reference}"

    def _scratch(self) -> Path:
        self._count += 1
        path = self.workdir / f"oras-{self._count}"
        path.mkdir()
        return path

    def _check(self, response: Any, what: str) -> None:
        if response.status_code not in (200, 201, 202):
            raise ClientFailed(["oras", what], response.status_code, response.text)

    def attach(
        self,
        repository: str,
        subject: Manifest,
        *,
        artifact_type: str,
        filename: str,
        content: bytes,
    ) -> Manifest:
        """Push an artifact whose ``subject`` is ``subject``, by digest and untagged, as
        ``oras attach`` does: oras uploads the blobs and the manifest. (The SDK's ``push``
        always tags, so the manifest is assembled here with the SDK's own helpers.)"""
        oras = self._oras
        scratch = self._scratch()
        container = oras.container.Container(self._target(repository, "untagged"))
        payload = scratch / filename
        payload.write_bytes(content)
        layer = oras.oci.NewLayer(str(payload), media_type=artifact_type)
        layer["annotations"] = {"org.opencontainers.image.title": filename}
        self._check(self.registry.upload_blob(str(payload), container, layer), "upload layer")
        config_path = scratch / "config.json"
        config_path.write_bytes(b"{}")
        config, _ = oras.oci.ManifestConfig(str(config_path), "application/vnd.oci.empty.v1+json")
        self._check(self.registry.upload_blob(str(config_path), container, config), "config")
        document = oras.oci.NewManifest()
        document.pop("annotations", None)
        document["artifactType"] = artifact_type
        document["config"] = config
        document["layers"] = [layer]
        document["subject"] = {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        }
        # The SDK's own schema check, as its upload_manifest does.
        oras.provider.jsonschema.validate(document, schema=oras.schemas.manifest)
        raw = json.dumps(document, separators=(",", ":")).encode()
        manifest = parse_manifest(raw)
        response = self.registry.do_request(
            f"{self.registry.prefix}://{self.host}/v2/{repository}/manifests/{manifest.digest}",
            "PUT",
            data=raw,
            headers={"Content-Type": OCI_MANIFEST},
        )
        self._check(response, f"PUT manifest {manifest.digest}")
        served = response.headers.get("Docker-Content-Digest")
        assert served == manifest.digest, f"registry stored {served}, oras sent {manifest.digest}"
        return manifest

    def push_cosign_signature(self, repository: str, signed: Manifest) -> tuple[str, str]:
        """A cosign-style signature: tag ``sha256-<hex>.sig`` holding a simple-signing
        payload layer with a signature annotation. Pushed with the SDK's ``push`` (which
        tags). Returns (tag, digest)."""
        scratch = self._scratch()
        payload = scratch / "payload.json"
        payload.write_text(
            json.dumps(
                {
                    "critical": {
                        "identity": {"docker-reference": f"{self.host}/{repository}"},
                        "image": {"docker-manifest-digest": signed.digest},
                        "type": "cosign container image signature",
                    },
                    "optional": None,
                }
            )
        )
        signature = base64.b64encode(hashlib.sha256(payload.read_bytes()).digest()).decode()
        annotations = scratch / "annotations.json"
        annotations.write_text(json.dumps({str(payload): {COSIGN_SIGNATURE_ANNOTATION: signature}}))
        config = scratch / "config.json"
        config.write_text(json.dumps({"architecture": "", "os": "", "rootfs": {"type": "layers"}}))
        tag = "sha256-" + signed.digest.split(":")[1] + ".sig"
        response = self.registry.push(
            target=self._target(repository, tag),
            files=[f"{payload}:{COSIGN_PAYLOAD}"],
            manifest_config=f"{config}:{OCI_CONFIG}",
            annotation_file=str(annotations),
            disable_path_validation=True,
            quiet=True,
        )
        self._check(response, f"push {tag}")
        return tag, str(response.headers["Docker-Content-Digest"])

    def pull(self, repository: str, reference: str) -> dict[str, bytes]:
        """``oras pull``: every layer's file (by its title) and its content."""
        outdir = self._scratch()
        files = self.registry.pull(target=self._target(repository, reference), outdir=str(outdir))
        return {Path(f).name: Path(f).read_bytes() for f in files}
