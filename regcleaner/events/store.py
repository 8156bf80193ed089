"""The pull record: one SQLite file, written by ``events serve`` and ``events import-log``,
read by retention through ``PullHistory``.

Tables:
- ``pulls_by_digest(repository, digest, last_pull)``: the last pull of a manifest, by tag
  or by digest;
- ``pulls_by_tag(repository, tag, last_pull, digest)``: the last pull by that tag and the
  digest it served (NULL when only an access log saw it: the log does not say);
- ``meta``: ``recording_since`` (when the service accepted its first envelope: the start
  of coverage; a service up before the registry was told about it covers nothing) and
  ``schema``.

Writes keep the later time (``max``), so a retried or out-of-order event never moves a last
pull back. The file is in WAL mode with ``synchronous=FULL``: a commit has reached the disk
when it returns, which is what lets the service answer the registry only afterwards.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regcleaner.errors import ConfigError
from regcleaner.events.envelope import ManifestPull

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pulls_by_digest (
    repository TEXT NOT NULL, digest TEXT NOT NULL, last_pull REAL NOT NULL,
    PRIMARY KEY (repository, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pulls_by_tag (
    repository TEXT NOT NULL, tag TEXT NOT NULL, last_pull REAL NOT NULL, digest TEXT,
    PRIMARY KEY (repository, tag)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

_UPSERT_DIGEST = """
INSERT INTO pulls_by_digest (repository, digest, last_pull) VALUES (?, ?, ?)
ON CONFLICT (repository, digest) DO UPDATE SET last_pull = max(last_pull, excluded.last_pull)
"""
# SET expressions read the row's old values, so digest follows the later pull only; a log
# line (digest NULL) never erases the digest an event recorded.
_UPSERT_TAG = """
INSERT INTO pulls_by_tag (repository, tag, last_pull, digest) VALUES (?, ?, ?, ?)
ON CONFLICT (repository, tag) DO UPDATE SET
    digest = CASE WHEN excluded.last_pull >= last_pull AND excluded.digest IS NOT NULL
                  THEN excluded.digest ELSE digest END,
    last_pull = max(last_pull, excluded.last_pull)
"""


class PullStoreError(ConfigError):
    """The pull record given (``--db``, ``--pulls-db``) cannot be opened or is not one
    regcleaner wrote: the operator's file, so a usage error (exit 2)."""


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 10000")
        return connection
    except (sqlite3.Error, OSError) as exc:
        raise PullStoreError(f"{path}: cannot open the pull record: {exc}") from None


def merge_pulls(pulls: Iterable[ManifestPull]) -> tuple[
    dict[tuple[str, str], float], dict[tuple[str, str], tuple[float, str | None]]
]:  # fmt: skip
    """The latest pull per (repository, digest) and per (repository, tag) in ``pulls``: a
    batch writes each row once."""
    by_digest: dict[tuple[str, str], float] = {}
    by_tag: dict[tuple[str, str], tuple[float, str | None]] = {}
    for pull in pulls:
        if pull.digest is not None:
            key = (pull.repository, pull.digest)
            if by_digest.get(key, -1.0) < pull.at:
                by_digest[key] = pull.at
        if pull.tag is not None:
            tag_key = (pull.repository, pull.tag)
            known = by_tag.get(tag_key)
            if known is None or known[0] < pull.at or (known[0] == pull.at and known[1] is None):
                by_tag[tag_key] = (pull.at, pull.digest)
    return by_digest, by_tag


class PullStore:
    """The writable pull record. One writer at a time (the service's commit thread, or an
    import); each ``record`` is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection = _connect(path, readonly=False)
        try:
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = FULL")
            self._connection.executescript(_SCHEMA)
            found = self._meta("schema")
            if found is None:
                self._set_meta("schema", SCHEMA_VERSION)
            elif found != SCHEMA_VERSION:
                raise PullStoreError(
                    f"{path}: pull record schema {found}, this regcleaner reads {SCHEMA_VERSION}"
                )
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            raise PullStoreError(f"{path}: not a pull record: {exc}") from None

    def _meta(self, key: str) -> str | None:
        row = self._connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._connection.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def recording_since(self) -> float | None:
        """Since when pulls have been recorded (None: the service never started)."""
        known = self._meta("recording_since")
        return None if known is None else float(known)

    def mark_recording_started(self, now: float | None = None) -> float:
        """Set ``recording_since`` to ``now`` unless it is set already; return its value."""
        known = self._meta("recording_since")
        if known is not None:
            return float(known)
        started = time.time() if now is None else now
        self._set_meta("recording_since", repr(started))
        return started

    def extend_coverage(self, since: float) -> float | None:
        """Move ``recording_since`` back to ``since`` (a complete access log reaching the
        service's start covers the time before it). Returns the new start, or None when the
        service has not started recording yet (a log alone never proves an absence)."""
        known = self._meta("recording_since")
        if known is None:
            return None
        start = min(float(known), since)
        self._set_meta("recording_since", repr(start))
        return start

    def record(self, pulls: Iterable[ManifestPull], *, started_at: float | None = None) -> int:
        """Write ``pulls`` in one transaction (all or nothing); the number of rows written.

        ``started_at``: also set ``recording_since`` to it, in the same transaction, unless
        it is set already (the service's first envelope).
        """
        by_digest, by_tag = merge_pulls(pulls)
        if not by_digest and not by_tag and started_at is None:
            return 0
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                _UPSERT_DIGEST, [(repo, digest, at) for (repo, digest), at in by_digest.items()]
            )
            connection.executemany(
                _UPSERT_TAG,
                [(repo, tag, at, digest) for (repo, tag), (at, digest) in by_tag.items()],
            )
            if started_at is not None:
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('recording_since', ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (repr(started_at),),
                )
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return len(by_digest) + len(by_tag)

    def close(self) -> None:
        """Close the file (a WAL checkpoint happens on the last close)."""
        self._connection.close()


@dataclass(frozen=True, slots=True)
class TagPull:
    """The last pull by one tag, and the digest it served (None: seen in an access log)."""

    at: float
    digest: str | None


class PullHistory:
    """The read side retention uses: last pulls and since when recording has covered.

    Opened read-only: a retention run never writes the record, and may run while the
    service writes (WAL readers do not block the writer).
    """

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise PullStoreError(
                f"{path}: no pull record here (start `regcleaner events serve --db {path}`)"
            )
        self.path = path
        self._connection = _connect(path, readonly=True)
        try:
            row = self._connection.execute(
                "SELECT value FROM meta WHERE key = 'recording_since'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            raise PullStoreError(f"{path}: not a pull record: {exc}") from None
        self.covered_since: float | None = None if row is None else float(row[0])
        """Since when every pull the registry served has been recorded; None: never."""

    def _all(self, sql: str, parameters: tuple[str, ...]) -> list[Any]:
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise PullStoreError(f"{self.path}: cannot read the pull record: {exc}") from None

    def _one(self, sql: str, parameters: tuple[str, ...]) -> Any:
        rows = self._all(sql, parameters)
        return rows[0] if rows else None

    def last_pull(self, repository: str, digest: str) -> float | None:
        """When ``digest`` was last pulled from ``repository`` (by any tag or by digest)."""
        row = self._one(
            "SELECT last_pull FROM pulls_by_digest WHERE repository = ? AND digest = ?",
            (repository, digest),
        )
        return None if row is None else float(row[0])

    def last_tag_pull(self, repository: str, tag: str) -> TagPull | None:
        """The last pull by ``tag`` in ``repository``."""
        row = self._one(
            "SELECT last_pull, digest FROM pulls_by_tag WHERE repository = ? AND tag = ?",
            (repository, tag),
        )
        return None if row is None else TagPull(float(row[0]), row[1])

    def repository_pulls(self, repository: str) -> dict[str, float]:
        """Every recorded digest of ``repository`` with its last pull (one query per
        repository, for a planner that looks at all its digests)."""
        rows = self._all(
            "SELECT digest, last_pull FROM pulls_by_digest WHERE repository = ?", (repository,)
        )
        return {str(digest): float(at) for digest, at in rows}

    def repository_tag_pulls(self, repository: str) -> dict[str, TagPull]:
        """Every recorded tag of ``repository`` with its last pull."""
        rows = self._all(
            "SELECT tag, last_pull, digest FROM pulls_by_tag WHERE repository = ?", (repository,)
        )
        return {str(tag): TagPull(float(at), digest) for tag, at, digest in rows}

    def last_pull_by_repository(self) -> dict[str, float]:
        """The last pull of anything in each repository (for the usage report)."""
        rows = self._all(
            "SELECT repository, max(at) FROM (SELECT repository, last_pull AS at FROM "
            "pulls_by_digest UNION ALL SELECT repository, last_pull FROM pulls_by_tag) "
            "GROUP BY repository",
            (),
        )
        return {str(repository): float(at) for repository, at in rows}

    def close(self) -> None:
        """Close the file."""
        self._connection.close()

    def __enter__(self) -> PullHistory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
