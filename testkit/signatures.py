"""Attached artifacts as signing and SBOM tools store them on a registry without a
referrers API (distribution 2.8 and 3.x): cosign-style tags, possibly in another
repository (``COSIGN_REPOSITORY``), and the OCI 1.1 referrers tag schema."""

from __future__ import annotations

import json

from regcleaner import mediatypes
from testkit import images
from testkit.api import Pushed, RegistryAPI


def referrers_tag(subject: Pushed | str) -> str:
    """The OCI 1.1 referrers tag schema: ``sha256-<hex>`` names the index of
    ``subject``'s referrers."""
    digest = subject if isinstance(subject, str) else subject.digest
    return "sha256-" + digest.split(":", 1)[1]


def push_referrers_index(
    api: RegistryAPI, repository: str, subject: Pushed | str, referrers: list[Pushed],
    artifact_type: str = "application/spdx+json",
) -> Pushed:  # fmt: skip
    """What oras, notation or cosign (OCI 1.1 mode) push when the registry has no
    referrers API: an index of the referrers, each with its artifact type, tagged with
    the referrers tag schema of ``subject``."""
    document = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [r.descriptor(artifactType=artifact_type) for r in referrers],
    }
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    tag = referrers_tag(subject)
    digest = api.put_manifest(repository, tag, body, mediatypes.OCI_INDEX)
    return Pushed(
        repository, digest, mediatypes.OCI_INDEX, len(body), (),
        tuple(r.digest for r in referrers), (tag,),
    )  # fmt: skip


def push_signature_for(
    api: RegistryAPI, repository: str, signed: Pushed | str, *, seed: str
) -> Pushed:
    """A cosign-style ``sha256-<hex>.sig`` tag in ``repository`` for a digest that may
    live in another repository (or nowhere)."""
    digest = signed if isinstance(signed, str) else signed.digest
    target = Pushed(repository, digest, mediatypes.OCI_MANIFEST, 0)
    return images.push_cosign_signature(api, repository, target, seed=seed)
