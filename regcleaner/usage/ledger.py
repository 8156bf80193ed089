"""The per-blob counts behind ``regcleaner usage``, spilled to a temporary SQLite file.

Exclusive and reclaimable bytes need, for every blob, how many repositories reference
it; held in memory that would grow with the registry. Here each blob is one row: its
size in storage, how many repositories reference it, the first of them (the owner, the
only one while the count is 1), whether the owner's kept manifests reference it, and
whether any repository's kept manifests do. A repository's own sets are in memory only
while it is added, so memory follows the largest repository, as in ``clean``.

Blobs are keyed by the first 64 bits of their digest (``regcleaner.keyset.blob_key``, the
key the collector marks with): by the birthday bound two blobs of a registry of a
million share one with a chance of about 1 in 37 million, and a collision moves the
numbers by one blob.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from regcleaner.usage.model import RepositoryUsage, UsageTotals

_SCHEMA = """
CREATE TABLE repository (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    tags INTEGER NOT NULL, manifests INTEGER NOT NULL, untagged_manifests INTEGER NOT NULL,
    deletable_manifests INTEGER NOT NULL,
    referenced_bytes INTEGER NOT NULL, referenced_blobs INTEGER NOT NULL,
    missing_blobs INTEGER NOT NULL, blocked INTEGER NOT NULL, error TEXT,
    exclusive_bytes INTEGER NOT NULL DEFAULT 0, exclusive_blobs INTEGER NOT NULL DEFAULT 0,
    reclaimable_bytes INTEGER NOT NULL DEFAULT 0, reclaimable_blobs INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE blob (
    key INTEGER PRIMARY KEY, size INTEGER,
    refs INTEGER NOT NULL DEFAULT 0, owner INTEGER,
    owner_kept INTEGER NOT NULL DEFAULT 0, kept_any INTEGER NOT NULL DEFAULT 0
);
CREATE TEMP TABLE adding (key INTEGER PRIMARY KEY, kept INTEGER NOT NULL);
"""
# Rows written between commits: one transaction over many repositories keeps hot pages
# in SQLite's cache.
_COMMIT_ROWS = 200_000
_COLUMNS = (
    "name", "tags", "manifests", "untagged_manifests", "deletable_manifests",
    "referenced_bytes", "referenced_blobs", "exclusive_bytes", "exclusive_blobs",
    "reclaimable_bytes", "reclaimable_blobs", "missing_blobs", "blocked", "error",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RepositoryCounts:
    """What a repository's scan found, before the cross-repository numbers exist."""

    name: str
    tags: int = 0
    manifests: int = 0
    untagged_manifests: int = 0
    deletable_manifests: int = 0
    blocked: bool = False
    error: str | None = None


class UsageLedger:
    """Blobs, then repositories, are added; ``settle`` computes the shared numbers."""

    def __init__(self) -> None:
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as self
            prefix="regcleaner-usage-", suffix=".sqlite"
        )
        self._db = sqlite3.connect(self._file.name, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;" + _SCHEMA
        )
        self._uncommitted = 0
        self._db.execute("BEGIN")
        self._settled: UsageTotals | None = None

    def close(self) -> None:
        """Drop the temporary database."""
        self._db.close()
        self._file.close()

    def _written(self, rows: int) -> None:
        self._uncommitted += rows
        if self._uncommitted >= _COMMIT_ROWS:
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            self._uncommitted = 0

    def add_blobs(self, blobs: Iterable[tuple[int, int]]) -> None:
        """Blobs found in storage: (key, size in bytes)."""
        rows = list(blobs)
        self._db.executemany(
            "INSERT INTO blob (key, size) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET size = excluded.size",
            rows,
        )
        self._written(len(rows))

    def add_repository(
        self, counts: RepositoryCounts, referenced: set[int], kept: set[int]
    ) -> None:
        """One repository: the keys of the blobs its revisions reference, and of those
        its kept revisions (after a clean) still reference (a subset)."""
        db = self._db
        rows = [(key, int(key in kept)) for key in referenced]
        db.executemany("INSERT INTO adding (key, kept) VALUES (?, ?)", rows)
        size, found, missing = db.execute(
            "SELECT COALESCE(SUM(b.size), 0), COUNT(b.size), COUNT(*) - COUNT(b.size) "
            "FROM adding a LEFT JOIN blob b ON b.key = a.key"
        ).fetchone()
        repository_id = db.execute(
            "INSERT INTO repository (name, tags, manifests, untagged_manifests, "
            "deletable_manifests, referenced_bytes, referenced_blobs, missing_blobs, blocked, "
            "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (counts.name, counts.tags, counts.manifests, counts.untagged_manifests,
             counts.deletable_manifests, int(size), int(found) + int(missing), int(missing),
             int(counts.blocked), counts.error),
        ).lastrowid  # fmt: skip
        db.execute("INSERT OR IGNORE INTO blob (key) SELECT key FROM adding")
        # One update per key by its primary key: an UPDATE ... FROM the temporary table
        # would scan every blob for every repository (quadratic in the registry).
        db.executemany(
            "UPDATE blob SET refs = refs + 1, "
            "owner = CASE WHEN refs = 0 THEN ? ELSE owner END, "
            "owner_kept = CASE WHEN refs = 0 THEN ? ELSE owner_kept END, "
            "kept_any = MAX(kept_any, ?) WHERE key = ?",
            [(repository_id, flag, flag, key) for key, flag in rows],
        )
        db.execute("DELETE FROM adding")
        self._written(2 * len(referenced) + 1)

    def settle(self) -> UsageTotals:
        """Compute every repository's exclusive and reclaimable numbers, and the totals."""
        if self._settled is not None:
            return self._settled
        db = self._db
        db.execute(
            "UPDATE repository SET exclusive_bytes = x.eb, exclusive_blobs = x.en, "
            "reclaimable_bytes = x.rb, reclaimable_blobs = x.rn FROM ("
            "  SELECT owner, SUM(COALESCE(size, 0)) AS eb, COUNT(*) AS en,"
            "  SUM(CASE WHEN owner_kept = 0 THEN COALESCE(size, 0) ELSE 0 END) AS rb,"
            "  SUM(owner_kept = 0) AS rn"
            "  FROM blob WHERE refs = 1 GROUP BY owner"
            ") AS x WHERE repository.id = x.owner"
        )
        if db.in_transaction:
            db.execute("COMMIT")
        row = db.execute(
            "SELECT COUNT(size), COALESCE(SUM(size), 0),"
            " COALESCE(SUM(refs > 0), 0), COALESCE(SUM(CASE WHEN refs > 0 THEN size END), 0),"
            " COALESCE(SUM(refs > 1), 0), COALESCE(SUM(CASE WHEN refs > 1 THEN size END), 0),"
            " COALESCE(SUM(refs = 0 AND size IS NOT NULL), 0),"
            " COALESCE(SUM(CASE WHEN refs = 0 THEN size END), 0),"
            " COALESCE(SUM(refs > 0 AND kept_any = 0), 0),"
            " COALESCE(SUM(CASE WHEN refs > 0 AND kept_any = 0 THEN size END), 0),"
            " COALESCE(SUM(size IS NULL), 0)"
            " FROM blob"
        ).fetchone()
        repositories, tags, manifests, alone = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(tags), 0), COALESCE(SUM(manifests), 0),"
            " COALESCE(SUM(reclaimable_bytes), 0) FROM repository"
        ).fetchone()
        values = [int(v) for v in row]
        self._settled = UsageTotals(
            repositories=int(repositories), tags=int(tags), manifests=int(manifests),
            blobs=values[0], blob_bytes=values[1],
            referenced_blobs=values[2], referenced_bytes=values[3],
            shared_blobs=values[4], shared_bytes=values[5],
            orphaned_blobs=values[6], orphaned_bytes=values[7],
            reclaimable_blobs=values[8], reclaimable_bytes=values[9],
            reclaimable_shared_bytes=values[9] - int(alone),
            missing_blobs=values[10],
        )  # fmt: skip
        return self._settled

    def repositories(self, column: str = "referenced_bytes", *, descending: bool = True
                     ) -> Iterator[RepositoryUsage]:  # fmt: skip
        """Every repository, sorted by ``column`` (ties by name), read from the file a
        page at a time (never all in memory)."""
        if column not in _COLUMNS:
            raise ValueError(f"unknown column {column!r}")
        self.settle()
        direction = "DESC" if descending else "ASC"
        order = f"{column} {direction}, name ASC" if column != "name" else f"name {direction}"
        cursor = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM repository ORDER BY {order}")  # noqa: S608 - whitelisted column
        while rows := cursor.fetchmany(1000):
            for r in rows:
                yield RepositoryUsage(
                    name=r[0], tags=r[1], manifests=r[2], untagged_manifests=r[3],
                    deletable_manifests=r[4], referenced_bytes=r[5], referenced_blobs=r[6],
                    exclusive_bytes=r[7], exclusive_blobs=r[8], reclaimable_bytes=r[9],
                    reclaimable_blobs=r[10], missing_blobs=r[11], blocked=bool(r[12]),
                    error=r[13],
                )  # fmt: skip
