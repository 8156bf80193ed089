"""What one blob collection (``regcleaner gc``, ``clean --direct --gc``) found and did:
its counters, the JSON report (the swept blobs spooled to a file) and the summary."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from regcleaner import __version__
from regcleaner.reporting.console import peak_rss_mb, summary_table
from regcleaner.space import human_bytes

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("regcleaner")

MAX_PROBLEMS_KEPT = 1000


@dataclass(slots=True)
class GcCounters:
    """Running totals of one collection."""

    repositories: int = 0
    manifests: int = 0
    marked: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    to_sweep: int = 0
    to_sweep_bytes: int = 0
    swept: int = 0
    swept_bytes: int = 0
    young: int = 0
    failed: int = 0
    abandoned: int = 0
    layer_links_removed: int = 0
    uploads_removed: int = 0
    prefixes_listed: int = 0
    prefixes: int = 0


class GcReport:
    """What one collection found and did; the swept blobs are spooled to a file."""

    def __init__(self, *, dry_run: bool, storage: str, registry_running: bool = True) -> None:
        self.dry_run = dry_run
        self.storage = storage
        self.registry_running = registry_running
        """False with ``--registry-stopped``: nothing to restart, so no such advice."""
        self.gate_check: dict[str, Any] | None = None
        """A dry run's check of the gate (see ``RunReport.gate_check``)."""
        self.counters = GcCounters()
        self.problems: list[str] = []
        self.problem_count = 0
        self.warnings: list[str] = []
        self.started = time.monotonic()
        self.finished: float | None = None
        self.stopped_by: str | None = None
        self.fatal_error: str | None = None
        self.storage_requests: dict[str, int] | None = None
        self.scan_cache: dict[str, int] | None = None
        """Entries the scan cache answered and keys read instead (None: no --cache)."""
        self._spool: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        """Drop the spool file."""
        self._spool.close()

    def problem(self, text: str) -> None:
        """Something that makes the mark incomplete (kept, up to a bound)."""
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(text)
        log.error("mark: %s", text)

    def warning(self, text: str) -> None:
        """Something the registry's own garbage-collect would do differently, where
        regcleaner keeps more (kept, up to a bound; no refusal)."""
        if len(self.warnings) < MAX_PROBLEMS_KEPT:
            self.warnings.append(text)
        log.warning("mark: %s", text)

    def swept(self, digest: str, size: int) -> None:
        """A blob removed (or, in a dry run, to be removed)."""
        self._spool.write(f"{digest}\t{size}\n")

    @property
    def duration_s(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    @property
    def aborted(self) -> bool:
        """True if the run ended on an error before anything was listed."""
        return self.fatal_error is not None and self.counters.repositories == 0

    def summary(self) -> dict[str, Any]:
        """The ``summary`` object of the JSON report."""
        c = self.counters
        return {
            "repositories": c.repositories,
            "manifests_marked": c.manifests,
            "blobs_marked": c.marked,
            "blobs": c.blobs,
            "blob_bytes": c.blob_bytes,
            "blobs_to_sweep": c.to_sweep,
            "bytes_to_sweep": c.to_sweep_bytes,
            "blobs_swept": c.swept,
            "bytes_freed": c.swept_bytes,
            "blobs_kept_young": c.young,
            "blobs_failed": c.failed,
            "blobs_abandoned": c.abandoned,
            "layer_links_removed": c.layer_links_removed,
            "uploads_removed": c.uploads_removed,
            "problems": self.problem_count,
            "duration_s": round(self.duration_s, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "storage_requests": self.storage_requests,
            "scan_cache": self.scan_cache,
        }

    @property
    def blobs_field(self) -> str:
        """The name of the blob list in the JSON report."""
        return "would_sweep" if self.dry_run else "swept"

    def header(self) -> dict[str, Any]:
        """The collection as a JSON object, without its blob list (see ``write_fields``)."""
        return {
            "dry_run": self.dry_run,
            "storage": self.storage,
            "stopped_by": self.stopped_by,
            "error": self.fatal_error,
            "summary": self.summary(),
            "problems": self.problems,
            "warnings": self.warnings,
            **({"gate": self.gate_check} if self.gate_check is not None else {}),
        }

    def write_fields(self, stream: IO[str], indent: str) -> None:
        """Write the collection's fields (no braces) with the blob list streamed from the
        spool, so that a million swept blobs never sit in memory as one list."""
        text = json.dumps(self.header(), indent=2)
        inner = text[text.index("{") + 1 : text.rindex("}")].strip("\n")
        stream.write("\n".join(indent + line[2:] for line in inner.split("\n")))
        stream.write(f',\n{indent}"{self.blobs_field}": [')
        self._spool.flush()
        self._spool.seek(0)
        separator = "\n"
        for line in self._spool:
            digest, _, size = line.rstrip("\n").partition("\t")
            stream.write(
                f'{separator}{indent}  {{"digest": {json.dumps(digest)}, "size": {int(size)}}}'
            )
            separator = ",\n"
        stream.write(f"\n{indent}]" if separator != "\n" else "]")
        self._spool.seek(0, 2)

    def write_json(self, stream: IO[str]) -> None:
        """Write the whole report as one JSON document."""
        head = json.dumps({"regcleaner": __version__, "command": "gc"}, indent=2)
        stream.write(head[: head.rindex("}")].rstrip() + ",\n")
        self.write_fields(stream, "  ")
        stream.write("\n}\n")

    def render_summary(self, console: Console) -> None:
        """The table printed at the end of a text run."""
        if self.aborted:
            return
        from rich.markup import escape

        c = self.counters
        table = summary_table(
            console,
            "regcleaner gc dry run: nothing was deleted" if self.dry_run else "regcleaner gc",
        )
        rows: list[tuple[str, str]] = [
            ("repositories", f"{c.repositories:,}"),
            ("manifests marked", f"{c.manifests:,}"),
            ("blobs marked (in use)", f"{c.marked:,}"),
            ("blobs found", f"{c.blobs:,} ({human_bytes(c.blob_bytes)})"),
        ]
        if self.dry_run:
            rows.append(("would sweep", f"{c.to_sweep:,} ({human_bytes(c.to_sweep_bytes)})"))
        else:
            rows.append(("swept", f"{c.swept:,} ({human_bytes(c.swept_bytes)})"))
        rows += [
            ("kept as younger than --min-blob-age", f"{c.young:,}"),
            ("failed", f"{c.failed:,}"),
            ("problems (sweep refused if any)", f"{self.problem_count:,}"),
        ]
        if c.abandoned:
            rows.append(("abandoned after the stop (outcome unknown)", f"{c.abandoned:,}"))
        if self.warnings:
            rows.append(("warnings (kept more than the registry's gc)", f"{len(self.warnings):,}"))
        if c.layer_links_removed:
            rows.append(("_layers links removed", f"{c.layer_links_removed:,}"))
        if c.uploads_removed:
            rows.append(("stale uploads removed", f"{c.uploads_removed:,}"))
        rows.append(("duration", f"{self.duration_s:.1f}s"))
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
        if self.stopped_by:
            console.print(f"Stopped by {self.stopped_by}: the report covers what was done.")
        if self.gate_check is not None and self.gate_check.get("would_refuse"):
            console.print(
                "The real run would refuse to write storage now (warning above): "
                f"{escape(str(self.gate_check.get('short') or 'see the warning'))}."
            )
        if self.fatal_error:  # the error itself was logged once, above
            console.print("Blob collection ended early on the error above.")
        elif not self.dry_run and c.swept and self.registry_running:
            console.print(
                f"{c.swept:,} blob" + ("" if c.swept == 1 else "s") + " removed. Restart the "
                "registry (its blob-descriptor cache may still describe them), then turn "
                "read-only mode off."
            )
        elif not self.dry_run and c.swept:
            console.print(f"{c.swept:,} blob" + ("" if c.swept == 1 else "s") + " removed.")
