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

Before the probes, the URL must answer ``GET /v2/`` with 200. With ``--registry-stopped``
only "nothing answers at all" (connection refused, no route, no such host) counts as a
stopped registry: a TLS handshake (even one that fails verification), any HTTP status, a
redirect or an authentication challenge means a server is there, and the gate refuses
unless it proves that server read-only.

Read-only is not enough: the registry at the URL must serve *this* storage. For a few
repositories spread over the storage, it must answer a HEAD by digest of a manifest
that is here with 200 and that digest, and 404 for digests that are not in that
repository here (another repository's manifest, a random digest). Any disagreement
refuses. What this cannot tell apart: a byte-identical copy of the storage served by
another registry (see docs/safety.md).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from regcleaner import layout, mediatypes
from regcleaner.digest import Digest
from regcleaner.errors import (
    AuthenticationError,
    GateRefused,
    RegistryAbsent,
    RegistryMismatch,
    RegistryUnreachable,
    TransportError,
)
from regcleaner.registry.client import RegistryClient, RegistryResponse
from regcleaner.view import RegistryView

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
                    f"check that it is read-only ({exc})\n  to fix: {HOW_TO}",
                    short=f"the registry at {where} could not be probed",
                ) from None
            if not refused_by_read_only(response):
                raise GateRefused(
                    f"refusing to write storage: the registry at {where} is not read-only "
                    f"({_why_not(action, response)}; probe round {number})\n  to fix: {HOW_TO}",
                    short=f"the registry at {where} is not read-only",
                )
    log.info(
        "the registry at %s refused every write probe (%d rounds, DELETE and PUT): read-only",
        where,
        rounds,
    )


async def answers_or_stopped(client: RegistryClient, *, registry_stopped: bool) -> bool:
    """Ping the URL. True when nothing answers at all and ``--registry-stopped`` says the
    registry is stopped; False when a registry answers ``/v2/`` with 200 (it must then be
    proven read-only). Any other answer refuses: something is there."""
    where = client.base_url
    try:
        await client.ping()
    except RegistryAbsent:
        if not registry_stopped:
            raise
        log.info(
            "the registry at %s does not answer: stopped, as --registry-stopped says "
            "(nothing answers at all: the connection was refused, or no route or host)",
            where,
        )
        return True
    except AuthenticationError as exc:
        if not registry_stopped:
            raise
        raise GateRefused(_something_answers(where, exc), short=_answers(where)) from None
    except RegistryUnreachable as exc:
        raise GateRefused(_something_answers(where, exc), short=_answers(where)) from None
    return False


def _answers(where: str) -> str:
    return f"a server answers at {where} and is not shown read-only"


def _something_answers(where: str, exc: BaseException) -> str:
    return (
        f"refusing to write storage: a server answers at {where}, so the registry is not "
        f"stopped, and it cannot be proven read-only ({exc})\n  to fix: {HOW_TO}"
    )


# -- the registry at the URL serves this storage ------------------------------------------

IDENTITY_REPOSITORIES = 4
"""How many repositories of the storage the identity proof asks the registry about."""
IDENTITY_SCAN = 128
"""How many repositories are listed to choose them from (the walk stops there)."""
IDENTITY_CANDIDATES = 3
"""Manifests tried per repository (newest first) until one is served."""


@dataclass(frozen=True, slots=True)
class StorageSample:
    """One repository of the storage, as the identity proof asks about it."""

    repository: str
    present: tuple[Digest, ...]
    """Revisions here whose manifest bytes are here too, newest first."""
    revisions: frozenset[Digest]


def spread(names: list[str], count: int) -> list[str]:
    """``names`` reordered so that the first ``count`` are spread over the list (first,
    last, in between), then the rest in order."""
    if len(names) <= count:
        return list(names)
    step = (len(names) - 1) / (count - 1)
    chosen = [names[round(k * step)] for k in range(count)]
    return chosen + [name for name in names if name not in set(chosen)]


async def first_repositories(view: RegistryView, limit: int) -> list[str]:
    """The first ``limit`` repositories the storage lists, sorted, without listing the
    rest."""
    found: list[str] = []

    class _Enough(Exception):
        pass

    async def take(name: str) -> None:
        found.append(name)
        if len(found) >= limit:
            raise _Enough

    try:
        await view.repositories(take)
    except (_Enough, BaseExceptionGroup) as exc:
        if isinstance(exc, BaseExceptionGroup):
            _, rest = exc.split(_Enough)
            if rest is not None:
                raise
    return sorted(found)


async def sample_storage(
    view: RegistryView, *, repositories: int = IDENTITY_REPOSITORIES, scan: int = IDENTITY_SCAN
) -> list[StorageSample]:
    """Up to ``repositories`` repositories spread over the first ``scan`` of the storage,
    each with manifests that are here (revision link and bytes)."""
    samples: list[StorageSample] = []
    names = spread(await first_repositories(view, scan), repositories)
    for tried, name in enumerate(names):
        if len(samples) >= repositories or tried >= 3 * repositories:
            break
        revisions, _ = await view.revision_listing(name)
        newest = sorted(revisions, key=lambda d: revisions[d], reverse=True)[:8]
        found = await view.store.stat_many([layout.blob_data(d) for d in newest])
        present = tuple(d for d, info in zip(newest, found, strict=True) if info is not None)
        if present:
            samples.append(StorageSample(name, present[:IDENTITY_CANDIDATES], frozenset(revisions)))
    return samples


def _absent_digests(sample: StorageSample, samples: list[StorageSample]) -> list[Digest]:
    """Digests not in ``sample``'s repository here: another repository's manifest (the
    stronger test: it exists in the storage, just not there) and a random digest."""
    others = [
        d for other in samples if other is not sample for d in other.present
        if d not in sample.revisions
    ]  # fmt: skip
    return [*others[:1], Digest("sha256:" + os.urandom(32).hex())]


async def prove_same_storage(
    client: RegistryClient, view: RegistryView, samples: list[StorageSample]
) -> list[str]:
    """Raise RegistryMismatch unless the registry at the URL serves the storage the
    samples come from: manifests here answer 200 with their digest, digests not here
    answer 404. A disagreement is checked against the storage again (a push or a
    deletion in between is not evidence). Returns what was proven, for the log."""
    where, storage = client.base_url, view.describe()
    evidence: list[str] = []
    proven: list[str] = []
    unsure: list[str] = []
    denied: list[str] = []
    for sample in samples:
        repository = sample.repository
        for digest in sample.present:
            answer = await client.head_manifest(repository, digest, fresh_connection=True)
            if answer.status == 200 and answer.digest in ("", digest):
                proven.append(f"{repository}@{digest}")
                break
            if answer.status == 200:
                evidence.append(
                    f"{repository}@{digest} answered with another digest ({answer.digest})"
                )
                break
            if answer.status == 404:
                if await view.revision_mtime(repository, digest) is None:
                    continue  # deleted here meanwhile: not evidence
                evidence.append(f"{repository}@{digest} is in this storage but answered 404")
                break
            unsure.append(f"{repository}@{digest} answered {answer.status}")
            if answer.status in (401, 403):
                denied.append(f"{repository} answered {answer.status}")
                break
        for digest in _absent_digests(sample, samples):
            answer = await client.head_manifest(repository, digest, fresh_connection=True)
            if answer.status == 404:
                continue
            if answer.status == 200 and await view.revision_mtime(repository, digest) is None:
                evidence.append(f"{repository}@{digest} is not in this storage but answered 200")
            elif answer.status != 200:
                unsure.append(f"{repository}@{digest} answered {answer.status}")
    if not evidence and not proven and denied:
        raise AuthenticationError(
            f"cannot prove that the registry at {where} serves the storage {storage}: the "
            f"credentials may not pull there ({'; '.join(denied[:3])}); they need pull",
            status=401,
        )
    if evidence or not proven:
        why = "; ".join(evidence[:3] or unsure[:3] or ["no manifest of it was served"])
        raise RegistryMismatch(
            f"the registry at {where} does not serve the storage {storage}: {why}. Point "
            "--registry-url and the storage options at the same registry"
        )
    log.info(
        "the registry at %s serves %s: %d repositories answered for their manifests, "
        "and 404 for others",
        where, storage, len(proven),
    )  # fmt: skip
    return proven


async def prove_serves_storage(client: RegistryClient, view: RegistryView) -> None:
    """The identity proof before a storage write: sample the storage, then ask the
    registry (refuses when the storage holds no manifest to ask about)."""
    samples = await sample_storage(view)
    if not samples:
        raise GateRefused(
            f"refusing to write storage: the storage {view.describe()} holds no manifest, so "
            f"nothing proves that the registry at {client.base_url} serves it; stop the "
            "registry and pass --registry-stopped without --registry-url",
            short="the storage holds no manifest to prove the URL serves it",
        )
    await prove_same_storage(client, view, samples)
