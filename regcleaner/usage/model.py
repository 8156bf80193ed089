"""Pure: the numbers of ``regcleaner usage`` and the rule that defines them.

A blob is *referenced* by a repository when the registry's garbage-collect marks it
while walking that repository: every revision's manifest blob, and what the manifest
references as the registry reads it (config and layers of an image, the entries of an
index, the fsLayers of schema1). ``_layers`` links and tags do not count: the
registry's garbage-collect ignores them too.

- *exclusive*: the referenced blobs no other repository references: what deleting every
  manifest of the repository, then garbage-collect, frees.
- *reclaimable*: the exclusive blobs that no manifest the repository keeps after a
  ``clean`` (under the same options and policy) references: what cleaning this
  repository alone, then garbage-collect, frees. Always part of exclusive.

Blob sizes are the sizes of the ``data`` files in storage, not the manifests'
descriptors (a descriptor may lie; the bytes on disk do not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from regcleaner.digest import Digest
from regcleaner.manifests import ManifestInfo, ManifestRefs


def gc_marks(revisions: Iterable[Digest], manifests: Mapping[Digest, ManifestInfo]) -> set[Digest]:
    """The blobs garbage-collect marks for these revisions: each manifest itself, and
    what it references (an unreadable manifest marks only itself: the registry's
    garbage-collect would stop on it, regcleaner's refuses to sweep)."""
    marked: set[Digest] = set()
    for digest in revisions:
        marked.add(digest)
        info = manifests.get(digest)
        if isinstance(info, ManifestRefs):
            marked.update(info.children)
            marked.update(blob.digest for blob in info.blobs)
    return marked


@dataclass(frozen=True, slots=True)
class RepositoryUsage:
    """One repository's counts and byte counts (exact: sizes from storage)."""

    name: str
    tags: int
    manifests: int
    untagged_manifests: int
    """Revisions no tag points at (index children and referrers included)."""
    deletable_manifests: int
    """Manifests ``clean`` would delete, with the same options and policy."""
    referenced_bytes: int
    referenced_blobs: int
    exclusive_bytes: int
    exclusive_blobs: int
    reclaimable_bytes: int
    reclaimable_blobs: int
    missing_blobs: int = 0
    """Blobs referenced but not found in storage (counted as 0 bytes)."""
    blocked: bool = False
    """Something in it could not be read: ``clean`` deletes nothing there."""
    error: str | None = None
    """Its folders could not be read; its numbers are incomplete."""

    def as_dict(self) -> dict[str, object]:
        """The repository's object in the JSON document."""
        return {
            "name": self.name,
            "tags": self.tags,
            "manifests": self.manifests,
            "untagged_manifests": self.untagged_manifests,
            "deletable_manifests": self.deletable_manifests,
            "referenced_bytes": self.referenced_bytes,
            "referenced_blobs": self.referenced_blobs,
            "exclusive_bytes": self.exclusive_bytes,
            "exclusive_blobs": self.exclusive_blobs,
            "reclaimable_bytes": self.reclaimable_bytes,
            "reclaimable_blobs": self.reclaimable_blobs,
            "missing_blobs": self.missing_blobs,
            "blocked": self.blocked,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """The registry as a whole."""

    repositories: int
    tags: int
    manifests: int
    blobs: int
    """Every blob in storage, referenced or not."""
    blob_bytes: int
    referenced_blobs: int
    """Blobs at least one repository references (each counted once)."""
    referenced_bytes: int
    shared_blobs: int
    """Blobs two or more repositories reference."""
    shared_bytes: int
    orphaned_blobs: int
    """Blobs in storage no repository references: garbage-collect frees them now."""
    orphaned_bytes: int
    reclaimable_blobs: int
    """Blobs a ``clean`` of every repository leaves unreferenced (orphans not included):
    the sum of the repositories' reclaimable bytes plus the blobs only freed when
    several repositories are cleaned together (``reclaimable_shared_bytes``)."""
    reclaimable_bytes: int
    reclaimable_shared_bytes: int
    missing_blobs: int
    """Referenced blobs that are not in storage."""

    @property
    def gc_would_free_after_clean(self) -> int:
        """Bytes garbage-collect frees after a clean of every repository."""
        return self.reclaimable_bytes + self.orphaned_bytes

    def as_dict(self) -> dict[str, object]:
        """The ``totals`` object of the JSON document."""
        return {
            "repositories": self.repositories,
            "tags": self.tags,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "blob_bytes": self.blob_bytes,
            "referenced_blobs": self.referenced_blobs,
            "referenced_bytes": self.referenced_bytes,
            "shared_blobs": self.shared_blobs,
            "shared_bytes": self.shared_bytes,
            "orphaned_blobs": self.orphaned_blobs,
            "orphaned_bytes": self.orphaned_bytes,
            "reclaimable_blobs": self.reclaimable_blobs,
            "reclaimable_bytes": self.reclaimable_bytes,
            "reclaimable_shared_bytes": self.reclaimable_shared_bytes,
            "gc_frees_after_clean_bytes": self.gc_would_free_after_clean,
            "missing_blobs": self.missing_blobs,
        }


# The columns ``--sort`` accepts: short name → (field, largest first by default).
SORT_COLUMNS: dict[str, tuple[str, bool]] = {
    "name": ("name", False),
    "tags": ("tags", True),
    "manifests": ("manifests", True),
    "untagged": ("untagged_manifests", True),
    "deletable": ("deletable_manifests", True),
    "referenced": ("referenced_bytes", True),
    "exclusive": ("exclusive_bytes", True),
    "reclaimable": ("reclaimable_bytes", True),
}


def sort_column(text: str) -> tuple[str, bool]:
    """``--sort`` value (a short name or a field name, ``-`` in front to reverse) →
    (field, descending); ValueError for anything else."""
    reverse = text.startswith("-")
    name = text.lstrip("-").strip().lower().replace("-", "_")
    for short, (column, descending) in SORT_COLUMNS.items():
        if name in (short, column):
            return column, descending != reverse
    raise ValueError(f"unknown sort column {text!r}: one of {', '.join(SORT_COLUMNS)}")
