"""Walks of ``blobs/sha256`` made once a run and taken twice.

On an object store with a warm scan cache, a run lists the blobs to validate the
manifests it takes from the cache (``cachedreads``); gc then lists the same blobs
again for its sweep. When gc follows in the same process (``clean --direct --gc``, or
``gc`` whose mark validates by that listing), the first listing is recorded here and
gc's sweep takes each fan-out folder from the record instead of listing it again: at
5,000,000 blobs that is about 5,400 LIST requests and their client CPU (about 5 µs a
key) less.

Why that is as safe as listing again: the record is made after the gate proved that
nothing else writes (``clean --direct`` opens its remover's session, and with it the
gate, before the scan; ``gc`` runs its gate before the mark), and between the record
and the sweep regcleaner itself removes only links, never blobs. A blob absent from
the record (written since, against the gate) is not swept; one present and gone since
is a deletion of a missing key. The sweep takes the record's sizes and modification
times, as a listing made then would give them. Only a folder walked to its end is
taken; any other (a listing that failed, a folder first seen by gc) is listed again.

The record is a temporary file of fixed-size records (the digest's 32 bytes, size,
mtime: 48 bytes a blob, 240 MB at 5,000,000 blobs) and, in memory, any key that is not
a plain ``<hex>/data`` (up to ``MAX_ODD``; past that, or on any error writing the file,
recording stops and gc lists for itself).
"""

from __future__ import annotations

import logging
import re
import struct
import tempfile
from collections.abc import Sequence
from typing import IO

from regcleaner.storage.base import FileInfo

log = logging.getLogger("regcleaner")

_RECORD = struct.Struct("<32sqd")  # sha256 digest, size, mtime
_PLAIN = re.compile(r"([0-9a-f]{64})/data")
MAX_ODD = 10_000
"""Keys that are not a plain ``<hex>/data`` kept in memory at most; past that the
record is given up (such a registry needs a look anyway: gc refuses on strays)."""


class RecordedWalks:
    """Walks of ``blobs/<algorithm>/<fan-out>`` folders, recorded as they are made."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self._end = 0
        self._segments: dict[str, list[tuple[int, int]]] = {}
        self._odd: dict[str, list[FileInfo]] = {}
        self._odd_count = 0
        self._complete: set[str] = set()
        self.broken = False
        """True once recording was given up: nothing is replayed."""
        self.replayed = 0
        """Folders taken from the record (for the log)."""

    def add(self, folder: str, files: Sequence[FileInfo]) -> None:
        """One page of the walk of ``folder`` (``<algorithm>/<fan-out>``, relative to
        ``blobs/``), its keys relative to that folder."""
        if self.broken:
            return
        plain: list[bytes] = []
        for file in files:
            found = _PLAIN.fullmatch(file.key) if file.regular else None
            if found is None:
                self._odd.setdefault(folder, []).append(file._replace(etag=None))
                self._odd_count += 1
                continue
            plain.append(_RECORD.pack(bytes.fromhex(found.group(1)), file.size, file.mtime))
        if self._odd_count > MAX_ODD:
            self._give_up(f"more than {MAX_ODD:,} keys that are not a blob's")
            return
        if not plain:
            self._segments.setdefault(folder, [])
            return
        data = b"".join(plain)
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="regcleaner-blobs-")  # noqa: SIM115
            self._file.seek(self._end)
            self._file.write(data)
        except OSError as exc:
            self._give_up(f"cannot write its temporary file: {exc}")
            return
        self._segments.setdefault(folder, []).append((self._end, len(data)))
        self._end += len(data)

    def add_flat(self, algorithm: str, files: Sequence[FileInfo]) -> None:
        """One page of a walk of ``blobs/<algorithm>`` (keys ``<fan-out>/...``). A key
        directly in that folder is not recorded (gc's own listing of the folder finds
        it)."""
        by_folder: dict[str, list[FileInfo]] = {}
        for file in files:
            prefix, slash, rest = file.key.partition("/")
            if slash:
                by_folder.setdefault(f"{algorithm}/{prefix}", []).append(file._replace(key=rest))
        for folder, found in by_folder.items():
            self.add(folder, found)

    def complete(self, folder: str) -> None:
        """The walk of ``folder`` reached its end without an error."""
        self._complete.add(folder)

    def complete_flat(self, algorithm: str) -> None:
        """The walk of ``blobs/<algorithm>`` reached its end: every folder seen in it
        is whole (a folder not seen is listed by gc)."""
        head = algorithm + "/"
        self._complete.update(folder for folder in self._segments if folder.startswith(head))
        self._complete.update(folder for folder in self._odd if folder.startswith(head))

    def replay(self, folder: str) -> list[FileInfo] | None:
        """What the walk of ``folder`` listed (keys relative to it, no ETag), or None
        when it was not walked whole here."""
        found = self.replay_records(folder)
        if found is None:
            return None
        plain, odd = found
        files = [FileInfo(digest.hex() + "/data", mtime, size) for digest, size, mtime in plain]
        return files + odd

    def replay_records(
        self, folder: str
    ) -> tuple[list[tuple[bytes, int, float]], list[FileInfo]] | None:
        """``replay`` in two parts, or None: the plain ``<hex>/data`` keys as (digest
        bytes, size, mtime), and every other key as walked."""
        if self.broken or folder not in self._complete:
            return None
        plain: list[tuple[bytes, int, float]] = []
        for offset, length in self._segments.get(folder, []):
            assert self._file is not None
            try:
                self._file.seek(offset)
                data = self._file.read(length)
            except OSError as exc:
                self._give_up(f"cannot read its temporary file: {exc}")
                return None
            if len(data) != length:
                self._give_up("its temporary file came back short")
                return None
            plain += _RECORD.iter_unpack(data)
        self.replayed += 1
        return plain, list(self._odd.get(folder, []))

    def _give_up(self, why: str) -> None:
        log.info("blob listing not kept for gc (%s): gc lists the blobs again", why)
        self.broken = True
        self.close()

    def close(self) -> None:
        """Drop the temporary file (nothing more is replayed)."""
        self.broken = True
        self._segments.clear()
        self._odd.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
