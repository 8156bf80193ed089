"""Option groups: every command-line option is declared once, here.

A command takes whole groups as parameters (``storage: StorageOptions``); ``grouped``
spreads each group's fields into the typer options of the command and hands the
command one frozen value per group. Values stay raw text (numbers and durations
included) so that ``regcleaner.config`` validates them once, with one message naming
the option (``nan``, ``inf``, negatives and non-ASCII digits are refused there).

Help panels name what an option is about, so that ``clean --help`` reads in groups.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import typer

from regcleaner.config import (
    Credentials,
    Output,
    StorageSettings,
    TLSOptions,
    access_settings,
    output_settings,
    parse_registry_url,
    storage_settings,
)
from regcleaner.quantities import parse_count

REGISTRY = "Registry"
STORAGE = "Storage"
ACCESS = "Credentials and TLS"
KEEP = "What to keep"
MAINTENANCE = "Maintenance window"
COLLECTION = "Blob collection"
SPEED = "Speed"
OUTPUT = "Output and monitoring"
KUBERNETES = "Kubernetes"


class OptionGroup:
    """A frozen set of options that several commands share; see ``grouped``."""

    __slots__ = ()
    environment: ClassVar[dict[str, str]] = {}
    """Option name → environment variable, for messages that must name where a bad
    value came from."""


@dataclass(frozen=True, slots=True)
class RegistryOptions(OptionGroup):
    """Where the registry answers."""

    registry_url: Annotated[
        str | None,
        typer.Option(envvar="REGISTRY_URL", rich_help_panel=REGISTRY,
                     help="Registry base URL, e.g. https://registry.example.com"),
    ] = None  # fmt: skip

    def url(self) -> str | None:
        """The validated URL without a trailing slash, or None."""
        return parse_registry_url(self.registry_url) if self.registry_url else None


@dataclass(frozen=True, slots=True)
class StorageOptions(OptionGroup):
    """Where the registry keeps its files: a directory, or a bucket."""

    registry_dir: Annotated[
        Path | None,
        typer.Option(envvar="REGISTRY_DIR", rich_help_panel=STORAGE, show_default=False,
                     help="Storage root: a directory (default /registry); on S3 the "
                     "registry's rootdirectory in the bucket (default: the bucket root)."),
    ] = None  # fmt: skip
    storage: Annotated[
        str,
        typer.Option(envvar="REGISTRY_STORAGE", metavar="[filesystem|s3]",
                     rich_help_panel=STORAGE, help="Where the registry keeps its files."),
    ] = "filesystem"  # fmt: skip
    bucket: Annotated[
        str | None, typer.Option(envvar="BUCKET", rich_help_panel=STORAGE, help="S3 bucket.")
    ] = None
    region: Annotated[
        str | None, typer.Option(envvar="REGION", rich_help_panel=STORAGE, help="S3 region.")
    ] = None
    s3_endpoint: Annotated[
        str | None,
        typer.Option(envvar=["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3"], rich_help_panel=STORAGE,
                     help="S3-compatible endpoint (MinIO, Ceph, R2); path-style addressing."),
    ] = None  # fmt: skip
    access_key: Annotated[
        str | None,
        typer.Option(envvar="ACCESS_KEY", show_default=False, rich_help_panel=STORAGE,
                     help="S3 access key id."),
    ] = None  # fmt: skip
    secret_key: Annotated[
        str | None,
        typer.Option(envvar="SECRET_KEY", show_default=False, rich_help_panel=STORAGE,
                     help="S3 secret key (else the AWS chain: env, profile, web identity)."),
    ] = None  # fmt: skip

    cache: Annotated[
        Path | None,
        typer.Option("--cache", envvar="REGCLEANER_CACHE", metavar="FILE",
                     rich_help_panel=STORAGE,
                     help="Scan cache (SQLite): manifests and links verified before are not "
                     "read again while storage shows them unchanged (off unless given)."),
    ] = None  # fmt: skip

    def settings(self) -> StorageSettings:
        """The validated storage location."""
        from regcleaner.storage.backends import backend_named

        return storage_settings(
            registry_dir=self.registry_dir, storage=backend_named(self.storage).name,
            bucket=self.bucket,
            region=self.region, s3_endpoint=self.s3_endpoint, access_key=self.access_key,
            secret_key=self.secret_key, cache=self.cache,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AccessOptions(OptionGroup):
    """Credentials for the registry and its token server, and TLS."""

    auth: Annotated[
        str | None,
        typer.Option(envvar="REGISTRY_AUTH", show_default=False, show_envvar=True,
                     metavar="USER:PASSWORD", rich_help_panel=ACCESS,
                     help="Registry credentials (split on the first colon)."),
    ] = None  # fmt: skip
    username: Annotated[
        str | None,
        typer.Option(envvar="REGISTRY_USERNAME", rich_help_panel=ACCESS,
                     help="Username, with --password-file."),
    ] = None  # fmt: skip
    password_file: Annotated[
        Path | None,
        typer.Option(envvar="REGISTRY_PASSWORD_FILE", rich_help_panel=ACCESS,
                     help="File holding the password (a mounted Secret), kept out of argv."),
    ] = None  # fmt: skip
    allow_insecure_auth: Annotated[
        bool,
        typer.Option("--allow-insecure-auth", envvar="ALLOW_INSECURE_AUTH",
                     rich_help_panel=ACCESS,
                     help="Allow credentials over plain http:// to a remote registry."),
    ] = False  # fmt: skip
    insecure: Annotated[
        bool,
        typer.Option("--insecure", envvar="SELF_SIGNED_CERT", rich_help_panel=ACCESS,
                     help="Do not verify the registry's TLS certificate."),
    ] = False  # fmt: skip
    ca_cert: Annotated[
        Path | None,
        typer.Option(rich_help_panel=ACCESS,
                     help="PEM file of the CA that signed its certificate."),
    ] = None  # fmt: skip

    def settings(self, url: str | None) -> tuple[Credentials | None, TLSOptions]:
        """Validated credentials and TLS options for ``url``."""
        return access_settings(
            url=url, auth=self.auth, username=self.username, password_file=self.password_file,
            allow_insecure_auth=self.allow_insecure_auth, insecure=self.insecure,
            ca_cert=self.ca_cert,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class GateOptions(OptionGroup):
    """The check before any storage write (maintenance window)."""

    registry_stopped: Annotated[
        bool,
        typer.Option("--registry-stopped", envvar="REGISTRY_STOPPED",
                     rich_help_panel=MAINTENANCE,
                     help="No registry process runs: write storage without probing (with "
                     "--registry-url: only if nothing answers there, or it answers "
                     "read-only)."),
    ] = False  # fmt: skip
    gate_probes: Annotated[
        str,
        typer.Option(metavar="N", rich_help_panel=MAINTENANCE,
                     help="Rounds of write probes that must all be refused (replicas)."),
    ] = "3"  # fmt: skip

    def rounds(self) -> int:
        """The validated number of probe rounds."""
        return parse_count(self.gate_probes, "--gate-probes")


@dataclass(frozen=True, slots=True)
class CollectionOptions(OptionGroup):
    """How blobs are collected (``gc``, and ``clean --direct --gc``)."""

    min_blob_age: Annotated[
        str,
        typer.Option(metavar="DURATION", rich_help_panel=COLLECTION,
                     help="Never sweep blobs written more recently (0: as the registry)."),
    ] = "0"  # fmt: skip
    prune_layer_links: Annotated[
        bool,
        typer.Option("--prune-layer-links", rich_help_panel=COLLECTION,
                     help="Also remove repositories' _layers links whose blob is gone."),
    ] = False  # fmt: skip
    purge_uploads: Annotated[
        str | None,
        typer.Option(metavar="DURATION", rich_help_panel=COLLECTION,
                     help="Also remove unfinished uploads started longer ago than this."),
    ] = None  # fmt: skip

    registry_version: Annotated[
        str | None,
        typer.Option(envvar="REGCLEANER_REGISTRY_VERSION", metavar="[2|3]",
                     rich_help_panel=COLLECTION,
                     help="The registry's major version: on 3, the _layers links of swept "
                     "blobs go, as its garbage-collect removes them. Default: asked of the "
                     "registry at the URL; unknown, they stay."),
    ] = None  # fmt: skip

    def given(self) -> bool:
        """True if any collection option differs from its default."""
        return (
            self.prune_layer_links or self.purge_uploads is not None
            or self.min_blob_age != "0" or self.registry_version is not None
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutputOptions(OptionGroup):
    """Report, standard output, logs and metrics."""

    report: Annotated[
        Path | None, typer.Option(rich_help_panel=OUTPUT, help="Write the JSON report here.")
    ] = None
    output: Annotated[
        str,
        typer.Option(metavar="[text|json]", rich_help_panel=OUTPUT,
                     help="Standard output format."),
    ] = "text"  # fmt: skip
    progress_interval: Annotated[
        str,
        typer.Option(metavar="SECONDS", rich_help_panel=OUTPUT,
                     help="Seconds between progress lines when not on a terminal (0: none)."),
    ] = "10"  # fmt: skip
    log_format: Annotated[
        str,
        typer.Option(envvar="REGCLEANER_LOG_FORMAT", metavar="[text|json]",
                     rich_help_panel=OUTPUT, help="Log lines format."),
    ] = "text"  # fmt: skip
    metrics_file: Annotated[
        Path | None,
        typer.Option(envvar="REGCLEANER_METRICS_FILE", rich_help_panel=OUTPUT,
                     help="Write run metrics here (Prometheus textfile format)."),
    ] = None  # fmt: skip
    pushgateway: Annotated[
        str | None,
        typer.Option(envvar="REGCLEANER_PUSHGATEWAY", rich_help_panel=OUTPUT,
                     help="Push run metrics to this Pushgateway URL."),
    ] = None  # fmt: skip
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", rich_help_panel=OUTPUT, help="Log every retry.")
    ] = False

    def settings(self) -> Output:
        """The validated output settings."""
        return output_settings(
            report=self.report, output=self.output, progress_interval=self.progress_interval,
            log_format=self.log_format, verbose=self.verbose, metrics_file=self.metrics_file,
            pushgateway=self.pushgateway,
        )  # fmt: skip


DryRun = Annotated[
    bool,
    typer.Option("--dry-run", envvar="DRY_RUN", show_default=False,
                 help="Check and report what would be done; change nothing."),
]  # fmt: skip
StopGrace = Annotated[
    str,
    typer.Option(metavar="DURATION", rich_help_panel=SPEED,
                 help="On SIGTERM/SIGINT, time to let in-flight requests finish."),
]  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])


def _group_type(annotation: Any) -> type[OptionGroup] | None:
    if isinstance(annotation, type) and issubclass(annotation, OptionGroup):
        return annotation
    return None


def _group_parameters(group: type[OptionGroup]) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(group, include_extras=True)
    return [
        inspect.Parameter(
            item.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=item.default,
            annotation=hints[item.name],
        )
        for item in fields(group)  # type: ignore[arg-type]
    ]


def grouped(command: F) -> F:
    """Spread the command's ``OptionGroup`` parameters into typer options, and build one
    group value from them per call. An option name used twice is a programming error,
    raised at import time."""
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, type[OptionGroup]] = {}
    seen: set[str] = set()
    for parameter in signature.parameters.values():
        group = _group_type(parameter.annotation)
        spread = _group_parameters(group) if group else [parameter]
        if group is not None:
            groups[parameter.name] = group
        for item in spread:
            if item.name in seen:
                raise TypeError(f"{command.__name__}: option {item.name!r} declared twice")
            seen.add(item.name)
            parameters.append(item.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        arguments: dict[str, Any] = {}
        for name, group in groups.items():
            names = [item.name for item in fields(group)]  # type: ignore[arg-type]
            arguments[name] = group(**{key: values.pop(key) for key in names})
        return command(**arguments, **values)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {item.name: item.annotation for item in parameters}
    return typing.cast(F, wrapper)


def help_when_bare(context: typer.Context) -> None:
    """A command group called alone prints its help and exits 0 (click's own
    ``no_args_is_help`` exits 2, as for a usage error)."""
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())
        raise typer.Exit(0)
