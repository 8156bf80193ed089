"""What ``registry garbage-collect`` will free once the deletions are done.

A blob is freed when the manifests deleted here reference it and no kept manifest, in
any repository scanned, does. Each blob is counted once, and charged to the first
repository whose deletions free it. Sizes come from the manifests' descriptors; the
manifest JSON is a blob too. Repositories left out of the run (``--include``,
``--exclude``, ``--shard``) may share layers, so the estimate is then an upper bound;
blobs that were already orphaned before the run are not counted (a lower bound there).

The answer needs every repository's blobs at once, so the sets spill to a temporary
SQLite file instead of memory: the run's memory stays bounded by the largest
repository, whatever the size of the registry.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Mapping

from regcleaner.digest import Digest
from regcleaner.manifests import ManifestRefs
from regcleaner.planner import ManifestInfo

_SCHEMA = """
CREATE TABLE repository (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE candidate (blob BLOB PRIMARY KEY, size INTEGER NOT NULL,
                        repository INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE kept (blob BLOB PRIMARY KEY) WITHOUT ROWID;
"""


def _key(digest: str) -> bytes:
    """32 bytes instead of a 71-character string; non-sha256 digests keep their text."""
    if digest.startswith("sha256:") and len(digest) == 71:
        return bytes.fromhex(digest[7:])
    return digest.encode()


def _blobs_of(digest: Digest, info: ManifestInfo | None) -> list[tuple[bytes, int]]:
    if not isinstance(info, ManifestRefs):
        return [(_key(digest), 0)]
    return [
        (_key(digest), info.size),
        *((_key(b), s) for b, s in zip(info.blobs, info.blob_sizes, strict=False)),
    ]


class SpaceEstimate:
    """Accumulates, repository by repository, and settles at the end of the run."""

    def __init__(self) -> None:
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as self
            prefix="regcleaner-space-", suffix=".sqlite"
        )
        self._db = sqlite3.connect(self._file.name, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4096;" + _SCHEMA
        )

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
        db = self._db
        db.execute("BEGIN")
        repository_id = db.execute(
            "INSERT INTO repository (name) VALUES (?)", (repository,)
        ).lastrowid
        db.executemany(
            "INSERT OR IGNORE INTO kept (blob) VALUES (?)",
            ((blob,) for digest in kept for blob, _ in _blobs_of(digest, manifests.get(digest))),
        )
        db.executemany(
            "INSERT INTO candidate (blob, size, repository) VALUES (?, ?, ?) "
            "ON CONFLICT (blob) DO UPDATE SET size = excluded.size WHERE candidate.size = 0",
            (
                (blob, size, repository_id)
                for digest in deleted
                for blob, size in _blobs_of(digest, manifests.get(digest))
            ),
        )
        db.execute("COMMIT")

    def settle(self) -> tuple[int, int, list[tuple[str, int]]]:
        """(bytes freed, blobs freed, per repository largest first)."""
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
