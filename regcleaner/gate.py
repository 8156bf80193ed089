"""The gate before any storage write: prove the registry cannot write.

Measured on distribution 2.8.2: in read-only mode (``storage.maintenance.readonly``)
the registry registers no route for writes, so every write answers 405 with the
plain-text body ``Method not allowed``. A writable registry answers the two probes
below without changing anything: a DELETE of a digest that no repository holds gets 404
``MANIFEST_UNKNOWN``, and a PUT of a manifest whose config blob does not exist gets 400
``MANIFEST_BLOB_UNKNOWN`` (it is refused before anything is written). With only
``delete.enabled: false`` a DELETE gets 405 with a JSON ``UNSUPPORTED`` error, yet
pushes still work: that registry is writable.

Both probes must be refused, on a fresh connection each, in every round: several
replicas behind one URL (a Kubernetes Deployment) answer one connection each, and a
proxy that blocks DELETE alone would pass a DELETE-only probe while pushes go on.
"""

from __future__ import annotations

import json
import logging

from regcleaner import mediatypes
from regcleaner.digest import Digest
from regcleaner.errors import GateRefused, TransportError
from regcleaner.registry.client import RegistryClient, RegistryResponse

log = logging.getLogger(__name__)

READ_ONLY_BODY = b"Method not allowed"
PROBE_TAG = "regcleaner-read-only-probe"
_NOWHERE = "sha256:" + "0" * 64
# A manifest no registry can accept: its config blob is the all-zero digest.
PROBE_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _NOWHERE,
            "size": 2,
        },
        "layers": [],
    },
    separators=(",", ":"),
).encode()
HOW_TO = (
    "put every replica in read-only mode (storage: maintenance: readonly: enabled: true, "
    "then restart it), or stop the registry and pass --registry-stopped"
)


def refused_by_read_only(response: RegistryResponse) -> bool:
    """True for the answer read-only mode gives to a write: 405, plain text."""
    return (
        response.status == 405
        and response.content_type.startswith("text/plain")
        and response.body.strip() == READ_ONLY_BODY
    )


def _why_not(action: str, response: RegistryResponse) -> str:
    status = response.status
    if action == "DELETE" and status == 404:
        return "a DELETE of an unknown manifest answered 404: it accepts deletions"
    if action == "PUT" and status in (400, 201):
        return f"a manifest PUT answered {status}, not 405: it accepts pushes"
    if status == 405 and response.error_code == "UNSUPPORTED":
        return (
            "DELETE answered 405 UNSUPPORTED: deletion is disabled, but that does not stop pushes"
        )
    if status in (401, 403):
        verb = "push" if action == "PUT" else "delete"
        return (
            f"a {action} probe answered {status}: the credentials may not {verb} there, so "
            "read-only mode cannot be told apart from a permission check"
        )
    if status == 405:
        return f"a {action} probe answered 405 but not as the registry's read-only mode does"
    return f"a {action} probe answered {status}"


async def prove_read_only(client: RegistryClient, repository: str, *, rounds: int = 3) -> None:
    """Raise GateRefused unless every probe in every round is refused as read-only mode
    refuses writes. ``repository`` should exist, so that permissions are the ones the
    run needs."""
    where = client.base_url
    for number in range(1, rounds + 1):
        for action in ("DELETE", "PUT"):
            try:
                if action == "DELETE":
                    response = await client.delete_manifest(
                        repository, Digest(_NOWHERE), fresh_connection=True
                    )
                else:
                    response = await client.put_manifest(
                        repository, PROBE_TAG, PROBE_MANIFEST, mediatypes.OCI_MANIFEST,
                        fresh_connection=True,
                    )  # fmt: skip
            except TransportError as exc:
                raise GateRefused(
                    f"refusing to write storage: cannot reach the registry at {where} to "
                    f"check that it is read-only ({exc}); {HOW_TO}"
                ) from None
            if not refused_by_read_only(response):
                raise GateRefused(
                    f"refusing to write storage: the registry at {where} is not read-only "
                    f"({_why_not(action, response)}; probe round {number}); {HOW_TO}"
                )
    log.info(
        "the registry at %s refused every write probe (%d rounds, DELETE and PUT): read-only",
        where,
        rounds,
    )
