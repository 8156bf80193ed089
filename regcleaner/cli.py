"""Command line: options and environment variables → Settings → one run → exit code.

No logic lives here beyond wiring. Exit codes: 0 done (or dry run), 1 some deletions
or repositories failed, 2 bad usage or configuration, 3 registry unreachable,
credentials refused or deletion disabled, 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from regcleaner import __version__
from regcleaner.config import (
    Credentials,
    Limits,
    OutputFormat,
    S3Options,
    Settings,
    StorageKind,
    TLSOptions,
    is_loopback_url,
    parse_credentials,
    parse_duration,
    parse_registry_url,
    parse_shard,
    parse_storage_kind,
    read_password_file,
)
from regcleaner.engine import Engine
from regcleaner.errors import ConfigError, RegcleanerError
from regcleaner.registry.auth import Authorizer
from regcleaner.registry.client import RegistryClient
from regcleaner.report import Progress, RunReport
from regcleaner.storage.base import Storage
from regcleaner.storage.filesystem import FilesystemStorage

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REGISTRY = 0, 1, 2, 3
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}

app = typer.Typer(
    name="regcleaner",
    help="Delete the manifests no tag can reach from a Docker/OCI registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("regcleaner")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"regcleaner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """regcleaner: safe cleanup of untagged manifests."""


def build_settings(
    *,
    registry_url: str | None,
    registry_dir: Path | None,
    storage: str,
    bucket: str | None,
    region: str | None,
    s3_endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
    auth: str | None,
    username: str | None,
    password_file: Path | None,
    allow_insecure_auth: bool,
    insecure: bool,
    ca_cert: Path | None,
    dry_run: bool,
    concurrency: int,
    per_repository: int,
    rate: float,
    min_age: str,
    include: list[str] | None,
    exclude: list[str] | None,
    report: Path | None,
    output: str,
    progress_interval: float,
    timeout: float = 60.0,
    stop_grace: float = 10.0,
    estimate_space: bool = True,
    shard: str | None = None,
    shards: int | None = None,
) -> Settings:
    """Validate everything the operator gave; raise ConfigError on the first problem."""
    if registry_url is None:
        raise ConfigError("the registry URL is required: --registry-url or REGISTRY_URL")
    url = parse_registry_url(registry_url)
    kind = parse_storage_kind(storage)
    s3_options: S3Options | None = None
    if kind is StorageKind.S3:
        if not bucket:
            raise ConfigError("S3 storage needs a bucket: --bucket or BUCKET")
        if bool(access_key) != bool(secret_key):
            raise ConfigError("give both --access-key and --secret-key, or neither")
        if s3_endpoint:
            parse_registry_url(s3_endpoint)  # same shape rules: http(s)://host[:port]
        s3_options = S3Options(
            bucket=bucket,
            prefix=str(registry_dir or "").strip("/"),
            region=region or None,
            endpoint_url=s3_endpoint or None,
            access_key=access_key or None,
            secret_key=secret_key or None,
        )
    credentials: Credentials | None = parse_credentials(auth) if auth else None
    if password_file is not None:
        if credentials is not None:
            raise ConfigError("give --auth or --password-file, not both")
        if not username:
            raise ConfigError("--password-file needs --username (REGISTRY_USERNAME)")
        credentials = Credentials(username, read_password_file(password_file))
    elif username:
        raise ConfigError("--username needs --password-file; or use --auth user:password")
    if (
        credentials is not None
        and url.startswith("http://")
        and not is_loopback_url(url)
        and not allow_insecure_auth
    ):
        raise ConfigError(
            "refusing to send credentials over plain HTTP to a remote registry; use https:// "
            "or pass --allow-insecure-auth"
        )
    if ca_cert is not None and not ca_cert.is_file():
        raise ConfigError(f"CA certificate {ca_cert} does not exist")
    if concurrency < 1 or per_repository < 1:
        raise ConfigError("--concurrency and --per-repository must be at least 1")
    if timeout <= 0 or stop_grace < 0:
        raise ConfigError("--timeout must be positive and --stop-grace not negative")
    if rate < 0:
        raise ConfigError("--rate must be 0 (unlimited) or a positive number of deletes/s")
    try:
        output_format = OutputFormat(output.lower())
    except ValueError:
        raise ConfigError(f"unknown output format {output!r}: use text or json") from None
    if report is not None and report.exists() and report.is_dir():
        raise ConfigError(f"--report {report} is a directory")
    return Settings(
        registry_url=url,
        registry_dir=registry_dir if registry_dir is not None else Path("/registry"),
        storage=kind,
        s3=s3_options,
        credentials=credentials,
        tls=TLSOptions(insecure=insecure, ca_cert=ca_cert),
        dry_run=dry_run,
        limits=Limits(
            concurrency=concurrency,
            per_repository=min(per_repository, concurrency),
            rate=rate,
            request_timeout_s=timeout,
        ),
        stop_grace_s=stop_grace,
        estimate_space=estimate_space,
        shard=parse_shard(shard, shards, os.environ.get("JOB_COMPLETION_INDEX")),
        min_age_s=parse_duration(min_age),
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        report_path=report,
        output=output_format,
        progress_interval_s=progress_interval,
    )


def make_storage(settings: Settings) -> Storage:
    """The storage backend the settings name."""
    if settings.s3 is not None:
        from regcleaner.storage.s3 import S3Storage

        return S3Storage(settings.s3)
    return FilesystemStorage(settings.registry_dir)


async def run_clean(settings: Settings, report: RunReport, storage: Storage) -> None:
    """Run one clean with the given settings over ``storage``, filling ``report``."""
    progress = Progress(report, interval_s=settings.progress_interval_s)
    try:
        if settings.dry_run:
            engine = Engine(settings, storage, report, None)
            progress.start()
            await engine.run()
        else:
            client = RegistryClient(
                settings.registry_url,
                Authorizer(settings.credentials),
                settings.tls,
                settings.limits,
            )
            async with client:
                engine = Engine(settings, storage, report, client)
                progress.start()
                await engine.run()
    finally:
        report.finished = report.finished or time.monotonic()
        await progress.stop()
        await storage.aclose()


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


def _write_outputs(settings: Settings, report: RunReport) -> None:
    if settings.report_path is not None:
        try:
            with settings.report_path.open("w", encoding="utf-8") as stream:
                report.write_json(stream)
        except OSError as exc:
            log.error("cannot write report %s: %s", settings.report_path, exc.strerror)
    if settings.output is OutputFormat.JSON:
        report.write_json(sys.stdout)
    else:
        from rich.console import Console

        report.render_summary(Console())


class JSONLinesFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(document, ensure_ascii=False)


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        formatter = JSONLinesFormatter()
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        from regcleaner.report import stderr_console

        # Shares the progress bars' console, so a log line never tears a bar.
        handler = RichHandler(console=stderr_console(), show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("regcleaner")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


@app.command()
def clean(
    registry_url: Annotated[
        str | None,
        typer.Option(envvar="REGISTRY_URL", help="Registry base URL, e.g. https://reg.example.com"),
    ] = None,
    registry_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="REGISTRY_DIR",
            help="Storage root: a directory (default /registry), or on S3 the registry's "
            "rootdirectory inside the bucket (default the bucket root).",
        ),
    ] = None,
    storage: Annotated[
        str,
        typer.Option(envvar="REGISTRY_STORAGE", help="filesystem (default) or s3."),
    ] = "filesystem",
    bucket: Annotated[
        str | None, typer.Option(envvar="BUCKET", help="S3 bucket of the registry.")
    ] = None,
    region: Annotated[str | None, typer.Option(envvar="REGION", help="S3 region.")] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar=["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3"],
            help="S3-compatible endpoint URL (MinIO, Ceph, R2); path-style addressing.",
        ),
    ] = None,
    access_key: Annotated[
        str | None,
        typer.Option(envvar="ACCESS_KEY", show_default=False, help="S3 access key id."),
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option(
            envvar="SECRET_KEY",
            show_default=False,
            help="S3 secret key (else the AWS credential chain: env, profile, web identity).",
        ),
    ] = None,
    auth: Annotated[
        str | None,
        typer.Option(
            envvar="REGISTRY_AUTH",
            show_default=False,
            show_envvar=True,
            help="user:password for the registry (split on the first colon).",
        ),
    ] = None,
    username: Annotated[
        str | None,
        typer.Option(envvar="REGISTRY_USERNAME", help="Username, with --password-file."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            envvar="REGISTRY_PASSWORD_FILE",
            help="File holding the password (e.g. a mounted Secret), so it is not in argv.",
        ),
    ] = None,
    allow_insecure_auth: Annotated[
        bool,
        typer.Option(
            "--allow-insecure-auth",
            envvar="ALLOW_INSECURE_AUTH",
            help="Allow credentials over plain http:// to a non-loopback registry.",
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            envvar="SELF_SIGNED_CERT",
            help="Do not verify the registry's TLS certificate.",
        ),
    ] = False,
    ca_cert: Annotated[
        Path | None, typer.Option(help="PEM file of the CA that signed the registry's cert.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", envvar="DRY_RUN", help="Report the plan, delete nothing.")
    ] = False,
    concurrency: Annotated[int, typer.Option(help="DELETE requests in flight at most.")] = 32,
    per_repository: Annotated[
        int, typer.Option(help="DELETE requests in flight per repository at most.")
    ] = 4,
    rate: Annotated[float, typer.Option(help="DELETE requests per second; 0 = unlimited.")] = 0,
    min_age: Annotated[
        str, typer.Option(help="Keep manifests pushed less than this long ago (e.g. 1h, 7d).")
    ] = "0",
    include: Annotated[
        list[str] | None, typer.Option(help="Only repositories matching this glob (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip repositories matching this glob (repeatable).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    output: Annotated[str, typer.Option(help="Standard output: text or json.")] = "text",
    progress_interval: Annotated[
        float, typer.Option(help="Seconds between progress lines when not on a terminal.")
    ] = 10.0,
    timeout: Annotated[
        float, typer.Option(help="Seconds before one registry request is abandoned and retried.")
    ] = 60.0,
    stop_grace: Annotated[
        float,
        typer.Option(help="On SIGTERM/SIGINT, seconds to let in-flight DELETEs finish."),
    ] = 10.0,
    estimate_space: Annotated[
        bool,
        typer.Option(
            help="Estimate the bytes garbage-collect will free (kept in a temporary "
            "SQLite file that grows with the registry's distinct blobs, not in memory)."
        ),
    ] = True,
    shard: Annotated[
        str | None,
        typer.Option(
            envvar="REGCLEANER_SHARD",
            help="I/N: clean only shard I of N (stable hash of the repository name).",
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            envvar="REGCLEANER_SHARDS",
            help="N shards, with I from JOB_COMPLETION_INDEX (Kubernetes Indexed Job).",
        ),
    ] = None,
    log_format: Annotated[
        str, typer.Option(envvar="REGCLEANER_LOG_FORMAT", help="Log lines: text or json.")
    ] = "text",
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            envvar="REGCLEANER_METRICS_FILE",
            help="Write run metrics here (Prometheus textfile collector format).",
        ),
    ] = None,
    pushgateway: Annotated[
        str | None,
        typer.Option(envvar="REGCLEANER_PUSHGATEWAY", help="Push run metrics to this URL."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every retry.")] = False,
) -> None:
    """Find the manifests no tag can reach and delete them through the registry API."""
    if log_format not in ("text", "json"):
        typer.echo(f"error: unknown log format {log_format!r}: use text or json", err=True)
        raise typer.Exit(EXIT_USAGE)
    _setup_logging(verbose, log_format)
    try:
        settings = build_settings(
            registry_url=registry_url,
            registry_dir=registry_dir,
            storage=storage,
            bucket=bucket,
            region=region,
            s3_endpoint=s3_endpoint,
            access_key=access_key,
            secret_key=secret_key,
            auth=auth,
            username=username,
            password_file=password_file,
            allow_insecure_auth=allow_insecure_auth,
            insecure=insecure,
            ca_cert=ca_cert,
            dry_run=dry_run,
            concurrency=concurrency,
            per_repository=per_repository,
            rate=rate,
            min_age=min_age,
            include=include,
            exclude=exclude,
            report=report,
            output=output,
            progress_interval=progress_interval,
            timeout=timeout,
            stop_grace=stop_grace,
            estimate_space=estimate_space,
            shard=shard,
            shards=shards,
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None

    backend = make_storage(settings)  # opens nothing yet; run_clean closes it
    run_report = RunReport(
        dry_run=settings.dry_run,
        registry_url=settings.registry_url,
        storage=backend.describe(),
    )
    code = EXIT_OK
    try:
        try:
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(run_clean(settings, run_report, backend))
        except RegcleanerError as exc:
            run_report.fatal_error = str(exc)
            log.error("%s", exc)
            code = exc.exit_code
        except KeyboardInterrupt:
            run_report.stopped_by = run_report.stopped_by or "SIGINT"
        except Exception as exc:  # a bug: say so, keep the traceback, still write the report
            log.exception("internal error, please report it: %s", type(exc).__name__)
            run_report.fatal_error = f"internal error: {type(exc).__name__}"
            code = EXIT_FAILED
        _write_outputs(settings, run_report)
    finally:
        run_report.close()
    if code == EXIT_OK and run_report.stopped_by:
        code = EXIT_SIGNAL.get(run_report.stopped_by, EXIT_FAILED)
    if code == EXIT_OK and (run_report.counters.failed or run_report.counters.repositories_failed):
        code = EXIT_FAILED
    c = run_report.counters
    log.info(
        "finished in %.1fs: %d repositories, %d manifests, %d kept, %d %s, %d already gone, "
        "%d failed; exit code %d",
        run_report.duration_s, c.repositories, c.manifests, c.kept,
        c.would_delete if settings.dry_run else c.deleted,
        "would be deleted" if settings.dry_run else "deleted", c.already_gone, c.failed, code,
    )  # fmt: skip
    if metrics_file is not None or pushgateway is not None:
        from regcleaner import metrics  # prometheus-client: imported only when asked for

        metrics.export(run_report, exit_code=code, textfile=metrics_file, pushgateway=pushgateway)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    # Every DELETE allocates a few hundred short-lived objects in aiohttp. Freezing what
    # the imports created keeps the collector from walking it again, and a larger first
    # generation means fewer collections: ~3% less client CPU in `make bench`, CPU the
    # registry being cleaned gets back on a shared machine.
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    app()
