"""``regcleaner usage`` for Prometheus: per-repository gauges and the totals, as a
textfile for node_exporter's collector or pushed to a Pushgateway (as ``clean`` does in
``regcleaner.metrics``), so that a dashboard can show growth over time. Failure to
export is a warning, never a reason to fail the run."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from regcleaner.usage.model import RepositoryUsage, UsageTotals

log = logging.getLogger("regcleaner")

_PER_REPOSITORY = {
    "referenced_bytes": "Bytes of the blobs the repository's manifests reference.",
    "exclusive_bytes": "Bytes only this repository references (freed by deleting it).",
    "reclaimable_bytes": "Bytes a clean of this repository alone, then gc, would free.",
    "manifests": "Manifests (revisions) in the repository.",
    "untagged_manifests": "Manifests no tag points at.",
    "tags": "Tags in the repository.",
}
_TOTALS = {
    "blob_bytes": "Bytes of every blob in storage.",
    "blobs": "Blobs in storage.",
    "shared_bytes": "Bytes of blobs two or more repositories reference.",
    "orphaned_bytes": "Bytes of blobs no repository references (gc frees them now).",
    "reclaimable_bytes": "Bytes a clean of every repository, then gc, would free "
    "(orphans not included).",
    "repositories": "Repositories.",
}


def build_registry(totals: UsageTotals, rows: Iterable[RepositoryUsage]) -> CollectorRegistry:
    """Gauges ``regcleaner_usage_repository_<figure>{repository=...}`` and
    ``regcleaner_usage_<figure>`` for the totals."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(f"regcleaner_usage_repository_{name}", text, ["repository"],
                    registry=registry)
        for name, text in _PER_REPOSITORY.items()
    }  # fmt: skip
    for row in rows:
        for name, gauge in gauges.items():
            gauge.labels(repository=row.name).set(getattr(row, name))
    for name, text in _TOTALS.items():
        Gauge(f"regcleaner_usage_{name}", text, registry=registry).set(getattr(totals, name))
    Gauge("regcleaner_usage_last_run_timestamp_seconds", "When usage was measured (Unix time).",
          registry=registry).set(time.time())  # fmt: skip
    return registry


def export(
    totals: UsageTotals,
    rows: Iterable[RepositoryUsage],
    *,
    textfile: Path | None,
    pushgateway: str | None,
    job: str = "regcleaner_usage",
) -> None:
    """Write and/or push the gauges; a warning on failure."""
    if textfile is None and pushgateway is None:
        return
    registry = build_registry(totals, rows)
    if textfile is not None:
        try:
            write_to_textfile(str(textfile), registry)
        except OSError as exc:
            log.warning("cannot write usage metrics to %s: %s", textfile, exc.strerror)
    if pushgateway is not None:
        try:
            push_to_gateway(pushgateway, job=job, registry=registry, timeout=10)
        except OSError as exc:  # URLError is an OSError
            log.warning("cannot push usage metrics to %s: %s", pushgateway, exc)
