"""The registry's notification envelope, read into the manifest pulls it reports.

distribution sends ``{"events": [...]}`` (``application/vnd.docker.distribution.events.v1+json``
from 2.8, ``...events.v2+json`` from 3.x; the body is the same). Each event has ``action``,
``timestamp`` (RFC 3339, nanoseconds) and ``target`` with ``repository``, ``digest``,
``mediaType``, ``url`` and, when the request named a tag, ``tag``; ``request.method`` says
GET or HEAD. Only manifest GETs count as pulls: blob pulls follow a manifest pull anyway,
and HEADs are what update checkers (and cleanup tools) send without pulling anything.

An envelope is read whole before anything is recorded: one malformed event that we would
record rejects the envelope (the registry then retries it). Events we do not record (pushes,
deletes, mounts, blob pulls, HEADs) are not validated beyond being objects, so an unusual
field in them never blocks the registry's queue.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from regcleaner.mediatypes import ALL_MANIFEST_TYPES

_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# distribution's reference grammar for a repository name (path components joined by /).
_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_MANIFEST_TYPES = frozenset(ALL_MANIFEST_TYPES)
# RFC 3339 as Go writes it: up to nine fractional digits, Z or an offset.
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


class EnvelopeError(ValueError):
    """The envelope is not one the registry sends; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ManifestPull:
    """One manifest pull: by tag (``tag`` set, ``digest`` the one served) or by digest.

    ``digest`` is None only for access-log lines of pulls by tag (the log does not say
    which digest the tag resolved to).
    """

    repository: str
    digest: str | None
    tag: str | None
    at: float
    """Seconds since the epoch (UTC) when the registry served it."""


def parse_timestamp(text: str) -> float:
    """Go's RFC 3339 (nanosecond) timestamp → seconds since the epoch."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:60]!r}")
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = datetime.fromisoformat(base.replace("t", "T") + zone)
    return moment.timestamp() + (int(fraction.ljust(9, "0")) / 1e9 if fraction else 0.0)


def valid_repository(name: str) -> bool:
    """Whether ``name`` is a repository name the registry accepts (at most 255 chars)."""
    return len(name) <= 255 and _REPOSITORY.fullmatch(name) is not None


def valid_digest(text: str) -> bool:
    """Whether ``text`` looks like ``algorithm:hex`` as distribution's digests do."""
    return len(text) <= 256 and _DIGEST.fullmatch(text) is not None


def valid_tag(text: str) -> bool:
    """Whether ``text`` is a tag as distribution's reference grammar allows."""
    return _TAG.fullmatch(text) is not None


def is_manifest_pull(event: dict[str, Any]) -> bool:
    """A GET of a manifest (not a blob, not a HEAD)."""
    if event.get("action") != "pull":
        return False
    request = event.get("request")
    if isinstance(request, dict) and str(request.get("method", "GET")).upper() != "GET":
        return False
    target = event.get("target")
    if not isinstance(target, dict):
        return True  # validated (and refused) by the caller
    url = target.get("url")
    if isinstance(url, str) and url:
        return "/manifests/" in url
    if target.get("tag"):
        return True  # only manifests are fetched by tag
    media_type = target.get("mediaType")
    if media_type in _MANIFEST_TYPES or not isinstance(media_type, str):
        return True
    # distribution labels blob events application/octet-stream; other senders may use the
    # descriptor's type (a layer or a config).
    return not (
        media_type == "application/octet-stream"
        or ".layer." in media_type
        or "config" in media_type
    )


def _pull_from_event(event: dict[str, Any], where: str) -> ManifestPull:
    target = event.get("target")
    if not isinstance(target, dict):
        raise EnvelopeError(f"{where}.target: missing or not an object")
    repository = target.get("repository")
    if not isinstance(repository, str) or not valid_repository(repository):
        raise EnvelopeError(f"{where}.target.repository: missing or not a repository name")
    digest = target.get("digest")
    if not isinstance(digest, str) or not valid_digest(digest):
        raise EnvelopeError(f"{where}.target.digest: missing or not a digest")
    tag = target.get("tag")
    if tag in (None, ""):
        tag = None
    elif not isinstance(tag, str) or not valid_tag(tag):
        raise EnvelopeError(f"{where}.target.tag: not a tag")
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, str):
        raise EnvelopeError(f"{where}.timestamp: missing or not a string")
    try:
        at = parse_timestamp(timestamp)
    except ValueError as exc:
        raise EnvelopeError(f"{where}.timestamp: {exc}") from None
    return ManifestPull(repository, digest, tag, at)


def parse_envelope(body: bytes) -> tuple[list[ManifestPull], int]:
    """The manifest pulls in ``body`` and the number of events it holds; EnvelopeError
    if the body is not an envelope or a manifest pull in it is malformed."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EnvelopeError("not an envelope: expected an object with 'events'")
    events = document.get("events")
    if not isinstance(events, list):
        raise EnvelopeError("events: missing or not a list")
    pulls: list[ManifestPull] = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise EnvelopeError(f"{where}: not an object")
        if is_manifest_pull(event):
            pulls.append(_pull_from_event(event, where))
    return pulls, len(events)
