"""Pure: what ``registry garbage-collect`` will free once the deletions are done.

A blob is freed when the manifests deleted here reference it and no kept manifest, in
any repository scanned, does. Each blob is counted once, and charged to the first
repository whose deletions free it. Sizes come from the manifests' descriptors; the
manifest JSON is a blob too. Repositories left out of the run (``--include``,
``--exclude``, ``--shard``) may share layers, so the estimate is then an upper bound;
blobs that were already orphaned before the run are not counted (a lower bound there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from regcleaner.digest import Digest
from regcleaner.manifests import ManifestRefs
from regcleaner.planner import ManifestInfo


def _blobs_of(digest: Digest, info: ManifestInfo | None) -> list[tuple[Digest, int]]:
    if not isinstance(info, ManifestRefs):
        return [(digest, 0)]
    return [(digest, info.size), *zip(info.blobs, info.blob_sizes, strict=False)]


@dataclass
class SpaceEstimate:
    """Accumulates, repository by repository, and settles at the end of the run."""

    _candidates: dict[Digest, tuple[int, str]] = field(default_factory=dict)
    _kept: set[Digest] = field(default_factory=set)

    def add_repository(
        self,
        repository: str,
        deleted: Iterable[Digest],
        kept: Iterable[Digest],
        manifests: Mapping[Digest, ManifestInfo],
    ) -> None:
        """Record one repository's deleted (or would-be deleted) and kept manifests."""
        for digest in kept:
            self._kept.update(blob for blob, _ in _blobs_of(digest, manifests.get(digest)))
        for digest in deleted:
            for blob, size in _blobs_of(digest, manifests.get(digest)):
                known = self._candidates.get(blob)
                if known is None or (known[0] == 0 and size):
                    self._candidates[blob] = (size, known[1] if known else repository)

    def settle(self) -> tuple[int, int, list[tuple[str, int]]]:
        """(bytes freed, blobs freed, per repository largest first)."""
        per_repository: dict[str, int] = {}
        total = count = 0
        for blob, (size, repository) in self._candidates.items():
            if blob in self._kept:
                continue
            total += size
            count += 1
            per_repository[repository] = per_repository.get(repository, 0) + size
        ranked = sorted(per_repository.items(), key=lambda item: (-item[1], item[0]))
        return total, count, ranked


def human_bytes(count: int) -> str:
    """1536 → '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
