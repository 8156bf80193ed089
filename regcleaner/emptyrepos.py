"""Empty repositories: folders left with no tags and no revisions, which the registry
keeps listing in ``/v2/_catalog`` forever. In a maintenance window (the gate passed:
the registry is read-only or stopped) their own folders (``_manifests``, ``_layers``,
``_uploads``) are removed, so that the catalog no longer lists them.

A repository is kept, with the reason, when:

- any file is left under its ``_manifests`` (a revision link, a tag, a tag's history,
  a schema1 signature): it is not empty;
- anything is under its ``_uploads``: an upload is in progress;
- a ``_layers`` link is younger than ``min_age_s``: its blobs were pushed recently and
  its manifest may be on its way (the same grace as ``clean --min-age``);
- a symbolic link or special file is met: the registry would follow it, regcleaner
  does not.

A nested repository is untouched: ``a/b`` stays when ``a`` is pruned, since only
``a``'s own ``_``-folders go. Blobs are not touched either: once no manifest
references them, garbage-collect frees them.

A dry run lists what would go. With ``deleted_digests`` (the digests a ``clean`` dry
run would delete, per repository), a repository counts as empty when only those
manifests, and tags pointing at them, are left: what the real run would leave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regcleaner import layout
from regcleaner.digest import Digest, digest_from_hex, is_sha256_hex
from regcleaner.errors import StorageError
from regcleaner.globs import repository_selected
from regcleaner.storage.base import EntryKind
from regcleaner.view import RegistryView

if TYPE_CHECKING:
    from regcleaner.config import Settings

log = logging.getLogger("regcleaner")

_OWN_FOLDERS = (layout.MANIFESTS_DIR, layout.LAYERS_DIR, layout.UPLOADS_DIR)


@dataclass(frozen=True, slots=True)
class EmptyRepository:
    """A repository to remove: its files and folders (deepest first), relative to the
    storage root."""

    name: str
    keys: tuple[str, ...]
    directories: tuple[str, ...]


@dataclass(slots=True)
class PruneReport:
    """What the pruning found and did."""

    dry_run: bool
    removed: list[str] = field(default_factory=list)
    """Removed (or, in a dry run, to be removed)."""
    kept: list[tuple[str, str]] = field(default_factory=list)
    """Repositories without manifests that stay, with why."""
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report's ``empty_repositories`` object."""
        return {
            "dry_run": self.dry_run,
            "would_remove" if self.dry_run else "removed": sorted(self.removed),
            "kept": [{"repository": n, "reason": r} for n, r in sorted(self.kept)],
            "failed": [{"repository": n, "problem": p} for n, p in sorted(self.failed)],
        }


class _Doubt(Exception):
    pass


async def _files(view: RegistryView, prefix: str) -> list[tuple[str, float]]:
    """Every file below ``prefix`` (relative keys, mtimes); _Doubt on a link."""
    found: list[tuple[str, float]] = []
    async for page in view.store.walk(prefix):
        for info in page:
            if not info.regular:
                raise _Doubt(f"{prefix}/{info.key} is a symbolic link or special file")
            found.append((info.key, info.mtime))
    return found


async def examine(
    view: RegistryView,
    name: str,
    *,
    now: float,
    min_age_s: float,
    deleted_digests: Collection[Digest] = (),
) -> EmptyRepository | str | None:
    """The repository's removal if it is empty; the reason it stays if it has no
    manifests but must stay; None if it is not empty."""
    base = layout.repository_dir(name)
    try:
        manifests = await _files(view, layout.manifests_dir(name))
        left = [key for key, _ in manifests]
        if deleted_digests and left:
            left = await _without_deleted(view, name, left, deleted_digests)
        if left:
            return None
        uploads = await _files(view, layout.uploads_dir(name))
        if uploads:
            return f"uploads in progress ({len(uploads)} files under _uploads)"
        layers = await _files(view, f"{base}/{layout.LAYERS_DIR}")  # every algorithm
    except _Doubt as exc:
        return f"{exc}: not followed"
    newest = max((mtime for _, mtime in layers), default=None)
    if newest is not None and now - newest < min_age_s:
        return (
            f"a blob was linked {now - newest:.0f}s ago (less than --min-age): a push may be "
            "in progress"
        )
    keys: list[str] = []
    directories: set[str] = set()
    for folder, files in (
        (layout.MANIFESTS_DIR, [k for k, _ in manifests]),
        (layout.UPLOADS_DIR, []),
        (layout.LAYERS_DIR, [k for k, _ in layers]),
    ):
        top = f"{base}/{folder}"
        keys += [f"{top}/{key}" for key in files]
        directories.add(top)
        for key in files:
            parts = key.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directories.add(f"{top}/{'/'.join(parts[:depth])}")
    if view.store.has_directories:
        # Empty sub-folders (a removed revision's sha256/ folder) are no files: list them.
        for folder in _OWN_FOLDERS:
            directories.update(await _folders(view, f"{base}/{folder}"))
    ordered = sorted(directories, key=lambda d: (-d.count("/"), d))
    parents = name.split("/")
    ordered += [
        layout.repository_dir("/".join(parents[:depth])) for depth in range(len(parents), 0, -1)
    ]  # the repository's folder, then its parents: each removed only if left empty
    return EmptyRepository(name, tuple(keys), tuple(ordered))


async def _folders(view: RegistryView, prefix: str) -> list[str]:
    """Every folder below ``prefix`` on a store with folders (depth first)."""
    found: list[str] = []
    pending = [prefix]
    while pending:
        folder = pending.pop()
        async for page in view.store.list_children(folder):
            for entry in page:
                if entry.kind == "dir":
                    found.append(f"{folder}/{entry.name}")
                    pending.append(f"{folder}/{entry.name}")
    return found


async def _without_deleted(
    view: RegistryView, name: str, keys: list[str], deleted_digests: Collection[Digest]
) -> list[str]:
    """The ``_manifests`` files a run that deletes ``deleted_digests`` would leave: a
    deleted revision's files go, and so does a tag whose current link names a deleted
    digest (the registry untags it with the manifest)."""
    tags = sorted({key.split("/")[1] for key in keys if key.startswith("tags/") and
                   key.count("/") >= 2})  # fmt: skip
    targets = dict(zip(tags, await view.tag_links(name, tags), strict=True))
    left: list[str] = []
    for key in keys:
        parts = key.split("/")
        if (
            len(parts) >= 4 and parts[0] == "revisions" and parts[1] == "sha256"
            and is_sha256_hex(parts[2]) and digest_from_hex(parts[2]) in deleted_digests
        ):  # fmt: skip
            continue
        if parts[0] == "tags" and len(parts) >= 3:
            target = targets.get(parts[1])
            if isinstance(target, str) and target in deleted_digests:
                continue
        left.append(key)
    return left


async def prune_empty_repositories(
    view: RegistryView,
    *,
    gate: Callable[[], Awaitable[None]] | None,
    dry_run: bool,
    min_age_s: float = 3600.0,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    deleted_digests: Mapping[str, Collection[Digest]] | None = None,
    clock: Callable[[], float] = time.time,
) -> PruneReport:
    """Find the empty repositories and, unless ``dry_run``, remove them once ``gate``
    has passed (it runs before anything is read, so that nothing changes after)."""
    report = PruneReport(dry_run=dry_run)
    if not dry_run:
        if gate is None:
            raise ValueError("removing repositories needs the maintenance window's gate")
        await gate()
    names: list[str] = []

    async def found(name: str, _: Mapping[str, EntryKind]) -> None:
        if name and repository_selected(name, include, exclude):
            names.append(name)

    await view.repository_folders(found, markers=(layout.LAYERS_DIR, layout.UPLOADS_DIR))
    now = clock()
    for name in sorted(names):
        try:
            gone = (deleted_digests or {}).get(name, ())
            outcome = await examine(view, name, now=now, min_age_s=min_age_s, deleted_digests=gone)
        except StorageError as exc:
            report.failed.append((name, str(exc)))
            log.error("empty repositories: %s: %s; kept", name, exc)
            continue
        if outcome is None:
            continue
        if isinstance(outcome, str):
            report.kept.append((name, outcome))
            log.info("empty repositories: %s has no manifests but stays: %s", name, outcome)
            continue
        if dry_run:
            report.removed.append(name)
            log.info("empty repositories: %s would be removed", name)
            continue
        problems = [p for p in await view.store.delete_many(
            outcome.keys, directories=outcome.directories) if p is not None]  # fmt: skip
        if problems:
            report.failed.append((name, problems[0]))
            log.error("empty repositories: %s: %s", name, problems[0])
        else:
            report.removed.append(name)
            log.info("empty repositories: %s removed", name)
    return report


async def prune_in_window(
    settings: Settings,
    view: RegistryView,
    *,
    deleted_digests: Mapping[str, Collection[Digest]] | None = None,
) -> PruneReport:
    """``clean --direct --prune-empty-repositories`` (after the removal, in the same
    window) and ``regcleaner prune-empty-repositories``: behind the same gate as direct
    removal (``registry.access.make_gate``), with the run's dry run, ``--min-age``,
    ``--include`` and ``--exclude``. ``deleted_digests``: a clean dry run's would-be deletions."""
    from regcleaner.registry.access import make_gate

    gate = None if settings.dry_run else make_gate(settings, view)
    return await prune_empty_repositories(
        view, gate=gate, dry_run=settings.dry_run, min_age_s=settings.min_age_s,
        include=settings.include, exclude=settings.exclude, deleted_digests=deleted_digests,
    )  # fmt: skip
