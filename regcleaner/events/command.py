"""``regcleaner events``: the typer sub-app (``serve``, ``import-log``).

Module-level imports stay light (typer and the standard library): aiohttp, SQLite and
prometheus are imported inside the commands, so the CLI starts as fast without them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from regcleaner.exitcodes import EXIT_FAILED, EXIT_USAGE
from regcleaner.options import command_group, grouped, help_when_bare

TOKEN_VARIABLE = "REGCLEANER_EVENTS_TOKEN"  # noqa: S105 (the variable's name)

events_app = command_group(
    "events", "Record pull times from the registry's notifications (for pulled_within rules)."
)
events_app.callback()(help_when_bare)

log = logging.getLogger("regcleaner.events")

if TYPE_CHECKING:
    from regcleaner.events.envelope import ManifestPull
    from regcleaner.events.store import PullStore


def _fail(message: str, code: int = EXIT_USAGE, log_format: str | None = None) -> typer.Exit:
    from regcleaner.logs import usage_error_line

    typer.echo(usage_error_line(message, log_format), err=True)
    return typer.Exit(code)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port)."""
    host, separator, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"--listen: expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"--listen: port {port} is not between 0 and 65535")
    return host, port


def _setup_logging(verbose: bool, json_logs: bool) -> None:
    from regcleaner.config import OutputFormat
    from regcleaner.logs import setup_logging

    setup_logging(verbose, OutputFormat.JSON if json_logs else OutputFormat.TEXT)


@events_app.command()
@grouped
def serve(
    *,
    db: Path,
    listen: str = "127.0.0.1:5080",
    max_body: int = 1024 * 1024,
    log_format: str = "text",
    verbose: bool = False,
) -> None:
    """Receive the registry's notifications at POST /events and record each manifest pull.

    The bearer token the registry sends (its endpoint's headers) is read from
    REGCLEANER_EVENTS_TOKEN; without it every request is accepted (loopback tests only).
    """
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise _fail(str(exc), log_format=log_format) from None
    if log_format not in ("text", "json"):
        raise _fail(f"--log-format: expected text or json, got {log_format!r}")
    _setup_logging(verbose, log_format == "json")
    token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None:
        log.warning("%s is not set: envelopes are accepted WITHOUT authentication; use this "
                    "only on a loopback address for tests", TOKEN_VARIABLE)  # fmt: skip
    import asyncio

    from regcleaner.events.server import ServeConfig, serve
    from regcleaner.events.store import PullStoreError
    from regcleaner.runner import event_loop_factory

    config = ServeConfig(host=host, port=port, db=db, token=token, max_body=max_body)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(config))
    except PullStoreError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None


@events_app.command("import-log")
@grouped
def import_log(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help="Registry logs (plain or .gz).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    *,
    db: Path,
    complete: bool = False,
) -> None:
    """Record the manifest GETs (answered 200) that the registry's logs show.

    Pulls by tag are recorded for the tag only: a log does not say which digest it served.
    HEAD requests are not pulls.
    """
    from regcleaner.events.accesslog import LogSummary, read_pulls
    from regcleaner.events.decision import format_time
    from regcleaner.events.store import PullStore, PullStoreError

    try:
        store = PullStore(db)
    except PullStoreError as exc:
        raise _fail(str(exc)) from None
    summary = LogSummary()
    try:
        pulls: list[ManifestPull] = []
        for path in files:
            try:
                pulls.extend(read_pulls(path, summary))
            except (OSError, EOFError) as exc:
                raise _fail(f"{path}: cannot read: {exc}", EXIT_FAILED) from None
        store.record(pulls)
        typer.echo(f"{summary.pulls} manifest pulls recorded from {summary.requests} requests "
                   f"in {summary.lines} lines of {len(files)} files "
                   f"({format_time(summary.first)} to {format_time(summary.last)})")  # fmt: skip
        if complete:
            typer.echo(_extend_coverage(store, summary.first, summary.last))
    finally:
        store.close()


def _extend_coverage(store: PullStore, first: float | None, last: float | None) -> str:
    """Move the start of coverage back to ``first`` if the logs reach recording's start."""
    from regcleaner.events.decision import format_time

    since = store.recording_since()
    if first is None or last is None:
        return "coverage unchanged: the files show no request"
    if since is None:
        return ("coverage unchanged: events serve has not recorded an envelope yet (a log "
                "alone never proves that something was not pulled)")  # fmt: skip
    if last < since:
        return (f"coverage unchanged: the logs end {format_time(last)}, before recording "
                f"began {format_time(since)} (a gap nobody saw)")  # fmt: skip
    start = store.extend_coverage(first)
    return f"recording now covers pulls since {format_time(start)}"
