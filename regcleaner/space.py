"""What ``registry garbage-collect`` will free once the deletions are done.

A blob is freed when the manifests deleted here reference it and no kept manifest, in
any repository scanned, does. Each blob is counted once, and charged to the first
repository whose deletions free it. Sizes come from the manifests' descriptors; the
manifest JSON is a blob too. Repositories left out of the run (``--include``,
``--exclude``, ``--shard``) may share layers, so the estimate is then an upper bound;
blobs that were already orphaned before the run are not counted (a lower bound there).

The answer needs every repository's blobs at once, so they spill to a temporary file
instead of staying in memory: each repository's kept blobs and freed blobs are appended
(8 bytes a kept blob, 24 a freed one with its size and repository) to one of 256
partitions, written out whenever ``_BUFFERED`` entries are held (checked after each
repository: the buffer holds at most one repository's blobs past it); at the end each
partition is read back and settled on its own, about a 256th of the blobs. The
partition is the top 8 bits of the blob's key times an odd number drawn for each run
(multiply-shift hashing), not of the key itself: a tenant who pushed blobs chosen to
share their digests' first two hex digits (about 256 tries each) would otherwise put
all of theirs in one partition, which ``settle`` holds in memory. A blob is keyed
by the first 64 bits of its sha256 (``keyset.blob_key``): by the birthday bound, two
distinct blobs of one registry share those bits with a chance of about 1 in 37 million
at a million blobs (1 in 370,000 at ten million), and a collision would only move the
estimate by one blob.

(It spilled to SQLite before, a row a blob inserted into B-trees in no order: the
estimate cost a warm dry run 1.86 s at 100,000 manifests, 1.47 s in a file, 0.75 s in a
later run with the salt; ``python -m bench.scale estimate``, docs/benchmarks.md.)
"""

from __future__ import annotations

import secrets
import tempfile
from array import array
from collections.abc import Iterable, Mapping

from regcleaner.digest import Digest
from regcleaner.keyset import blob_key
from regcleaner.manifests import ManifestInfo, ManifestRefs

_PARTITIONS = 256
_SHIFT = 56  # the top 8 of 64 bits
_MASK = (1 << 64) - 1
_BUFFERED = 1 << 19
"""Entries held before they are written out: 12 MB at 24 bytes a freed blob."""


class SpaceEstimate:
    """Accumulates, repository by repository, and settles at the end of the run."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="regcleaner-space-")  # noqa: SIM115
        self._names: list[str] = []
        self._salt = secrets.randbits(64) | 1
        """Odd: the partition of a key is the top 8 bits of ``key * salt`` mod 2^64."""
        self._kept = [array("q") for _ in range(_PARTITIONS)]
        self._freed = [array("q") for _ in range(_PARTITIONS)]
        """Per partition: key, size (0 when unknown), repository, ... in the order added."""
        self._buffered = 0
        self._written: list[list[tuple[bool, int, int]]] = [[] for _ in range(_PARTITIONS)]
        """Per partition, the runs written out: (freed?, offset, bytes), in order."""

    def close(self) -> None:
        """Drop the temporary file."""
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
            kept_blobs.add(blob_key(digest))
            info = manifests.get(digest)
            if isinstance(info, ManifestRefs):
                kept_blobs.update(blob_key(blob.digest) for blob in info.blobs)
        freed: dict[int, int] = {}  # blob -> size (0 when unknown)
        for digest in deleted:
            info = manifests.get(digest)
            if not isinstance(info, ManifestRefs):
                freed.setdefault(blob_key(digest), 0)
                continue
            for blob, size in ((digest, info.size), *((b.digest, b.size) for b in info.blobs)):
                key = blob_key(blob)
                if not freed.get(key):  # the first size known wins
                    freed[key] = size
        repository_id = len(self._names)
        self._names.append(repository)
        kept_parts, freed_parts, salt = self._kept, self._freed, self._salt
        for key in kept_blobs:
            kept_parts[((key * salt) & _MASK) >> _SHIFT].append(key)
        for key, size in freed.items():
            freed_parts[((key * salt) & _MASK) >> _SHIFT].extend((key, size, repository_id))
        self._buffered += len(kept_blobs) + len(freed)
        if self._buffered >= _BUFFERED:
            self._write_out()

    def _write_out(self) -> None:
        """Append every partition's buffered entries to the file, and empty the buffers."""
        stream = self._file
        stream.seek(0, 2)
        for partition in range(_PARTITIONS):
            for freed, buffers in ((False, self._kept), (True, self._freed)):
                entries = buffers[partition]
                if entries:
                    data = entries.tobytes()
                    self._written[partition].append((freed, stream.tell(), len(data)))
                    stream.write(data)
                    buffers[partition] = array("q")
        self._buffered = 0

    def _read(self, offset: int, size: int) -> array[int]:
        self._file.seek(offset)
        entries = array("q")
        entries.frombytes(self._file.read(size))
        return entries

    def settle(self) -> tuple[int, int, list[tuple[str, int]]]:
        """(bytes freed, blobs freed, per repository largest first)."""
        self._write_out()
        freed_bytes = [0] * len(self._names)
        freed_blobs = [0] * len(self._names)
        for runs in self._written:
            kept: set[int] = set()
            for freed, offset, size in runs:
                if not freed:
                    kept.update(self._read(offset, size))
            first: dict[int, int] = {}  # blob -> the first repository it is freed by
            sizes: dict[int, int] = {}  # blob -> the first size known (0: none yet)
            for freed, offset, size in runs:
                if not freed:
                    continue
                entries = iter(self._read(offset, size))
                for key, blob_size, repository_id in zip(entries, entries, entries, strict=True):
                    if key in kept:
                        continue
                    if key not in first:
                        first[key] = repository_id
                        sizes[key] = blob_size
                    elif not sizes[key]:
                        sizes[key] = blob_size
            for key, repository_id in first.items():
                freed_bytes[repository_id] += sizes[key]
                freed_blobs[repository_id] += 1
        rows = sorted(
            ((name, freed_bytes[i]) for i, name in enumerate(self._names) if freed_blobs[i]),
            key=lambda row: (-row[1], row[0]),
        )
        return sum(freed_bytes), sum(freed_blobs), rows


def human_bytes(count: int) -> str:
    """1536 → '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
