"""``regcleaner usage`` as text (a rich table), one JSON document, or CSV.

The rows come from the ledger sorted and filtered (``--include``/``--exclude``, then
``--top``), one at a time: a registry of many repositories is never one list.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from regcleaner import __version__
from regcleaner.globs import repository_selected
from regcleaner.space import human_bytes
from regcleaner.usage.ledger import UsageLedger
from regcleaner.usage.model import RepositoryUsage, UsageTotals

CSV_FIELDS = (
    "name", "tags", "manifests", "untagged_manifests", "deletable_manifests",
    "referenced_bytes", "referenced_blobs", "exclusive_bytes", "exclusive_blobs",
    "reclaimable_bytes", "reclaimable_blobs", "missing_blobs", "blocked", "error",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Selection:
    """Which repositories are shown, in which order."""

    column: str = "referenced_bytes"
    descending: bool = True
    top: int | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def selected_rows(ledger: UsageLedger, selection: Selection) -> Iterator[RepositoryUsage]:
    """The repositories to show: sorted, filtered, at most ``top``."""
    shown = 0
    for row in ledger.repositories(selection.column, descending=selection.descending):
        if selection.top is not None and shown >= selection.top:
            return
        if not repository_selected(row.name, selection.include, selection.exclude):
            continue
        shown += 1
        yield row


def write_json(
    stream: IO[str],
    header: dict[str, Any],
    totals: UsageTotals,
    rows: Iterable[RepositoryUsage],
    warnings: list[str],
) -> None:
    """One JSON document: header fields, ``totals``, then ``repositories`` streamed."""
    document = {"regcleaner": __version__, "command": "usage", **header,
                "totals": totals.as_dict(), "warnings": warnings}  # fmt: skip
    text = json.dumps(document, indent=2)
    stream.write(text[: text.rindex("}")].rstrip() + ',\n  "repositories": [')
    separator = "\n"
    for row in rows:
        stream.write(separator + "    " + json.dumps(row.as_dict()))
        separator = ",\n"
    stream.write("\n  ]\n}\n" if separator != "\n" else "]\n}\n")


def write_csv(stream: IO[str], rows: Iterable[RepositoryUsage]) -> None:
    """One line per repository, bytes as integers."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        values = row.as_dict()
        writer.writerow(["" if values[f] is None else values[f] for f in CSV_FIELDS])


def render_text(totals: UsageTotals, rows: Iterable[RepositoryUsage], *, width: int | None = None
                ) -> None:  # fmt: skip
    """The table and the totals on standard output."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=width)
    if width is None and not console.is_terminal:
        console.width = max(console.width, 120)  # piped to a file: never crop a column
    table = Table(title="Space by repository", title_justify="left", box=box.SIMPLE_HEAD)
    for heading, justify in (
        ("repository", "left"), ("tags", "right"), ("manifests", "right"),
        ("untagged", "right"), ("referenced", "right"), ("exclusive", "right"),
        ("reclaimable", "right"),
    ):  # fmt: skip
        # A repository's name folds onto the next line rather than being cut short.
        first = heading == "repository"
        table.add_column(heading, justify=justify,  # type: ignore[arg-type]
                         overflow="fold" if first else "ellipsis",
                         min_width=16 if first else None)  # fmt: skip
    for row in rows:
        name = row.name + (" (blocked)" if row.blocked else "") + (" (error)" if row.error else "")
        table.add_row(
            name, f"{row.tags:,}", f"{row.manifests:,}", f"{row.untagged_manifests:,}",
            human_bytes(row.referenced_bytes), human_bytes(row.exclusive_bytes),
            human_bytes(row.reclaimable_bytes),
        )  # fmt: skip
    console.print(table)
    summary = Table(title="Totals", show_header=False, title_justify="left")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for label, count, size in (
        ("all blobs in storage", totals.blobs, totals.blob_bytes),
        ("referenced by some repository", totals.referenced_blobs, totals.referenced_bytes),
        ("shared by two or more repositories", totals.shared_blobs, totals.shared_bytes),
        ("orphaned (garbage-collect frees them now)", totals.orphaned_blobs,
         totals.orphaned_bytes),
        ("reclaimable by a clean of every repository", totals.reclaimable_blobs,
         totals.reclaimable_bytes),
    ):  # fmt: skip
        summary.add_row(label, f"{count:,} blobs, {human_bytes(size)}")
    summary.add_row("garbage-collect frees after that clean",
                    human_bytes(totals.gc_would_free_after_clean))  # fmt: skip
    if totals.missing_blobs:
        summary.add_row("referenced but missing from storage", f"{totals.missing_blobs:,} blobs")
    console.print(summary)
