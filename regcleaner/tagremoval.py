"""Removing one tag through the registry API, where the registry can.

distribution 3 answers ``DELETE /v2/<name>/manifests/<tag>`` by removing that tag's
folder alone (202; 404 ``MANIFEST_UNKNOWN`` for a tag it does not have); 2.8 refuses
every tag reference with 400 ``DIGEST_INVALID`` and changes nothing (both measured
against 2.8.2 and 3.1.1, see docs/registries.md). So one DELETE of a tag that cannot
exist tells them apart without changing anything on either: a registry that answers
anything else is treated as 2.8 (an expired tag then goes only with its digest, as
before), never guessed towards removing more.

Each removal first asks where the tag points (HEAD by tag) and sends the DELETE only if
it still names the digest the plan expired; a tag pushed again since the plan stays.
Between that HEAD and the DELETE (one round trip) a push of the same tag would be
lost with it: docs/safety.md states this window.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence

from regcleaner.digest import Digest
from regcleaner.errors import RegistryError
from regcleaner.registry.client import RegistryClient
from regcleaner.removers.base import GONE_BEFORE_REMOVAL, MOVED_SINCE_PLAN

log = logging.getLogger(__name__)

PROBE_TAG_PREFIX = "regcleaner-tag-delete-probe-"


async def registry_deletes_tags(client: RegistryClient, repository: str) -> bool:
    """True if the registry removes a single tag on ``DELETE .../manifests/<tag>``
    (distribution 3), found by deleting a tag that does not exist in ``repository``."""
    probe = PROBE_TAG_PREFIX + secrets.token_hex(8)
    try:
        response = await client.delete_tag(repository, probe)
    except RegistryError as exc:
        log.warning("could not tell whether the registry deletes single tags (%s): "
                    "expired tags go only with their digest", exc)  # fmt: skip
        return False
    if response.status == 404 and response.error_code == "MANIFEST_UNKNOWN":
        log.info("the registry deletes single tags (DELETE by tag): an expired tag goes "
                 "alone, its digest stays for its other tags")  # fmt: skip
        return True
    if response.status == 400 and response.error_code == "DIGEST_INVALID":
        log.info("the registry deletes no single tag (distribution 2.8): an expired tag "
                 "goes only with its digest")  # fmt: skip
    else:
        log.warning("a DELETE by tag answered %d %s: treating the registry as one that "
                    "deletes no single tag", response.status, response.error_code)  # fmt: skip
    return False


async def remove_tags_through_api(
    client: RegistryClient,
    repository: str,
    tags: Sequence[tuple[str, Digest]],
    *,
    stopped: Callable[[], str | None],
) -> dict[str, str | None]:
    """Remove each tag that still points at its digest; per tag None when removed, else
    why it stays (the remover protocol's ``remove_tags``). ``stopped`` gives why no
    request may start any more (a stop), or None."""
    outcome: dict[str, str | None] = {}
    for tag, expected in tags:
        why = stopped()
        if why is not None:
            outcome[tag] = why
            continue
        try:
            now = await client.head_tag(repository, tag)
            if now.status == 404:
                outcome[tag] = GONE_BEFORE_REMOVAL
                continue
            if now.status != 200 or not now.digest:
                outcome[tag] = f"cannot re-read the tag: HEAD answered {now.status}"
                continue
            if now.digest != expected:
                outcome[tag] = f"{MOVED_SINCE_PLAN}{now.digest}"
                continue
            response = await client.delete_tag(repository, tag)
        except RegistryError as exc:
            outcome[tag] = f"tag removal failed: {exc}"
            continue
        if response.status == 202:
            outcome[tag] = None
        elif response.status == 404:
            outcome[tag] = GONE_BEFORE_REMOVAL
        else:
            code = f" {response.error_code}" if response.error_code else ""
            outcome[tag] = f"DELETE by tag answered {response.status}{code}"
    return outcome
