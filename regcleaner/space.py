"""What ``registry garbage-collect`` will free once the deletions are done.

A blob is freed when the manifests deleted here reference it and no kept manifest, in
any repository scanned, does. Each blob is counted once, and charged to the first
repository whose deletions free it. Sizes come from the manifests' descriptors; the
manifest JSON is a blob too. Repositories left out of the run (``--include``,
``--exclude``, ``--shard``) may share layers, so the estimate is then an upper bound;
blobs that were already orphaned before the run are not counted (a lower bound there).

The answer needs every repository's blobs at once, so the sets spill to a temporary
SQLite file instead of memory: the run's memory stays bounded by the largest
repository, whatever the size of the registry. A blob is keyed by the first 64 bits of
its sha256 (an integer key is the cheapest SQLite can index): by the birthday bound,
two distinct blobs of one registry share those bits with a chance of about 1 in 37
million at a million blobs (1 in 370,000 at ten million), and a collision would only
move the estimate by one blob.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping

from regcleaner.digest import Digest
from regcleaner.manifests import ManifestInfo, ManifestRefs

_SCHEMA = """
CREATE TABLE repository (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE candidate (blob INTEGER PRIMARY KEY, size INTEGER NOT NULL,
                        repository INTEGER NOT NULL);
CREATE TABLE kept (blob INTEGER PRIMARY KEY);
"""
_SIGNED = 1 << 63
# Rows written between commits: one transaction for many repositories keeps hot pages
# in SQLite's cache instead of writing them out after every repository.
_COMMIT_ROWS = 200_000


def _key(digest: str) -> int:
    """A signed 64-bit key: the digest's first 16 hex digits (a hash for other algorithms)."""
    if digest.startswith("sha256:"):
        try:
            return int(digest[7:23], 16) - _SIGNED
        except ValueError:
            pass
    return int.from_bytes(hashlib.sha256(digest.encode()).digest()[:8], "big") - _SIGNED


class SpaceEstimate:
    """Accumulates, repository by repository, and settles at the end of the run."""

    def __init__(self) -> None:
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as self
            prefix="regcleaner-space-", suffix=".sqlite"
        )
        self._db = sqlite3.connect(self._file.name, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;" + _SCHEMA
        )
        self._uncommitted = 0
        self._db.execute("BEGIN")

    def close(self) -> None:
        """Drop the temporary database."""
        self._db.close()
        self._file.close()

    def add_repository(
        self,
        repository: str,
        deleted: Iterable[Digest],
        kept: Iterable[Digest],
        manifests: Mapping[Digest, ManifestInfo],
    ) -> None:
        """Record one repository's deleted (or would-be deleted) and kept manifests."""
        kept_blobs: set[int] = set()
        for digest in kept:
            kept_blobs.add(_key(digest))
            info = manifests.get(digest)
            if isinstance(info, ManifestRefs):
                kept_blobs.update(_key(blob.digest) for blob in info.blobs)
        freed: dict[int, int] = {}  # blob -> size (0 when unknown)
        for digest in deleted:
            info = manifests.get(digest)
            if not isinstance(info, ManifestRefs):
                freed.setdefault(_key(digest), 0)
                continue
            for blob, size in ((digest, info.size), *((b.digest, b.size) for b in info.blobs)):
                key = _key(blob)
                if not freed.get(key):  # the first size known wins
                    freed[key] = size
        db = self._db
        repository_id = db.execute(
            "INSERT INTO repository (name) VALUES (?)", (repository,)
        ).lastrowid
        db.executemany(
            "INSERT OR IGNORE INTO kept (blob) VALUES (?)", [(blob,) for blob in kept_blobs]
        )
        db.executemany(
            "INSERT INTO candidate (blob, size, repository) VALUES (?, ?, ?) "
            "ON CONFLICT (blob) DO UPDATE SET size = excluded.size WHERE candidate.size = 0",
            [(blob, size, repository_id) for blob, size in freed.items()],
        )
        self._uncommitted += len(kept_blobs) + len(freed)
        if self._uncommitted >= _COMMIT_ROWS:
            db.execute("COMMIT")
            db.execute("BEGIN")
            self._uncommitted = 0

    def settle(self) -> tuple[int, int, list[tuple[str, int]]]:
        """(bytes freed, blobs freed, per repository largest first)."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        rows = self._db.execute(
            "SELECT r.name, SUM(c.size), COUNT(*) FROM candidate c "
            "JOIN repository r ON r.id = c.repository "
            "WHERE NOT EXISTS (SELECT 1 FROM kept k WHERE k.blob = c.blob) "
            "GROUP BY c.repository ORDER BY SUM(c.size) DESC, r.name"
        ).fetchall()
        total = sum(int(size) for _, size, _ in rows)
        count = sum(int(n) for _, _, n in rows)
        return total, count, [(str(name), int(size)) for name, size, _ in rows]


def human_bytes(count: int) -> str:
    """1536 → '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
