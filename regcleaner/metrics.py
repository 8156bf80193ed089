"""Run metrics for Prometheus: a textfile for node_exporter's collector, or a Pushgateway.

A CronJob's pod is gone before any scrape, so the numbers are pushed or written at
the end of the run. Failure to export is a warning, never a reason to fail the run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from regcleaner.reporting.run import RunReport

log = logging.getLogger("regcleaner")


def build_registry(report: RunReport, *, exit_code: int) -> CollectorRegistry:
    """One gauge per figure of the run."""
    registry = CollectorRegistry()
    c = report.counters
    figures = {
        "repositories_scanned": ("Repositories scanned.", c.repositories),
        "manifests_scanned": ("Manifests (revisions) seen.", c.manifests),
        "manifests_kept": ("Manifests kept: in use, young or unsure.", c.kept),
        "manifests_deleted": ("Manifests deleted.", c.deleted),
        "manifests_would_delete": ("Manifests a dry run would delete.", c.would_delete),
        "manifests_already_gone": ("Manifests already gone when deleted.", c.already_gone),
        "deletions_failed": ("Deletions that failed.", c.failed),
        "repositories_failed": ("Repositories that could not be scanned or cleaned.",
                                c.repositories_failed),
        "reclaimable_bytes": ("Estimated bytes garbage-collect frees after this run.",
                              report.reclaimable[0] if report.reclaimable else 0),
        "run_duration_seconds": ("Wall time of the run.", report.duration_s),
        "last_run_timestamp_seconds": ("When the run ended (Unix time).", time.time()),
        "last_run_exit_code": ("Exit code of the run (0 is success).", exit_code),
        "dry_run": ("1 if the run was a dry run.", int(report.dry_run)),
    }  # fmt: skip
    for name, (help_text, value) in figures.items():
        Gauge(f"regcleaner_{name}", help_text, registry=registry).set(value)
    return registry


def export(
    report: RunReport,
    *,
    exit_code: int,
    textfile: Path | None,
    pushgateway: str | None,
    job: str = "regcleaner",
) -> None:
    """Write and/or push the metrics; log a warning on failure."""
    if textfile is None and pushgateway is None:
        return
    registry = build_registry(report, exit_code=exit_code)
    if textfile is not None:
        try:
            write_to_textfile(str(textfile), registry)
        except OSError as exc:
            log.warning("cannot write metrics to %s: %s", textfile, exc.strerror)
    if pushgateway is not None:
        try:
            push_to_gateway(pushgateway, job=job, registry=registry, timeout=10)
        except OSError as exc:  # URLError is an OSError
            log.warning("cannot push metrics to %s: %s", pushgateway, exc)
