"""Command line: options and environment variables → Settings → one run → exit code.

Parsing and printing only: validation lives in ``regcleaner.config``, the wiring of a
run in ``regcleaner.runner``, the exit-code policy in ``regcleaner.exitcodes``. Numbers
and durations are taken as text so that ``config`` can refuse ``nan``, ``inf``,
negative values and non-ASCII digits with one clear line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from regcleaner import __version__
from regcleaner.config import (
    GC_NEEDS_DIRECT,
    GcSettings,
    Output,
    StorageSettings,
    build_gc_settings,
    build_settings,
)
from regcleaner.errors import ConfigError
from regcleaner.events.command import events_app
from regcleaner.exitcodes import EXIT_USAGE
from regcleaner.options import (
    CollectionOptions,
    GateOptions,
    OutputOptions,
    SpeedOptions,
    Target,
    TargetOptions,
    command_group,
    grouped,
    help_when_bare,
)
from regcleaner.usage.command import prune_empty_repositories as prune_empty_command
from regcleaner.usage.command import usage

app = command_group(
    "regcleaner", "Delete the manifests no tag can reach from a Docker/OCI registry."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"regcleaner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """regcleaner: safe cleanup of a Docker/OCI registry."""
    help_when_bare(context)


def _usage_error(
    exc: ConfigError, context: typer.Context | None = None, log_format: str | None = None
) -> typer.Exit:
    from regcleaner.logs import usage_error_line

    message = str(exc)
    if context is not None:
        message = _name_the_source(message, context)
    typer.echo(usage_error_line(message, log_format), err=True)
    return typer.Exit(EXIT_USAGE)


def _name_the_source(message: str, context: typer.Context) -> str:
    """Add the environment variable a bad value came from, when the message names its
    option and the value was not typed on the command line."""
    for parameter in context.command.params:
        if not parameter.name or not getattr(parameter, "envvar", None):
            continue
        source = context.get_parameter_source(parameter.name)
        if source is None or source.name != "ENVIRONMENT":
            continue
        envvar = parameter.envvar
        variables = [envvar] if isinstance(envvar, str) else list(envvar or ())
        present = [name for name in variables if name in os.environ]
        if present and any(flag in message for flag in parameter.opts):
            return f"{message} (from the environment variable {present[0]})"
    return message


def _warn_ignored(storage: StorageSettings) -> None:
    for name in storage.ignored:
        typer.echo(f"warning: {name} is for --storage s3; ignored with filesystem storage",
                   err=True)  # fmt: skip


def _start_logging(output: Output) -> None:
    from regcleaner.logs import setup_logging

    setup_logging(output.verbose, output.log_format)


@dataclass(frozen=True, slots=True)
class _Common(Target):
    """What every command that reads storage and may talk to the registry validates:
    the target, and where results go."""

    output: Output


def _common(target: TargetOptions, output: OutputOptions) -> _Common:
    where = target.settings()
    return _Common(where.url, where.storage, where.credentials, where.tls, output.settings())


def _collection_settings(
    common: _Common, gate: GateOptions, collection: CollectionOptions, *, dry_run: bool,
    stop_grace: str,
) -> GcSettings:  # fmt: skip
    return build_gc_settings(
        registry_url=common.url, storage=common.storage, credentials=common.credentials,
        tls=common.tls, output=common.output, dry_run=dry_run,
        registry_stopped=gate.registry_stopped, gate_rounds=gate.rounds(),
        min_blob_age=collection.min_blob_age, prune_layer_links=collection.prune_layer_links,
        purge_uploads=collection.purge_uploads, stop_grace=stop_grace,
        registry_version=collection.registry_version,
    )  # fmt: skip


@app.command()
@grouped
def clean(
    context: typer.Context,
    *,
    dry_run: bool = False,
    target: TargetOptions,
    min_age: str = "1h",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    policy: Path | None = None,
    pulls_db: Path | None = None,
    prune_orphan_signatures: bool = False,
    direct: bool = False,
    gate: GateOptions,
    prune_empty_repositories: bool = False,
    gc: bool = False,
    collection: CollectionOptions,
    speed: SpeedOptions,
    stop_grace: str = "10",
    estimate_space: bool = True,
    output: OutputOptions,
    shard: str | None = None,
    shards: str | None = None,
) -> None:
    """Delete what no tag reaches: through the API, or --direct in a window."""
    try:
        if collection.given() and not gc:
            raise ConfigError(
                "--min-blob-age, --prune-layer-links, --purge-uploads and --registry-version "
                "need --gc"
            )
        common = _common(target, output)
        if gc and not direct:
            raise ConfigError(GC_NEEDS_DIRECT)
        settings = build_settings(
            registry_url=common.url, storage=common.storage, credentials=common.credentials,
            tls=common.tls, output=common.output, dry_run=dry_run, direct=direct,
            registry_stopped=gate.registry_stopped, gate_rounds=gate.rounds(),
            pace=speed.settings(), stop_grace=stop_grace,
            min_age=min_age, include=include, exclude=exclude,
            estimate_space=estimate_space, shard=shard, shards=shards,
            completion_index=os.environ.get("JOB_COMPLETION_INDEX"), policy=policy,
            prune_orphan_signatures=prune_orphan_signatures, pulls_db=pulls_db,
            prune_empty_repositories=prune_empty_repositories,
            gc=(
                _collection_settings(common, gate, collection, dry_run=dry_run,
                                     stop_grace=stop_grace)
                if gc else None
            ),
        )  # fmt: skip
    except ConfigError as exc:
        raise _usage_error(exc, context, output.log_format) from None
    _warn_ignored(common.storage)
    from regcleaner.runner import run_clean

    _start_logging(settings.output)
    raise typer.Exit(run_clean(settings))


def main() -> None:
    """Console-script entry point."""
    app()


@app.command()
@grouped
def gc(
    context: typer.Context,
    *,
    dry_run: bool = False,
    target: TargetOptions,
    gate: GateOptions,
    collection: CollectionOptions,
    stop_grace: str = "10",
    output: OutputOptions,
) -> None:
    """Collect unreferenced blobs, as garbage-collect does, faster (window only)."""
    try:
        common = _common(target, output)
        settings = _collection_settings(
            common, gate, collection, dry_run=dry_run, stop_grace=stop_grace
        )
    except ConfigError as exc:
        raise _usage_error(exc, context, output.log_format) from None
    _warn_ignored(common.storage)
    from regcleaner.runner import run_gc

    _start_logging(settings.output)
    raise typer.Exit(run_gc(settings))


app.command("usage")(usage)
app.command("prune-empty-repositories")(prune_empty_command)
app.add_typer(events_app, name="events")

policy_app = command_group("policy", "Tag retention policies.")
app.add_typer(policy_app, name="policy")
policy_app.callback()(help_when_bare)


@policy_app.command("check")
def policy_check(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The policy file to validate.")],
) -> None:
    """Validate a retention policy file and say what it keeps; touch nothing."""
    from regcleaner.policyfile import load_policy
    from regcleaner.retention import describe

    try:
        loaded = load_policy(str(file))
    except ConfigError as exc:
        raise _usage_error(exc) from None
    for line in describe(loaded):
        typer.echo(line)
    typer.echo(f"{file}: valid; repositories no policy matches keep every tag")
