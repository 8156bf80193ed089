"""The scan cache: what a run read that cannot change unseen, kept in one SQLite file so
that the next run reads only what changed.

It holds two things, both keyed so that a change is seen without reading the bytes:

- per manifest digest, what its bytes say (``ManifestRefs``: kind, mediaType,
  children, subject, blobs with sizes, its own size), with the validator of the blob
  it was read from (S3 ETag, or mtime and size on a disk). Content-addressed: the
  digest says what the bytes must be, and the validator says they are still the
  bytes that were verified against it;
- per link file (a tag's ``current/link``, a revision link), its validator and the
  bytes it held.

The cache only ever saves reading (DESIGN.md habit 14). ``RegistryView`` uses an entry
only when a fresh listing or HEAD of the same key gives the same validator; a key that
is gone, changed, or unreadable is read as if there were no cache. What is unreadable
is never stored, so every run reads it again and refuses again. The last look before a
deletion, the push watch and the gate never go through the cache.

A scan cache of this storage written by another version, by code that reads manifests
or decides what to cache differently (``READER``: a hash of those modules' source, so
that an upgrade never trusts what an older reader stored), or found damaged, is started
afresh with a warning. Any other file (another storage's cache, a file that is not a
scan cache, one SQLite cannot read) is left as it is: the run goes on without a cache
and says so (``NotThisCache``). Entries are committed as they are written,
so a run stopped half-way leaves what it read for the next one (resumable).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.resources
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from regcleaner import __version__
from regcleaner.digest import Digest
from regcleaner.manifests import Descriptor, ManifestKind, ManifestRefs

log = logging.getLogger(__name__)

SCHEMA = 1
"""Bumped whenever what is stored, or how a manifest is read, changes meaning."""


def _reader_fingerprint() -> str:
    """A hash of the source of the modules that give cached entries their meaning: how
    a manifest is parsed (as regcleaner and as the registry's garbage-collect read it),
    what a digest is, how entries are stored and when bytes are cached. Any change to
    them makes older caches start afresh, whether or not ``SCHEMA`` was bumped."""
    package = importlib.resources.files("regcleaner")
    digest = hashlib.sha256()
    for name in ("manifests.py", "gomanifest.py", "gojson.py", "mediatypes.py", "digest.py",
                 "scancache.py", "cachedreads.py"):  # fmt: skip
        try:
            digest.update(package.joinpath(name).read_bytes())
        except OSError:  # no source shipped: the version alone tells
            digest.update(b"?")
    return digest.hexdigest()[:16]


READER = _reader_fingerprint()

_CHUNK = 500  # SQLite host parameters a query (well under its limit of 32,766)


_MANIFESTS = "SELECT digest, validator, refs FROM manifests WHERE digest IN (?)"
_LISTED_MANIFESTS = (
    "SELECT m.digest, m.validator, m.refs FROM manifests m JOIN listed l "
    "ON l.digest = m.digest AND l.validator = m.validator WHERE m.digest IN (?)"
)

_LINKS = "SELECT key, validator, data FROM links WHERE key IN (?)"


def validator(etag: str | None, mtime: float, size: int) -> str:
    """A key's validator: the ETag and size where the store gives an ETag (S3), else
    modification time and size (a disk). Equal validators mean equal bytes."""
    if etag:
        return f"e{etag}/{size}"
    return f"m{mtime!r}/{size}"


def _encode(refs: ManifestRefs) -> str:
    return json.dumps(
        [
            refs.kind.value,
            refs.media_type,
            list(refs.children),
            refs.subject,
            [[blob.digest, blob.size] for blob in refs.blobs],
            refs.size,
        ],
        separators=(",", ":"),
    )


_KINDS = {kind.value: kind for kind in ManifestKind}  # Enum's own lookup is slow


def _decode(text: str, descriptors: dict[tuple[str, int], Descriptor]) -> ManifestRefs:
    """A stored entry back to ManifestRefs. ``descriptors`` shares equal descriptors
    between the manifests of one lookup (images of a repository share configs and
    layers): less to build, less to hold."""
    kind, media_type, children, subject, blobs, size = json.loads(text)
    found: list[Descriptor] = []
    for digest, blob_size in blobs:
        key = (digest, blob_size)
        descriptor = descriptors.get(key)
        if descriptor is None:
            descriptor = descriptors[key] = Descriptor(digest, int(blob_size))
        found.append(descriptor)
    return ManifestRefs(
        _KINDS[kind],
        str(media_type),
        tuple(children),
        subject,
        tuple(found),
        int(size),
    )


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class NotThisCache(Exception):
    """``--cache`` names a file that is not a scan cache of this storage: it is left as
    it is (the message says what it is)."""


@dataclass(frozen=True)
class _Verdict:
    foreign: bool
    why: str


class ScanCache:
    """One cache file for one storage. Use ``open`` (it never raises for a bad file)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self.hits = 0
        """Entries used instead of reading (this run)."""
        self.misses = 0
        """Keys looked up and read from storage (not in the cache, or changed)."""

    def counts(self) -> dict[str, int]:
        """For the report: entries used instead of reading, and keys read instead."""
        return {"used": self.hits, "read": self.misses}

    @classmethod
    def open(cls, path: Path, storage: str) -> ScanCache:
        """The cache at ``path`` for the storage that ``describe()`` calls ``storage``.

        A scan cache of this storage written by another version or reader, or found
        damaged, is replaced by an empty one (a warning says why). A file that is not
        a scan cache of this storage (another storage's cache, any other file, one
        SQLite cannot read) is never touched: ``NotThisCache`` says why, and the run
        goes on without a cache. A path where no file can be created raises OSError."""
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            try:  # read-only: closing it checkpoints no one's WAL into their file
                uri = path.resolve().as_uri() + "?mode=ro"
                with contextlib.closing(sqlite3.connect(uri, uri=True)) as probe:
                    verdict = cls._verdict(probe, storage)
            except sqlite3.DatabaseError as exc:
                if exc.sqlite_errorname not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                    raise OSError(f"cannot read it: {exc}") from None  # locked, unreadable
                verdict = _Verdict(foreign=True, why=f"SQLite cannot read it ({exc})")
            if verdict is not None and verdict.foreign:
                raise NotThisCache(verdict.why)
            if verdict is not None:
                log.warning("scan cache %s is started afresh: %s", path, verdict.why)
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        try:
            connection = cls._connect(path)
        except sqlite3.Error as exc:
            raise OSError(f"cannot create it: {exc}") from None
        try:
            cls._create(connection, storage)
        except sqlite3.Error as exc:
            connection.close()
            raise OSError(f"cannot write it: {exc}") from None
        return cls(connection, path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    @staticmethod
    def _verdict(connection: sqlite3.Connection, storage: str) -> _Verdict | None:
        """Why this file cannot serve ``storage`` (None when it can, or holds nothing),
        and whether it is a scan cache of this storage at all (``foreign``: it is not,
        and is left alone). Only reads."""
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if not tables:
            return None
        meta: dict[str, str] = {}
        if "meta" in tables:
            try:
                meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.OperationalError:  # a table of that name, not ours
                meta = {}
        if not {"schema", "version", "storage"} <= meta.keys():
            return _Verdict(foreign=True, why="it is not a regcleaner scan cache")
        if meta["storage"] != storage:
            return _Verdict(foreign=True, why=f"it is the scan cache of {meta['storage']}")
        if meta["schema"] != str(SCHEMA) or meta["version"] != __version__:
            return _Verdict(
                foreign=False,
                why=f"written by regcleaner {meta['version']} (cache schema "
                f"{meta['schema']}), this is {__version__} (schema {SCHEMA})",
            )
        if meta.get("reader") != READER:
            return _Verdict(
                foreign=False,
                why=f"written by code that reads manifests differently (reader "
                f"{meta.get('reader')}, this is {READER})",
            )
        # A file whose pages are damaged can open and answer the meta table: look.
        check = connection.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            return _Verdict(
                foreign=False, why=f"it is damaged ({check[0] if check else 'no answer'})"
            )
        return None

    @staticmethod
    def _create(connection: sqlite3.Connection, storage: str) -> None:
        connection.executescript(
            """
            CREATE TEMP TABLE IF NOT EXISTS listed (
                digest TEXT PRIMARY KEY, validator TEXT NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS manifests (
                digest TEXT PRIMARY KEY, validator TEXT NOT NULL, refs TEXT NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS links (
                key TEXT PRIMARY KEY, validator TEXT NOT NULL, data BLOB NOT NULL
            ) WITHOUT ROWID;
            """
        )
        connection.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [
                ("schema", str(SCHEMA)),
                ("version", __version__),
                ("reader", READER),
                ("storage", storage),
            ],
        )

    # -- manifests ------------------------------------------------------------------

    def manifest_count(self) -> int:
        """How many manifests the cache holds."""
        try:
            row = self._db.execute("SELECT count(*) FROM manifests").fetchone()
        except sqlite3.DatabaseError:
            return 0
        return int(row[0]) if row else 0

    def manifests(
        self, digests: Sequence[Digest], *, listed: bool = False
    ) -> dict[Digest, tuple[str, ManifestRefs]]:
        """The cached (validator, references) of each of ``digests`` that is cached;
        with ``listed``, only those whose blob this run's listing showed with the
        validator they were cached with (``mark_listed``)."""
        found: dict[Digest, tuple[str, ManifestRefs]] = {}
        descriptors: dict[tuple[str, int], Descriptor] = {}
        for chunk in _chunks(digests):
            marks = ",".join("?" * len(chunk))
            # Only "?" marks are formatted into the statements.
            query = _LISTED_MANIFESTS if listed else _MANIFESTS
            query = query.replace("(?)", f"({marks})")
            try:
                for digest, seen, refs in self._db.execute(query, list(chunk)):
                    found[Digest(digest)] = (seen, _decode(refs, descriptors))
            except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as exc:
                log.warning(
                    "scan cache %s: cannot read manifests (%s): reading them", self.path, exc
                )
                return {}
        return found

    def put_manifests(self, entries: Iterable[tuple[Digest, str, ManifestRefs]]) -> None:
        """Remember manifests verified against their digest now, each with the
        validator of the bytes that were verified (committed at once)."""
        rows = [(digest, seen, _encode(refs)) for digest, seen, refs in entries]
        if rows:
            self._write("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?)", rows)

    def validators_below(self, hex_prefix: str) -> dict[str, str]:
        """Hex digest → validator of every cached manifest whose sha256 hex starts with
        ``hex_prefix`` (one fan-out folder of ``blobs/sha256``)."""
        low = "sha256:" + hex_prefix
        try:
            rows = self._db.execute(
                "SELECT digest, validator FROM manifests WHERE digest >= ? AND digest < ?",
                (low, low + "g"),  # "g" sorts after every hex digit
            ).fetchall()
        except sqlite3.DatabaseError:
            return {}
        return {str(digest)[7:]: str(seen) for digest, seen in rows}

    def forget_listed(self) -> None:
        """Start a new listing: forget what an earlier one (on this connection) saw."""
        try:
            self._db.execute("DELETE FROM listed")
        except sqlite3.Error as exc:
            log.warning("scan cache %s: cannot reset a listing (%s)", self.path, exc)

    def mark_listed(self, entries: Iterable[tuple[str, str]]) -> None:
        """Remember, for this run only, (digest, validator) pairs of manifest blobs a
        listing just showed: ``manifests(..., listed=True)`` trusts those alone."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO listed VALUES (?, ?)", entries)
        except sqlite3.Error as exc:
            log.warning("scan cache %s: cannot note a listing (%s)", self.path, exc)

    def note(self, key: str, value: str) -> None:
        """Keep a fact for the next run (e.g. how many blobs were listed)."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(key, value)])

    def noted(self, key: str) -> str | None:
        """A fact kept by ``note``."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:
            return None
        return None if row is None else str(row[0])

    # -- link files -----------------------------------------------------------------

    def links(self, keys: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        """The cached (validator, bytes) of each of ``keys`` that is cached."""
        found: dict[str, tuple[str, bytes]] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            query = _LINKS.replace("(?)", f"({marks})")  # only "?" marks
            try:
                for key, seen, data in self._db.execute(query, list(chunk)):
                    found[str(key)] = (str(seen), bytes(data))
            except sqlite3.DatabaseError as exc:
                log.warning("scan cache %s: cannot read links (%s): reading them", self.path, exc)
                return {}
        return found

    def put_links(self, entries: Mapping[str, tuple[str, bytes]]) -> None:
        """Remember each link key's validator and bytes (committed at once)."""
        rows = [(key, seen, data) for key, (seen, data) in entries.items()]
        if rows:
            self._write("INSERT OR REPLACE INTO links VALUES (?, ?, ?)", rows)

    def _write(self, statement: str, rows: Sequence[tuple[str | bytes, ...]]) -> None:
        """One transaction per batch: what a stopped run read stays for the next."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(statement, rows)
        except sqlite3.Error as exc:
            # A full disk or a damaged file costs the next run its warm start, nothing else.
            log.warning(
                "scan cache %s: cannot write (%s): the next run reads again", self.path, exc
            )

    def close(self) -> None:
        """Close the file."""
        self._db.close()
