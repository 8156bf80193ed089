"""The CLI functions of ``regcleaner usage`` and ``regcleaner prune-empty-repositories``.

Each is decorated with ``options.grouped`` and registered by ``regcleaner.cli``
(``app.command("usage")(usage)``); parsing and printing only, the work is in
``regcleaner.usage.scan`` and ``regcleaner.emptyrepos``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from regcleaner.config import TLSOptions, build_settings, parse_count
from regcleaner.errors import ConfigError, RegcleanerError
from regcleaner.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunEnd, exit_code
from regcleaner.options import (
    GateOptions,
    OutputOptions,
    StorageOptions,
    TargetOptions,
    grouped,
)

if TYPE_CHECKING:
    from regcleaner.config import Output, Settings
    from regcleaner.usage.ledger import UsageLedger
    from regcleaner.usage.model import RepositoryUsage, UsageTotals
    from regcleaner.usage.render import Selection

log = logging.getLogger("regcleaner")
USAGE = "Usage report"
FORMATS = ("text", "json", "csv")


def _fail(message: str, log_format: str | None = None) -> typer.Exit:
    from regcleaner.logs import usage_error_line

    typer.echo(usage_error_line(message, log_format), err=True)
    return typer.Exit(EXIT_USAGE)


@grouped
def usage(
    *,
    storage: StorageOptions,
    min_age: str = "1h",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    policy: Path | None = None,
    prune_orphan_signatures: bool = False,
    sort: str = "referenced",
    top: str | None = None,
    html: Path | None = None,
    output: OutputOptions,
) -> None:
    """Space by repository: referenced, exclusive and reclaimable bytes (read-only)."""
    from regcleaner.usage.model import sort_column
    from regcleaner.usage.render import Selection

    try:
        form = output.output.strip().lower()
        if form not in FORMATS:
            raise ConfigError(f"unknown output format {output.output!r}: use text, json or csv")
        column, descending = sort_column(sort)
        where = storage.settings()
        out = output.settings() if form == "text" else _output_as_json(output)
        if policy is not None:
            from regcleaner.policyfile import load_policy

            if load_policy(str(policy)).uses_pulls:
                raise ConfigError(
                    "usage reads no pull times yet: its reclaimable bytes cannot follow a "
                    "policy with pulled_within rules (clean --pulls-db can)"
                )
        settings = build_settings(
            registry_url=None, storage=where, credentials=None, tls=TLSOptions(), output=out,
            dry_run=True, min_age=min_age, include=include, exclude=exclude, policy=policy,
            prune_orphan_signatures=prune_orphan_signatures,
        )  # fmt: skip
        limit = None if top is None else parse_count(top, "--top")
    except (ConfigError, ValueError) as exc:
        raise _fail(str(exc), output.log_format) from None
    from regcleaner.logs import setup_logging

    setup_logging(settings.output.verbose, settings.output.log_format)
    selection = Selection(column, descending, limit, settings.include, settings.exclude)
    raise typer.Exit(run_usage(settings, selection, form=form, html=html))


def _output_as_json(output: OutputOptions) -> Output:
    """Output settings for a json or csv run (the shared validation knows text|json)."""
    from dataclasses import replace

    return replace(output, output="json").settings()


def run_usage(settings: Settings, selection: Selection, *, form: str, html: Path | None) -> int:
    """Measure, then print (text, json or csv), write the page, report and metrics."""
    from regcleaner.planner import Policy
    from regcleaner.reporting.console import peak_rss_mb
    from regcleaner.runner import make_store, open_view, write_report
    from regcleaner.usage.ledger import UsageLedger
    from regcleaner.usage.render import selected_rows, write_json
    from regcleaner.usage.scan import CleanOptions, UsageScan

    store = make_store(settings)
    try:
        view = open_view(settings, store)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    ledger = UsageLedger()
    options = CleanOptions(Policy(min_age_s=settings.min_age_s), settings.retention,
                           settings.prune_orphan_signatures)  # fmt: skip
    scan = UsageScan(view, ledger, options,
                     progress_interval_s=settings.output.progress_interval_s)  # fmt: skip

    async def measure() -> None:
        try:
            await scan.run()
        finally:
            await store.aclose()

    try:
        error = _run(measure())
        if error is not None:
            return error
        totals = ledger.settle()
        generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        header: dict[str, object] = {
            "storage": store.describe(),
            "generated_at": generated,
            "options": {
                "min_age_s": settings.min_age_s,
                "policy": settings.retention is not None,
                "prune_orphan_signatures": settings.prune_orphan_signatures,
                "sort": ("-" if selection.descending else "") + selection.column,
                "top": selection.top,
                "include": list(selection.include),
                "exclude": list(selection.exclude),
            },
            "failed_repositories": scan.counters.failed_repositories,
            "duration_s": round(time.monotonic() - scan.counters.started, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        rows = selected_rows(ledger, selection)
        if form == "json":
            write_json(sys.stdout, header, totals, rows, scan.warnings)
        elif form == "csv":
            from regcleaner.usage.render import write_csv

            write_csv(sys.stdout, rows)
        else:
            from regcleaner.usage.render import render_text

            render_text(totals, rows)
        if html is not None:
            _write_html(html, store.describe(), generated, totals, ledger, selection)
        _export_metrics(settings, totals, selected_rows(ledger, selection))
        lost = settings.report_path is not None and not write_report(
            settings.report_path,
            lambda stream: write_json(
                stream, header, totals, selected_rows(ledger, selection), scan.warnings
            ),
        )
    finally:
        ledger.close()
        if view.cache is not None:
            view.cache.close()
    return EXIT_FAILED if scan.counters.failed_repositories or lost else EXIT_OK


def _run(work: Coroutine[Any, Any, None]) -> int | None:
    """Run on a fresh event loop; the exit code if it ended on an error or a stop."""
    from regcleaner.runner import event_loop_factory

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(work)
    except RegcleanerError as exc:
        log.error("%s", exc)
        return exit_code(RunEnd(exc))
    except KeyboardInterrupt:
        return exit_code(RunEnd(stopped_by="SIGINT"))
    except BaseExceptionGroup as group:
        found, _ = group.split(RegcleanerError)
        if found is None:
            raise
        first = found.exceptions[0]
        log.error("%s", first)
        return exit_code(RunEnd(first))
    return None


def _write_html(path: Path, storage: str, generated: str, totals: UsageTotals,
                ledger: UsageLedger, selection: Selection) -> None:  # fmt: skip
    from dataclasses import replace

    from regcleaner.usage.html import CHART_BARS, write_html
    from regcleaner.usage.render import selected_rows

    by_size = replace(selection, column="referenced_bytes", descending=True, top=CHART_BARS)
    try:
        with path.open("w", encoding="utf-8") as stream:
            write_html(
                stream, storage=storage, generated_at=generated, totals=totals,
                chart_rows=selected_rows(ledger, by_size),
                table_rows=selected_rows(ledger, selection),
            )  # fmt: skip
    except OSError as exc:
        log.error("cannot write %s: %s", path, exc.strerror)


def _export_metrics(settings: Settings, totals: UsageTotals,
                    rows: Iterable[RepositoryUsage]) -> None:  # fmt: skip
    if settings.output.metrics_file is None and settings.output.pushgateway is None:
        return
    from regcleaner.usage import metrics

    metrics.export(totals, rows, textfile=settings.output.metrics_file,
                   pushgateway=settings.output.pushgateway)  # fmt: skip


# -- empty repositories -------------------------------------------------------------


@grouped
def prune_empty_repositories(
    *,
    dry_run: bool = False,
    target: TargetOptions,
    gate: GateOptions,
    min_age: str = "1h",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    output: OutputOptions,
) -> None:
    """Remove repositories with no tags and no manifests from the catalog (window only)."""
    try:
        where = target.settings()
        settings = build_settings(
            registry_url=where.url, storage=where.storage, credentials=where.credentials,
            tls=where.tls,
            output=output.settings(), dry_run=dry_run, direct=True,
            registry_stopped=gate.registry_stopped, gate_rounds=gate.rounds(),
            min_age=min_age, include=include, exclude=exclude,
        )  # fmt: skip
    except ConfigError as exc:
        raise _fail(str(exc), output.log_format) from None
    from regcleaner.logs import setup_logging

    setup_logging(settings.output.verbose, settings.output.log_format)
    raise typer.Exit(run_prune(settings))


def run_prune(settings: Settings) -> int:
    """The standalone pruning: gate (unless a dry run), find, remove, print."""
    import json

    from regcleaner.config import OutputFormat
    from regcleaner.emptyrepos import PruneReport, prune_in_window
    from regcleaner.runner import make_store, write_report
    from regcleaner.view import RegistryView

    store = make_store(settings)
    view = RegistryView(store)
    found: list[PruneReport] = []

    async def prune() -> None:
        try:
            await view.check()
            found.append(await prune_in_window(settings, view))
        finally:
            await store.aclose()

    error = _run(prune())
    if error is not None:
        return error
    report = found[0]
    lost = settings.report_path is not None and not write_report(
        settings.report_path,
        lambda stream: stream.write(json.dumps(report.as_dict(), indent=2) + "\n"),
    )
    if settings.output.format is OutputFormat.JSON:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        verb = "would remove" if report.dry_run else "removed"
        for name in sorted(report.removed):
            typer.echo(f"{verb} {name}")
        for name, reason in sorted(report.kept):
            typer.echo(f"kept {name}: {reason}")
        for name, problem in sorted(report.failed):
            typer.echo(f"failed {name}: {problem}")
        if not (report.removed or report.kept or report.failed):
            typer.echo("no empty repositories")
    return EXIT_FAILED if report.failed or lost else EXIT_OK
