"""The registry's logs, read into the manifest pulls they show (``events import-log``).

Two kinds of line, in 2.8.2 and 3.1.1 alike, anywhere in a line (container runtimes add
prefixes):
- the access log (Apache combined format, one a request, on by default):
  ``1.2.3.4 - - [07/Dec/2026:04:54:38 +0000] "GET /v2/team/app/manifests/v1 HTTP/1.1" 200 422 ...``
- the request log (``msg="response completed"``, logrus text, or JSON with
  ``log.formatter: json``), with ``http.request.method``, ``http.request.uri``,
  ``http.response.status`` and a nanosecond ``time``.

A pull is a GET of ``/v2/<name>/manifests/<reference>`` answered 200. HEAD is not a pull
(update checkers and cleanup tools send HEADs without pulling), the same rule as for
notifications. A log does not say which digest a tag served: a pull by tag is recorded
for the tag only (``digest`` None); a pull by digest is recorded for the digest. When both
kinds of line log the same request it is recorded twice at the same time, which changes
nothing (the later time wins).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from regcleaner.events.envelope import (
    ManifestPull,
    parse_timestamp,
    valid_digest,
    valid_repository,
    valid_tag,
)

_COMBINED = re.compile(
    r"\[(\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "
    r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) '
)
_LOGFMT_PAIR = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass(frozen=True, slots=True)
class LogLine:
    """One request a log line shows."""

    method: str
    uri: str
    status: int
    at: float


def _combined(line: str) -> LogLine | None:
    match = _COMBINED.search(line)
    if match is None:
        return None
    when, method, uri, status = match.groups()
    at = datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    return LogLine(method, uri, int(status), at)


def _request_fields(line: str) -> dict[str, Any] | None:
    brace = line.find("{")
    if brace >= 0 and "response completed" in line:
        try:
            document = json.loads(line[brace:])
        except json.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            return document
    if 'msg="response completed"' not in line:
        return None
    fields: dict[str, Any] = {}
    for key, raw in _LOGFMT_PAIR.findall(line):
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raw = raw.strip('"')
        fields[key] = raw
    return fields


def _request_log(line: str) -> LogLine | None:
    fields = _request_fields(line)
    if fields is None:
        return None
    method, uri = fields.get("http.request.method"), fields.get("http.request.uri")
    status, when = fields.get("http.response.status"), fields.get("time")
    if not (isinstance(method, str) and isinstance(uri, str) and isinstance(when, str)):
        return None
    try:
        return LogLine(method, uri, int(status), parse_timestamp(when))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse_line(line: str) -> LogLine | None:
    """The request one log line shows, or None for any other line."""
    return _combined(line) or _request_log(line)


def pull_from_line(line: LogLine) -> ManifestPull | None:
    """The manifest pull ``line`` shows: a GET of a manifest answered 200."""
    if line.method != "GET" or line.status != 200:
        return None
    path = unquote(urlsplit(line.uri).path)
    name, marker, reference = path.removeprefix("/v2/").rpartition("/manifests/")
    if not marker or not path.startswith("/v2/") or not valid_repository(name):
        return None
    if valid_digest(reference):
        return ManifestPull(name, reference, None, line.at)
    if valid_tag(reference):
        return ManifestPull(name, None, reference, line.at)
    return None


@dataclass(slots=True)
class LogSummary:
    """What one import read: lines, pulls, and the span of time the requests cover."""

    lines: int = 0
    requests: int = 0
    pulls: int = 0
    first: float | None = None
    last: float | None = None

    def saw(self, at: float) -> None:
        self.first = at if self.first is None else min(self.first, at)
        self.last = at if self.last is None else max(self.last, at)


def _open(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def read_pulls(path: Path, summary: LogSummary) -> Iterator[ManifestPull]:
    """The manifest pulls in one log file (plain or gzip), counted into ``summary``."""
    with _open(path) as stream:
        for text in stream:
            summary.lines += 1
            line = parse_line(text)
            if line is None:
                continue
            summary.requests += 1
            summary.saw(line.at)
            pull = pull_from_line(line)
            if pull is not None:
                summary.pulls += 1
                yield pull
