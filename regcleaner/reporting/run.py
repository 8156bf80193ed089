"""What happened in a clean: counters, the JSON report and the summary table.

Makes no decisions. Per-repository records are spooled to a temporary file as each
repository finishes, so memory does not grow with the size of the registry.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TypeVar

from regcleaner import __version__
from regcleaner.digest import Digest
from regcleaner.reporting.console import peak_rss_mb, summary_table
from regcleaner.space import human_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from regcleaner.reporting.collection import GcReport

R = TypeVar("R")
log = logging.getLogger("regcleaner")


@dataclass(slots=True)
class RepositoryRecord:
    """Everything decided and done for one repository."""

    name: str
    manifests: int = 0
    tags: int = 0
    tagged: int = 0
    kept: dict[Digest, str] = field(default_factory=dict)
    deleted: list[tuple[Digest, str]] = field(default_factory=list)
    would_delete: list[tuple[Digest, str]] = field(default_factory=list)
    already_gone: list[tuple[Digest, str]] = field(default_factory=list)
    failed: list[tuple[Digest, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    tags_kept: list[tuple[str, str]] = field(default_factory=list)
    """With a retention policy: every surviving tag and the rule that keeps it."""
    tags_expired: list[tuple[str, Digest, str, str]] = field(default_factory=list)
    """Tags the policy expired (or orphaned signatures) that stay: (tag, digest, why it
    was to go, why it stays)."""
    tags_removed: list[tuple[str, Digest, str]] = field(default_factory=list)
    """Tags removed (or, in a dry run, to be removed): (tag, digest, why)."""

    def to_json(self) -> dict[str, Any]:
        """The repository's entry in the JSON report."""

        def pairs(items: list[tuple[Digest, str]]) -> list[dict[str, str]]:
            return [{"digest": d, "reason": r} for d, r in items]

        return {
            "name": self.name,
            "manifests": self.manifests,
            "tags": self.tags,
            "tagged": self.tagged,
            "deleted": pairs(self.deleted),
            "would_delete": pairs(self.would_delete),
            "already_gone": pairs(self.already_gone),
            "failed": [{"digest": d, "reason": r, "error": e} for d, r, e in self.failed],
            "kept": [{"digest": d, "reason": r} for d, r in sorted(self.kept.items())],
            "warnings": self.warnings,
            "error": self.error,
            **({"tags": self._tags_json()} if self.tags_kept or self.tags_expired
               or self.tags_removed else {}),
        }  # fmt: skip

    def _tags_json(self) -> dict[str, list[dict[str, str]]]:
        return {
            "kept": [{"tag": t, "reason": r} for t, r in self.tags_kept],
            "expired": [
                {"tag": t, "digest": d, "reason": r, "stays": s} for t, d, r, s in self.tags_expired
            ],
            "removed": [{"tag": t, "digest": d, "reason": r} for t, d, r in self.tags_removed],
        }


@dataclass(slots=True)
class Counters:
    """Running totals, read by the progress display and the summary."""

    repositories: int = 0
    scanned_repositories: int = 0
    scanned_manifests: int = 0
    repositories_failed: int = 0
    repositories_skipped: int = 0
    manifests: int = 0
    tagged: int = 0
    kept: int = 0
    kept_young: int = 0
    not_attempted: int = 0
    tags_removed: int = 0
    tags_expired_kept: int = 0
    planned: int = 0
    deleted: int = 0
    would_delete: int = 0
    already_gone: int = 0
    failed: int = 0
    warnings: int = 0


class RunReport:
    """Collects repository records and renders the final report."""

    def __init__(
        self, *, dry_run: bool, registry_url: str | None, storage: str, mode: str = "api"
    ) -> None:
        self.dry_run = dry_run
        self.registry_url = registry_url
        self.storage = storage
        self.mode = mode
        self.counters = Counters()
        self.started = time.monotonic()
        self.finished: float | None = None
        self.stopped_by: str | None = None
        self.fatal_error: str | None = None
        self.requests = 0
        self.reclaimable: tuple[int, int, list[tuple[str, int]]] | None = None
        self.storage_requests: dict[str, int] | None = None
        self.scan_cache: dict[str, int] | None = None
        """Entries the scan cache answered and keys read instead (None: no --cache)."""
        self.scan_complete = False
        """True once every repository was listed (False after an early stop: those not
        reached are not in the report)."""
        self.gc: GcReport | None = None
        """The blob collection that followed (``clean --direct --gc``)."""
        self.storage_mismatch = False
        """True when the registry at the URL turned out to serve another storage: what it
        accepted was deleted there, not here (nothing in this storage changed)."""
        self.gate_check: dict[str, Any] | None = None
        """A dry run's check of what the real run would check before writing:
        ``{"would_refuse": bool, "reason": str | None}`` (None: not checked)."""
        self.empty_repositories: dict[str, Any] | None = None
        """``--prune-empty-repositories``: what was (or would be) removed, and what
        stayed and why (``emptyrepos.PruneReport.as_dict``)."""
        self.tag_removal: str | None = None
        """How expired tags go: ``alone`` (DELETE by tag on distribution 3, or their
        folder in a direct run) or ``with-digest`` (a DELETE by digest takes every tag on
        it: distribution 2.8). None: no tag can go in this run."""
        self.deleted_digests: dict[str, set[Digest]] | None = None
        """When set, the digests each repository deleted (a dry run: would delete), kept
        for what follows a dry run and must count them as gone: the blob collection's
        mark and the pruning of repositories left empty."""
        self._spool: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        """Drop the spool file."""
        self._spool.close()

    def planned(self, count: int) -> None:
        """Deletions queued, for the progress total."""
        self.counters.planned += count

    def deleted_one(self) -> None:
        """Count a deletion as it happens, for live progress."""
        self.counters.deleted += 1

    def would_delete_one(self) -> None:
        """Count a dry run's deletion as it is decided, for live progress."""
        self.counters.would_delete += 1

    @property
    def aborted(self) -> bool:
        """True if the run ended on an error before any repository was accounted for."""
        return self.fatal_error is not None and self.counters.repositories == 0

    def add(self, record: RepositoryRecord) -> None:
        """Account for a finished repository and spool its record."""
        c = self.counters
        c.repositories += 1
        if record.error is not None:
            c.repositories_failed += 1
        c.manifests += record.manifests
        c.tagged += record.tagged
        for reason in record.kept.values():
            if reason.startswith("not-attempted"):  # planned, not kept: a stop came first
                c.not_attempted += 1
                continue
            c.kept += 1
            if reason == "younger-than-grace":
                c.kept_young += 1
        c.already_gone += len(record.already_gone)
        c.tags_removed += len(record.tags_removed)
        if self.deleted_digests is not None:
            gone = {d for d, _ in record.deleted} | {d for d, _ in record.would_delete}
            if gone:
                self.deleted_digests[record.name] = gone
        c.tags_expired_kept += len(record.tags_expired)
        c.failed += len(record.failed)
        c.warnings += len(record.warnings)
        entry = record.to_json()
        if self.tag_removal is not None and isinstance(entry.get("tags"), dict):
            for removed in entry["tags"]["removed"]:
                removed["how"] = self.tag_removal
        self._spool.write(json.dumps(entry, separators=(",", ":")))
        self._spool.write("\n")

    @property
    def duration_s(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    def summary(self) -> dict[str, Any]:
        """The ``summary`` object of the JSON report."""
        c = self.counters
        return {
            "repositories": c.repositories,
            "repositories_failed": c.repositories_failed,
            "repositories_skipped": c.repositories_skipped,
            "manifests": c.manifests,
            "tagged": c.tagged,
            "kept": c.kept,
            "kept_young": c.kept_young,
            "not_attempted": c.not_attempted,
            "tags_removed" if not self.dry_run else "tags_would_remove": c.tags_removed,
            "tags_expired_kept": c.tags_expired_kept,
            "deleted": c.deleted,
            "would_delete": c.would_delete,
            "already_gone": c.already_gone,
            "failed": c.failed,
            "warnings": c.warnings,
            "delete_requests": self.requests,
            **self._mismatch_fields(),
            "duration_s": round(self.duration_s, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "reclaimable_bytes": self._reclaimable[0] if self._reclaimable else None,
            "reclaimable_blobs": self._reclaimable[1] if self._reclaimable else None,
            "storage_requests": self.storage_requests,
            "scan_cache": self.scan_cache,
        }

    @property
    def _reclaimable(self) -> tuple[int, int, list[tuple[str, int]]] | None:
        """The space estimate, unless the deletions happened in another storage."""
        return None if self.storage_mismatch else self.reclaimable

    def _mismatch_fields(self) -> dict[str, int]:
        """After a URL/storage mismatch: nothing was deleted or found gone here; the
        registry at the URL answered those DELETEs for its own storage."""
        if not self.storage_mismatch:
            return {}
        c = self.counters
        return {
            "deleted": 0,
            "already_gone": 0,
            "answered_by_other_registry": c.deleted + c.already_gone,
        }

    def write_json(self, stream: IO[str]) -> None:
        """Write the whole report as one JSON document, streaming the repositories."""
        header = {
            "regcleaner": __version__,
            "dry_run": self.dry_run,
            "mode": self.mode,
            "registry_url": self.registry_url,
            "storage": self.storage,
            "stopped_by": self.stopped_by,
            "error": self.fatal_error,
            "scan_complete": self.scan_complete,
            "summary": self.summary(),
            "reclaimable_by_repository": [
                {"name": name, "bytes": size} for name, size in (self._reclaimable or (0, 0, []))[2]
            ],
            "reclaimable_note": RECLAIMABLE_NOTE,
        }
        if self.gate_check is not None:
            header["gate"] = self.gate_check
        if self.tag_removal is not None:
            header["tag_removal"] = self.tag_removal
        if self.empty_repositories is not None:
            header["empty_repositories"] = self.empty_repositories
        text = json.dumps(header, indent=2)
        stream.write(text[: text.rfind("}")].rstrip() + ",\n")
        if self.gc is not None:
            stream.write('  "gc": {\n')
            self.gc.write_fields(stream, "    ")
            stream.write("\n  },\n")
        stream.write('  "repositories": [\n')
        self._spool.flush()
        self._spool.seek(0)
        first = True
        for line in self._spool:
            if not first:
                stream.write(",\n")
            stream.write("    " + line.rstrip("\n"))
            first = False
        stream.write("\n  ]\n}\n")
        self._spool.seek(0, 2)

    def render_summary(self, console: Console) -> None:
        """The table printed at the end of a text run (nothing for an aborted run: its
        error, logged on its own, says what happened and what to do)."""
        if self.aborted:
            return
        from rich.markup import escape
        from rich.table import Table

        c = self.counters
        title = "regcleaner dry run: nothing was deleted" if self.dry_run else "regcleaner run"
        table = summary_table(console, title)
        rows: list[tuple[str, int | str]] = [
            ("repositories scanned", c.repositories),
            ("manifests seen", c.manifests),
            ("tagged manifests", c.tagged),
            ("kept (in use, young or unsure)", c.kept),
            ("  of them younger than --min-age", c.kept_young),
        ]
        if self.dry_run:
            rows.append(("would delete", c.would_delete))
        elif self.storage_mismatch:
            rows.append(("deleted from this storage", 0))
            if c.deleted + c.already_gone:
                rows.append(("DELETEs the registry at the URL took", c.deleted + c.already_gone))
        else:
            rows += [("deleted", c.deleted), ("already gone", c.already_gone)]
        if c.tags_removed or c.tags_expired_kept:
            verb = "tags that would go" if self.dry_run else "tags removed"
            rows += [(verb, c.tags_removed), ("expired tags that stay", c.tags_expired_kept)]
        rows += [
            ("failed deletions", c.failed),
            ("not attempted (run stopped)", c.not_attempted),
            ("repositories failed", c.repositories_failed),
            ("warnings", c.warnings),
            ("duration", f"{self.duration_s:.1f}s"),
        ]
        reclaimable = self._reclaimable
        collected = self.gc is not None and not (self.gc.fatal_error or self.gc.stopped_by)
        if reclaimable is not None and not collected:  # after a collection, its summary says
            verb = "would" if self.dry_run else "will"
            label = f"space garbage-collect {verb} free"
            rows.append((label, f"{human_bytes(reclaimable[0])} (estimate)"))
        for name, value in rows:
            table.add_row(name, f"{value:,}" if isinstance(value, int) else value)
        console.print(table)
        if reclaimable is not None and reclaimable[2]:
            console.print("reclaimable, largest first", soft_wrap=True)
            top = Table()
            top.add_column("repository")
            top.add_column("estimate", justify="right")
            for name, size in reclaimable[2][:10]:
                top.add_row(escape(name), human_bytes(size))
            console.print(top)
            console.print(
                "(A blob several repositories share counts for the first one that frees it.)"
            )
        if self.stopped_by:
            console.print(f"Stopped by {self.stopped_by}: the report covers what was done.")
        if self.fatal_error:
            console.print("Run ended early on the error above.")
        if self.gc is not None:
            self.gc.render_summary(console)
        gc_failed = self.gc is not None and bool(self.gc.fatal_error or self.gc.stopped_by)
        if self.gate_check is not None and self.gate_check.get("would_refuse"):
            console.print(
                "The real run would refuse to write storage now (warning above): "
                f"{escape(str(self.gate_check.get('short') or 'see the warning'))}."
            )
        if self.dry_run and (self.stopped_by or self.fatal_error):
            console.print(f"{manifests(c.would_delete)} would be deleted in the part scanned; "
                          "run the dry run to its end before the real one.")  # fmt: skip
        elif self.dry_run:
            console.print(f"{manifests(c.would_delete)} would be deleted; run without --dry-run.")
        elif self.storage_mismatch:
            elsewhere = (
                ", and the DELETEs it took acted there" if c.deleted + c.already_gone else ""
            )
            console.print(
                "Nothing was deleted from this storage: the registry at the URL serves "
                f"another one{elsewhere}."
            )
        elif c.deleted and self.mode == "direct" and gc_failed:
            console.print(
                f"{manifests(c.deleted)} removed from storage; their blobs were not "
                "collected (above). Restart the registry (its blob-descriptor cache may "
                "still describe them), then collect blobs once that is fixed: "
                "`regcleaner gc` or `registry garbage-collect <config>`."
            )
        elif c.deleted and self.mode == "direct" and self.gc is not None:
            # The collection's summary above ends with what to do next (restart).
            console.print(f"{manifests(c.deleted)} removed from storage and their blobs collected.")
        elif c.deleted and self.mode == "direct":
            console.print(
                f"{manifests(c.deleted)} removed from storage. Restart the registry (its "
                "blob-descriptor cache may still describe them), then collect blobs: "
                "`regcleaner gc` or `registry garbage-collect <config>`."
            )
        elif c.deleted:
            console.print(
                f"{manifests(c.deleted)} deleted. The registry frees no disk by itself: put it "
                "in read-only mode (or stop it) and run `regcleaner gc` or "
                "`registry garbage-collect <config>`."
            )
        else:
            console.print("Nothing was deleted.")


def manifests(count: int) -> str:
    """``1 manifest``, ``2 manifests``, ``1,000 manifests``."""
    return f"{count:,} manifest" + ("" if count == 1 else "s")


RECLAIMABLE_NOTE = (
    "Each blob is counted once, for the first repository whose deletions free it; which "
    "repository that is depends on the order repositories finish, so the per-repository "
    "figures can differ between a dry run and a real run while the total stays the same."
)
