"""Walks of ``blobs/sha256`` made once a run and taken twice.

On an object store with a warm scan cache, a run lists the blobs to validate the
manifests it takes from the cache (``cachedreads``); gc then lists the same blobs
again for its sweep. When gc follows in the same process (``clean --direct --gc``, or
``gc`` whose mark validates by that listing), the first listing is recorded here and
gc's sweep takes each fan-out folder from the record instead of listing it again: at
5,000,000 blobs that is about 5,100 LIST requests and their client CPU (about 5 µs a
key) less.

What that rests on: the record is made after the gate proved that the registry cannot
write (``clean --direct`` opens its remover's session, and with it the gate, before the
scan; ``gc`` runs its gate before the mark), and, as for everything else in a
maintenance window, that it stays so until the window ends; between the record and the
sweep regcleaner itself removes links, never blobs. Where that holds, the record is
what a listing made at the sweep would show. Where it does not (something wrote
anyway):

- a blob that appeared after the record is not swept (a listing of gc's own would have
  offered it), and its ``_layers`` link is not pruned if the mark found it in use;
- a blob gone since the record is deleted again (a missing key) and counted as swept;
- a blob deleted and written again since keeps the record's modification time, so
  ``--min-blob-age`` judges it by its first write.

Only a folder walked to its end is taken; any other (a listing that failed, a folder
first seen by gc) is listed again. A folder walked again is recorded afresh.

The record is a temporary file of fixed-size records (the digest's 32 bytes, size,
mtime: 48 bytes a blob, 240 MB at 5,000,000 blobs) and, in memory, any key that is not
a plain ``<hex>/data`` (up to ``MAX_ODD``). Past that, or on any error writing or
reading the file, the record is given up and gc lists for itself.
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
"""Keys that are not a plain ``<hex>/data`` (files gc ignores or refuses on) kept in
memory at most; past that the record is given up and gc lists for itself."""


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
        """True once recording was given up (or closed): nothing is replayed."""
        self.replayed = 0
        """Folders taken from the record (for the log)."""

    def begin(self, folder: str) -> None:
        """A walk of ``folder`` starts: forget what an earlier one recorded."""
        self._complete.discard(folder)
        self._segments.pop(folder, None)
        self._odd_count -= len(self._odd.pop(folder, []))

    def begin_flat(self, algorithm: str) -> None:
        """A walk of ``blobs/<algorithm>`` starts: forget every folder below it."""
        head = algorithm + "/"
        for folder in [f for f in (*self._segments, *self._odd) if f.startswith(head)]:
            self.begin(folder)

    def add(self, folder: str, files: Sequence[FileInfo]) -> None:
        """One page of the walk of ``folder`` (``<algorithm>/<fan-out>``, relative to
        ``blobs/``), its keys relative to that folder."""
        if self.broken:
            return
        try:
            self._add(folder, files)
        except Exception as exc:  # any failure: gc lists for itself
            self._give_up(f"recording failed: {exc}")

    def _add(self, folder: str, files: Sequence[FileInfo]) -> None:
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
        segments = self._segments.setdefault(folder, [])
        if not plain:
            return
        data = b"".join(plain)
        if self._file is None:
            # Unbuffered: a full disk fails this write, not a later flush.
            self._file = tempfile.TemporaryFile(  # noqa: SIM115 - lives as long as self
                prefix="regcleaner-blobs-", buffering=0
            )
        self._file.seek(self._end)
        written = self._file.write(data)
        if written != len(data):
            raise OSError(f"wrote {written} of {len(data)} bytes")
        segments.append((self._end, len(data)))
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

    def replay_records(
        self, folder: str
    ) -> tuple[list[tuple[bytes, int, float]], list[FileInfo]] | None:
        """What the walk of ``folder`` listed, in two parts, or None when it was not
        walked whole here: the plain ``<hex>/data`` keys as (digest bytes, size, mtime),
        and every other key as walked (keys relative to the folder, no ETag)."""
        if self.broken or folder not in self._complete:
            return None
        plain: list[tuple[bytes, int, float]] = []
        try:
            for offset, length in self._segments.get(folder, []):
                assert self._file is not None
                self._file.seek(offset)
                data = self._file.read(length)
                if len(data) != length:
                    raise OSError(f"read {len(data)} of {length} bytes")
                plain += _RECORD.iter_unpack(data)
        except Exception as exc:  # any failure: gc lists for itself
            self._give_up(f"reading it back failed: {exc}")
            return None
        self.replayed += 1
        return plain, list(self._odd.get(folder, []))

    def _give_up(self, why: str) -> None:
        log.info("blob listing not kept for gc (%s): gc lists the blobs itself", why)
        self.close()

    def close(self) -> None:
        """Drop the record and its temporary file (nothing more is replayed). Never
        raises."""
        self.broken = True
        self._segments.clear()
        self._odd.clear()
        self._complete.clear()
        found, self._file = self._file, None
        if found is not None:
            try:
                found.close()
            except OSError as exc:
                log.debug("closing the blob record's temporary file: %s", exc)
