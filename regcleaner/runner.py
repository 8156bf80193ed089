"""Wiring: settings → byte store, registry view, remover, engine → report → exit code.

The CLI parses and prints; this module builds the parts a run needs, runs it on one
event loop, writes the report and metrics, and returns the exit code. ``clean``,
``clean --dry-run`` and ``clean --direct`` differ only in the remover built here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from regcleaner.concurrency import StopScope
from regcleaner.config import GcSettings, Mode, OutputFormat, RunTarget, Settings
from regcleaner.errors import ConfigError, RegcleanerError, RegistryMismatch
from regcleaner.exitcodes import EXIT_USAGE, RunEnd, exit_code
from regcleaner.registry.access import first_repository, make_gate, registry_client
from regcleaner.reporting.progress import RunProgress
from regcleaner.reporting.run import RunReport
from regcleaner.space import human_bytes
from regcleaner.storage.base import ByteStore
from regcleaner.view import RegistryView

if TYPE_CHECKING:
    from regcleaner.collector import Collector
    from regcleaner.engine import Engine
    from regcleaner.registry.client import RegistryResponse
    from regcleaner.reporting.collection import GcReport

log = logging.getLogger("regcleaner")


def make_store(settings: RunTarget) -> ByteStore:
    """The byte store the settings name (a registered backend; see storage/backends)."""
    from regcleaner.storage.backends import open_store

    return open_store(settings.store_settings())


def open_view(settings: RunTarget, store: ByteStore) -> RegistryView:
    """The registry view over ``store``, with the scan cache when ``--cache`` names one
    (``ScanCache.open``: one of another version, or damaged, starts afresh with a
    warning; a file that is not this storage's cache is left alone and the run reads
    everything, with a warning; a path where none can be made is a usage error)."""
    if settings.cache_path is None:
        return RegistryView(store)
    from regcleaner.scancache import NotThisCache, ScanCache

    try:
        cache = ScanCache.open(settings.cache_path, store.describe())
    except NotThisCache as exc:
        log.warning(
            "scan cache %s is not used and is left as it is: %s. This run reads "
            "everything; give --cache a file of its own for %s, or remove that one",
            settings.cache_path, exc, store.describe(),
        )  # fmt: skip
        return RegistryView(store)
    except OSError as exc:
        raise ConfigError(
            f"cannot open the scan cache {settings.cache_path}: {exc.strerror or exc}"
        ) from None
    return RegistryView(store, cache=cache)


async def close_view(view: RegistryView) -> None:
    """Close the store's connections and the scan cache (what was read stays in it)."""
    try:
        await view.store.aclose()
    finally:
        try:
            view.reads.close()
        finally:
            if view.cache is not None:
                log.info("scan cache %s: %d entries used, %d keys read from storage",
                         view.cache.path, view.cache.hits, view.cache.misses)  # fmt: skip
                view.cache.close()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (the ``fast`` extra): it halves the client's CPU per DELETE,
    and on a small machine that CPU is taken from the registry being cleaned."""
    if os.environ.get("REGCLEANER_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _writes_storage(settings: Settings | GcSettings) -> bool:
    """True for runs whose real run writes storage (``gc``, ``clean --direct``)."""
    return isinstance(settings, GcSettings) or settings.mode is Mode.DIRECT


async def dry_run_checks(
    settings: Settings | GcSettings, view: RegistryView, report: RunReport | GcReport
) -> None:
    """In a dry run, what the real run checks before deleting: the URL answers and
    accepts the credentials, and serves this storage (else the error the real run would
    end with: exit 3). For a run that writes storage, the gate's probes run too, in
    report-only mode: a registry that can still write (days before the window) is a
    warning and a ``gate`` entry in the report, not an error."""
    if settings.registry_url is None:
        return
    from regcleaner.errors import GateRefused
    from regcleaner.gate import (
        answers_or_stopped,
        prove_read_only,
        prove_same_storage,
        sample_storage,
    )

    writes = _writes_storage(settings)

    def would_refuse(exc: GateRefused) -> None:
        log.warning("dry run: the real run would refuse to write storage now: %s", exc)
        check = {"would_refuse": True, "reason": str(exc), "short": exc.short}
        report.gate_check = check

    await view.check()
    client = registry_client(settings)
    async with client:
        if writes:
            try:
                if await answers_or_stopped(client, registry_stopped=settings.registry_stopped):
                    report.gate_check = {"would_refuse": False, "reason": None}
                    return
            except GateRefused as exc:
                would_refuse(exc)
                return
        else:
            await client.ping()
        samples = await sample_storage(view)
        if samples:
            await prove_same_storage(client, view, samples)
        if not writes:
            return
        if not samples:
            would_refuse(
                GateRefused(
                    f"the storage {view.describe()} holds no manifest, so nothing proves that "
                    f"the registry at {client.base_url} serves it",
                    short="the storage holds no manifest to prove the URL serves it",
                )
            )
            return
        try:
            await prove_read_only(client, samples[0].repository, rounds=settings.gate_rounds)
        except GateRefused as exc:
            would_refuse(exc)
            return
        report.gate_check = {"would_refuse": False, "reason": None}


STORAGE_CONNECT_TIMEOUT_S = 3.0
"""How long the first TCP connection to an S3 endpoint may take before the run."""
STORAGE_CHECK_TIMEOUT_S = 6.0
"""How long the store's first request (HeadBucket, credentials included) may take."""


async def storage_reachable(settings: Settings | GcSettings, store: ByteStore) -> None:
    """Before the run, fail in seconds (exit 3) when the S3 endpoint does not answer,
    instead of after the client's retries (about 30 s): a TCP connection to an explicit
    endpoint first, then the store's own check under a short deadline."""
    s3 = settings.s3
    if s3 is None:
        return
    from regcleaner.errors import StorageUnreachable

    where = s3.endpoint_url or f"the S3 endpoint of bucket {s3.bucket!r}"
    if s3.endpoint_url:
        from urllib.parse import urlsplit

        parts = urlsplit(s3.endpoint_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(STORAGE_CONNECT_TIMEOUT_S):
                _, writer = await asyncio.open_connection(parts.hostname, port)
            writer.close()
        except TimeoutError:
            raise StorageUnreachable(
                f"cannot reach {where}: no connection within {STORAGE_CONNECT_TIMEOUT_S:g} s; "
                "check --s3-endpoint"
            ) from None
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise StorageUnreachable(f"cannot reach {where}: {why}; check --s3-endpoint") from None
    try:
        async with asyncio.timeout(STORAGE_CHECK_TIMEOUT_S):
            await store.check()
    except TimeoutError:
        raise StorageUnreachable(
            f"cannot reach {where}: S3 did not answer within {STORAGE_CHECK_TIMEOUT_S:g} s"
        ) from None


def make_remover(settings: Settings, view: RegistryView, stop: StopScope) -> Any:
    """API, direct or dry-run removal, as the settings ask."""
    if settings.dry_run:
        from regcleaner.removers.dryrun import DryRunRemover

        return DryRunRemover(needs_history=settings.mode is Mode.DIRECT)
    if settings.mode is Mode.DIRECT:
        from regcleaner.removers.direct import DirectRemover

        return DirectRemover(view, make_gate(settings, view), stop=stop)
    from regcleaner.removers.api import ApiRemover

    return ApiRemover(registry_client(settings), settings.limits, stopping=stop)


async def clean(
    engine: Engine,
    view: RegistryView,
    report: RunReport,
    collector: Callable[[], Collector] | None = None,
) -> None:
    """One clean over ``view``, filling ``report``; then, for ``--direct --gc``, the
    blob collection in the same maintenance window (not after a failed or stopped run).
    A dry run first checks what the real run would (``dry_run_checks``)."""
    try:
        await storage_reachable(engine.settings, view.store)
        if engine.settings.dry_run:
            await dry_run_checks(engine.settings, view, report)
        await settle_tag_removal(engine, view, report)
        await engine.run()
        report.finished = time.monotonic()
        if engine.settings.prune_empty_repositories:
            await _prune_empty(engine.settings, view, report)
        if collector is None:
            return
        c = report.counters
        if report.stopped_by or c.failed or c.repositories_failed:
            log.warning("blobs not collected: the removal did not finish cleanly; run again")
            return
        log.info("collecting blobs in the same window (--gc)")
        window = collector()
        try:
            await settle_registry_version(window)
            await window.run()
        except RegcleanerError as exc:
            # The collection's error, not the removal's: the report says so in ``gc``.
            window.report.fatal_error = str(exc)
            raise
    finally:
        report.finished = report.finished or time.monotonic()
        await close_view(view)


async def _prune_empty(settings: Settings, view: RegistryView, report: RunReport) -> None:
    """``--prune-empty-repositories``: in the same window, once the removal finished
    cleanly, the repositories it (or earlier runs) left empty."""
    c = report.counters
    if report.stopped_by or c.failed or c.repositories_failed:
        log.warning("empty repositories not pruned: the removal did not finish cleanly")
        return
    from regcleaner.emptyrepos import prune_in_window

    deleted_digests = report.deleted_digests if settings.dry_run else None
    report.empty_repositories = (
        await prune_in_window(settings, view, deleted_digests=deleted_digests)
    ).as_dict()


VERSION_PROBE = ("regcleaner/version-probe", "regcleaner-version-probe")


def registry_version_of(answer: RegistryResponse) -> str | None:
    """The major version a registry shows in its 404 for a tag it does not have:
    2.8's error detail is an object ``{"Tag": ...}``, 3's a string ``unknown tag=...``
    (measured on 2.8.2 and 3.1.1, writable or read-only); None for anything else."""
    if answer.status != 404 or answer.error_code != "MANIFEST_UNKNOWN":
        return None
    import json

    try:
        detail = json.loads(answer.body)["errors"][0].get("detail")
    except (ValueError, LookupError, TypeError, AttributeError):
        return None
    if isinstance(detail, dict) and "Tag" in detail:
        return "2"
    if isinstance(detail, str) and detail.startswith("unknown tag="):
        return "3"
    return None


async def settle_registry_version(collector: Collector) -> None:
    """``--registry-version``, else what the registry at the URL shows (see
    ``registry_version_of``). Anything else, or no URL: unknown (links stay)."""
    settings = collector.settings
    if settings.registry_version is not None or settings.registry_url is None:
        return
    from regcleaner.errors import RegistryError

    client = registry_client(settings)
    try:
        async with client:
            answer = await client.get_tag(*VERSION_PROBE)
    except RegistryError as exc:
        log.info("registry version not known (%s): _layers links of swept blobs stay", exc)
        return
    collector.know_registry(registry_version_of(answer))
    log.info("registry at %s: distribution %s", settings.registry_url,
             collector.registry or "not known (its _layers links of swept blobs stay)")  # fmt: skip


async def settle_tag_removal(engine: Engine, view: RegistryView, report: RunReport) -> None:
    """Through the API, find whether an expired tag can go alone (distribution 3 deletes
    a single tag; 2.8 deletes tags only with their digest), so that the dry run and the
    real run plan the same; only when tags may go (a policy, or orphan signatures)."""
    settings = engine.settings
    if settings.retention is None and not settings.prune_orphan_signatures:
        return
    remover = engine.remover
    if settings.mode is Mode.API and settings.registry_url is not None:
        repository = await first_repository(view)
        if repository is not None:
            from regcleaner.tagremoval import registry_deletes_tags

            client = registry_client(settings)
            async with client:
                remover.removes_tags = await registry_deletes_tags(client, repository)
    report.tag_removal = "alone" if remover.removes_tags else "with-digest"


def freeze_imports() -> None:
    """Move everything the imports created out of the collector's way.

    Every DELETE allocates a few hundred short-lived objects in aiohttp; a full
    collection would walk every object the imports made, aiohttp's included. Freezing
    them (once the run's modules are imported, which happens lazily) and a larger first
    generation cost ~3% less client CPU in ``make bench``: CPU the registry being cleaned
    gets back on a shared machine.
    """
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def run(
    coroutine: Coroutine[Any, Any, None],
    report: RunReport | GcReport,
    *,
    logged: Callable[[BaseException], bool] = lambda error: False,
) -> BaseException | None:
    """Run on a fresh event loop; return the error that ended the run, if any. The error
    is logged once: not again when ``logged`` says the run already did."""
    error: BaseException | None = None
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(coroutine)
    except RegcleanerError as exc:
        error = exc
        window = getattr(report, "gc", None)
        if window is None or window.fatal_error != str(exc):
            report.fatal_error = str(exc)  # the run's error, not its blob collection's
        if not logged(exc):
            log.error("%s", exc)
    except KeyboardInterrupt:
        report.stopped_by = report.stopped_by or "SIGINT"
    except Exception as exc:  # a bug: say so, keep the traceback, still write the report
        error = exc
        log.exception("internal error, please report it: %s", type(exc).__name__)
        report.fatal_error = f"internal error: {type(exc).__name__}"
    return error


def write_report(path: Path, write: Callable[[IO[str]], object]) -> bool:
    """The JSON report file, written by ``write``; False, said in an error, when it
    cannot be written (the caller makes that a failed run: its record is lost)."""
    try:
        with path.open("w", encoding="utf-8") as stream:
            write(stream)
    except OSError as exc:
        log.error("cannot write report %s: %s", path, exc.strerror)
        return False
    return True


def write_outputs(settings: Settings | GcSettings, report: RunReport | GcReport) -> int:
    """The JSON report file, and the summary (text or JSON) on standard output; 1 if
    the report file could not be written (a failure: the run's record is lost), else 0."""
    lost = 0
    if settings.report_path is not None and not write_report(settings.report_path,
                                                             report.write_json):  # fmt: skip
        lost = 1
    if settings.output.format is OutputFormat.JSON:
        report.write_json(sys.stdout)
    elif not report.aborted:
        from rich.console import Console

        report.render_summary(Console())
    return lost


def export_metrics(settings: Settings | GcSettings, report: RunReport, code: int) -> None:
    """Metrics, when asked for (prometheus-client is imported only then)."""
    if settings.output.metrics_file is None and settings.output.pushgateway is None:
        return
    from regcleaner import metrics

    metrics.export(
        report,
        exit_code=code,
        textfile=settings.output.metrics_file,
        pushgateway=settings.output.pushgateway,
    )


def run_clean(settings: Settings) -> int:
    """A whole ``clean``: run, report, metrics; the exit code."""
    store = make_store(settings)  # opens nothing yet; clean() closes it
    try:
        view = open_view(settings, store)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    mode = "dry-run" if settings.dry_run else settings.mode.value
    report = RunReport(
        dry_run=settings.dry_run,
        registry_url=settings.registry_url,
        storage=store.describe(),
        mode=mode,
    )
    from regcleaner.engine import Engine

    stop = StopScope(settings.stop_grace_s)  # one stop for the removal and its collection
    store.stop = stop
    remover = make_remover(settings, view, stop)  # imports what the run needs
    progress = RunProgress(report, interval_s=settings.progress_interval_s)
    engine = Engine(settings, view, remover, report, progress=progress, stop=stop)
    collector: Callable[[], Collector] | None = None
    gc_report: GcReport | None = None
    if settings.gc is not None:
        view.reads.record_blob_walks()  # gc's sweep takes the scan's listing of the blobs
        from regcleaner.collector import Collector
        from regcleaner.reporting.collection import GcReport
        from regcleaner.reporting.progress import GcProgress

        gc_report = GcReport(
            dry_run=settings.dry_run,
            storage=store.describe(),
            registry_running=not settings.registry_stopped,
        )
        if settings.dry_run:
            report.deleted_digests = {}  # the gc dry run marks as if the deletions were done
        gc_settings, window_report = settings.gc, gc_report

        def collector() -> Collector:
            report.gc = window_report  # in the report only once collection starts
            return Collector(
                gc_settings, view, window_report,
                gate=None if settings.dry_run else make_gate(gc_settings, view),
                progress=GcProgress(window_report, interval_s=settings.progress_interval_s),
                stop=stop, deleted_digests=report.deleted_digests,
            )  # fmt: skip

    if settings.dry_run and settings.prune_empty_repositories and report.deleted_digests is None:
        report.deleted_digests = {}  # the dry run lists what its deletions would leave empty
    freeze_imports()
    try:
        error = run(
            clean(engine, view, report, collector),
            report,
            logged=lambda exc: exc is engine.fatal_error,
        )
        report.storage_mismatch = isinstance(error, RegistryMismatch)
        selecting = settings.include or settings.exclude
        if selecting and error is None and report.counters.repositories == 0:
            log.warning(
                "--include/--exclude selected no repository of %s: nothing was scanned "
                "(globs: * within a segment, ** across)", store.describe(),
            )  # fmt: skip
        lost = write_outputs(settings, report)
        if gc_report is not None and gc_report.stopped_by:
            report.stopped_by = report.stopped_by or gc_report.stopped_by
    finally:
        report.close()
        if gc_report is not None:
            gc_report.close()
    c = report.counters
    failures = c.failed + c.repositories_failed + (gc_report.counters.failed if gc_report else 0)
    code = exit_code(RunEnd(error, report.stopped_by, failures + lost))
    if not report.aborted:
        log.info(
            "finished in %.1fs: %d repositories, %d manifests, %d kept, %d %s, %d already "
            "gone, %d failed; exit code %d",
            report.duration_s, c.repositories, c.manifests, c.kept,
            c.would_delete if settings.dry_run else 0 if report.storage_mismatch else c.deleted,
            "would be deleted" if settings.dry_run else "deleted", c.already_gone, c.failed, code,
        )  # fmt: skip
    export_metrics(settings, report, code)
    return code


def run_gc(settings: GcSettings) -> int:
    """A whole ``gc``: gate, mark, sweep, report; the exit code."""
    from regcleaner.collector import Collector
    from regcleaner.reporting.collection import GcReport
    from regcleaner.reporting.progress import GcProgress

    store = make_store(settings)
    try:
        view = open_view(settings, store)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    report = GcReport(
        dry_run=settings.dry_run,
        storage=store.describe(),
        registry_running=not settings.registry_stopped,
    )
    view.reads.record_blob_walks()  # the sweep takes the mark's listing of the blobs
    gate = None
    if not settings.dry_run:
        gate = make_gate(settings, view)
    stop = StopScope(settings.stop_grace_s)
    store.stop = stop
    collector = Collector(
        settings, view, report, gate=gate,
        progress=GcProgress(report, interval_s=settings.output.progress_interval_s), stop=stop,
    )  # fmt: skip
    freeze_imports()

    async def collect() -> None:
        try:
            await storage_reachable(settings, store)
            if settings.dry_run:
                await dry_run_checks(settings, view, report)
            await settle_registry_version(collector)
            await collector.run()
        finally:
            await close_view(view)

    try:
        error = run(collect(), report)
        lost = write_outputs(settings, report)
    finally:
        report.close()
    c = report.counters
    code = exit_code(RunEnd(error, report.stopped_by, c.failed + lost))
    if not report.aborted:
        log.info(
            "gc finished in %.1fs: %d manifests marked, %d of %d blobs %s (%s); exit code %d",
            report.duration_s, c.manifests, c.to_sweep if settings.dry_run else c.swept,
            c.blobs, "would be swept" if settings.dry_run else "swept",
            human_bytes(c.to_sweep_bytes if settings.dry_run else c.swept_bytes), code,
        )  # fmt: skip
    return code
