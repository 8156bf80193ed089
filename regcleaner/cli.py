"""Command line: options and environment variables → Settings → one run → exit code.

Parsing and printing only: validation lives in ``regcleaner.config``, the wiring of a
run in ``regcleaner.runner``, the exit-code policy in ``regcleaner.exitcodes``. Numbers
and durations are taken as text so that ``config`` can refuse ``nan``, ``inf``,
negative values and non-ASCII digits with one clear line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from regcleaner import __version__
from regcleaner.config import build_settings
from regcleaner.errors import ConfigError
from regcleaner.exitcodes import EXIT_USAGE

app = typer.Typer(
    name="regcleaner",
    help="Delete the manifests no tag can reach from a Docker/OCI registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

REGISTRY = "Registry"
STORAGE = "Storage"
ACCESS = "Credentials and TLS"
KEEP = "What to keep"
MAINTENANCE = "Maintenance window"
SPEED = "Speed"
OUTPUT = "Output and monitoring"
KUBERNETES = "Kubernetes"

RegistryURL = Annotated[
    str | None,
    typer.Option(envvar="REGISTRY_URL", rich_help_panel=REGISTRY,
                 help="Registry base URL, e.g. https://registry.example.com"),
]  # fmt: skip
RegistryDir = Annotated[
    Path | None,
    typer.Option(envvar="REGISTRY_DIR", rich_help_panel=STORAGE, show_default=False,
                 help="Storage root: a directory (default /registry); on S3 the registry's "
                 "rootdirectory in the bucket (default: the bucket root)."),
]  # fmt: skip
StorageOption = Annotated[
    str,
    typer.Option(envvar="REGISTRY_STORAGE", metavar="[filesystem|s3]", rich_help_panel=STORAGE,
                 help="Where the registry keeps its files."),
]  # fmt: skip
Bucket = Annotated[
    str | None, typer.Option(envvar="BUCKET", rich_help_panel=STORAGE, help="S3 bucket.")
]
Region = Annotated[
    str | None, typer.Option(envvar="REGION", rich_help_panel=STORAGE, help="S3 region.")
]
S3Endpoint = Annotated[
    str | None,
    typer.Option(envvar=["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3"], rich_help_panel=STORAGE,
                 help="S3-compatible endpoint (MinIO, Ceph, R2); path-style addressing."),
]  # fmt: skip
AccessKey = Annotated[
    str | None,
    typer.Option(envvar="ACCESS_KEY", show_default=False, rich_help_panel=STORAGE,
                 help="S3 access key id."),
]  # fmt: skip
SecretKey = Annotated[
    str | None,
    typer.Option(envvar="SECRET_KEY", show_default=False, rich_help_panel=STORAGE,
                 help="S3 secret key (else the AWS chain: env, profile, web identity)."),
]  # fmt: skip
Auth = Annotated[
    str | None,
    typer.Option(envvar="REGISTRY_AUTH", show_default=False, show_envvar=True,
                 metavar="USER:PASSWORD", rich_help_panel=ACCESS,
                 help="Registry credentials (split on the first colon)."),
]  # fmt: skip
Username = Annotated[
    str | None,
    typer.Option(envvar="REGISTRY_USERNAME", rich_help_panel=ACCESS,
                 help="Username, with --password-file."),
]  # fmt: skip
PasswordFile = Annotated[
    Path | None,
    typer.Option(envvar="REGISTRY_PASSWORD_FILE", rich_help_panel=ACCESS,
                 help="File holding the password (a mounted Secret), kept out of argv."),
]  # fmt: skip
AllowInsecureAuth = Annotated[
    bool,
    typer.Option("--allow-insecure-auth", envvar="ALLOW_INSECURE_AUTH", rich_help_panel=ACCESS,
                 help="Allow credentials over plain http:// to a remote registry."),
]  # fmt: skip
Insecure = Annotated[
    bool,
    typer.Option("--insecure", envvar="SELF_SIGNED_CERT", rich_help_panel=ACCESS,
                 help="Do not verify the registry's TLS certificate."),
]  # fmt: skip
CACert = Annotated[
    Path | None,
    typer.Option(rich_help_panel=ACCESS, help="PEM file of the CA that signed its certificate."),
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", envvar="DRY_RUN", rich_help_panel=KEEP,
                 help="Report the plan, delete nothing."),
]  # fmt: skip
RegistryStopped = Annotated[
    bool,
    typer.Option("--registry-stopped", envvar="REGISTRY_STOPPED", rich_help_panel=MAINTENANCE,
                 help="No registry process runs: write storage without probing (with "
                 "--registry-url: only if it does not answer, or answers read-only)."),
]  # fmt: skip
GateProbes = Annotated[
    str,
    typer.Option(metavar="N", rich_help_panel=MAINTENANCE,
                 help="Rounds of write probes that must all be refused (replicas)."),
]  # fmt: skip
Timeout = Annotated[
    str,
    typer.Option(metavar="SECONDS", rich_help_panel=SPEED,
                 help="Seconds before one registry request is abandoned and retried."),
]  # fmt: skip
StopGrace = Annotated[
    str,
    typer.Option(metavar="DURATION", rich_help_panel=SPEED,
                 help="On SIGTERM/SIGINT, time to let in-flight requests finish."),
]  # fmt: skip
Report = Annotated[
    Path | None,
    typer.Option(rich_help_panel=OUTPUT, help="Write the JSON report here."),
]
OutputOption = Annotated[
    str,
    typer.Option(metavar="[text|json]", rich_help_panel=OUTPUT, help="Standard output format."),
]
ProgressInterval = Annotated[
    str,
    typer.Option(metavar="SECONDS", rich_help_panel=OUTPUT,
                 help="Seconds between progress lines when not on a terminal (0: none)."),
]  # fmt: skip
LogFormat = Annotated[
    str,
    typer.Option(envvar="REGCLEANER_LOG_FORMAT", metavar="[text|json]", rich_help_panel=OUTPUT,
                 help="Log lines format."),
]  # fmt: skip
MetricsFile = Annotated[
    Path | None,
    typer.Option(envvar="REGCLEANER_METRICS_FILE", rich_help_panel=OUTPUT,
                 help="Write run metrics here (Prometheus textfile format)."),
]  # fmt: skip
Pushgateway = Annotated[
    str | None,
    typer.Option(envvar="REGCLEANER_PUSHGATEWAY", rich_help_panel=OUTPUT,
                 help="Push run metrics to this Pushgateway URL."),
]  # fmt: skip
Verbose = Annotated[
    bool,
    typer.Option("--verbose", "-v", rich_help_panel=OUTPUT, help="Log every retry."),
]


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
    """regcleaner: safe cleanup of a Docker/OCI registry."""


def _usage_error(exc: ConfigError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(EXIT_USAGE)


@app.command()
def clean(
    registry_url: RegistryURL = None,
    registry_dir: RegistryDir = None,
    storage: StorageOption = "filesystem",
    bucket: Bucket = None,
    region: Region = None,
    s3_endpoint: S3Endpoint = None,
    access_key: AccessKey = None,
    secret_key: SecretKey = None,
    auth: Auth = None,
    username: Username = None,
    password_file: PasswordFile = None,
    allow_insecure_auth: AllowInsecureAuth = False,
    insecure: Insecure = False,
    ca_cert: CACert = None,
    dry_run: DryRun = False,
    min_age: Annotated[
        str,
        typer.Option(
            envvar="MIN_AGE",
            metavar="DURATION",
            rich_help_panel=KEEP,
            help="Keep manifests pushed less than this long ago (0: no grace).",
        ),
    ] = "1h",
    include: Annotated[
        list[str] | None,
        typer.Option(
            metavar="GLOB",
            rich_help_panel=KEEP,
            help="Only repositories matching this glob (repeatable).",
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            metavar="GLOB",
            rich_help_panel=KEEP,
            help="Skip repositories matching this glob (repeatable).",
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            envvar="REGCLEANER_POLICY",
            metavar="FILE",
            rich_help_panel=KEEP,
            help="Tag retention policy (YAML or JSON): expired tags count as absent.",
        ),
    ] = None,
    prune_orphan_signatures: Annotated[
        bool,
        typer.Option(
            "--prune-orphan-signatures",
            rich_help_panel=KEEP,
            help="Remove sha256-<hex>.sig/.att/.sbom tags whose digest is gone.",
        ),
    ] = False,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            rich_help_panel=MAINTENANCE,
            help="Remove the links from storage instead of DELETE through the API; "
            "only while the registry is read-only or stopped.",
        ),
    ] = False,
    registry_stopped: RegistryStopped = False,
    gate_probes: GateProbes = "3",
    gc: Annotated[
        bool,
        typer.Option(
            "--gc",
            rich_help_panel=MAINTENANCE,
            help="With --direct: collect the freed blobs in the same window.",
        ),
    ] = False,
    min_blob_age: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            rich_help_panel=MAINTENANCE,
            help="With --gc: never sweep blobs written more recently.",
        ),
    ] = "0",
    prune_layer_links: Annotated[
        bool,
        typer.Option(
            "--prune-layer-links",
            rich_help_panel=MAINTENANCE,
            help="With --gc: remove _layers links whose blob is gone.",
        ),
    ] = False,
    purge_uploads: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            rich_help_panel=MAINTENANCE,
            help="With --gc: remove uploads started longer ago than this.",
        ),
    ] = None,
    concurrency: Annotated[
        str,
        typer.Option(metavar="N", rich_help_panel=SPEED, help="DELETEs in flight at most."),
    ] = "32",
    per_repository: Annotated[
        str,
        typer.Option(
            metavar="N", rich_help_panel=SPEED, help="DELETEs in flight per repository at most."
        ),
    ] = "4",
    rate: Annotated[
        str,
        typer.Option(
            metavar="N", rich_help_panel=SPEED, help="DELETEs per second at most (0: unlimited)."
        ),
    ] = "0",
    timeout: Timeout = "60",
    stop_grace: StopGrace = "10",
    recheck_interval: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            rich_help_panel=SPEED,
            help="While deleting, list a repository's revisions again at least "
            "this often, to see pushes.",
        ),
    ] = "2",
    estimate_space: Annotated[
        bool,
        typer.Option(
            rich_help_panel=OUTPUT,
            help="Estimate the bytes blob collection will free (in a temporary "
            "SQLite file, not in memory).",
        ),
    ] = True,
    report: Report = None,
    output: OutputOption = "text",
    progress_interval: ProgressInterval = "10",
    log_format: LogFormat = "text",
    metrics_file: MetricsFile = None,
    pushgateway: Pushgateway = None,
    verbose: Verbose = False,
    shard: Annotated[
        str | None,
        typer.Option(
            envvar="REGCLEANER_SHARD",
            metavar="I/N",
            rich_help_panel=KUBERNETES,
            help="Clean only shard I of N (stable hash of the repository name).",
        ),
    ] = None,
    shards: Annotated[
        str | None,
        typer.Option(
            envvar="REGCLEANER_SHARDS",
            metavar="N",
            rich_help_panel=KUBERNETES,
            help="N shards, I from JOB_COMPLETION_INDEX (an Indexed Job).",
        ),
    ] = None,
) -> None:
    """Find the manifests no tag can reach and delete them: through the registry API,
    or with --direct straight from storage in a maintenance window."""
    try:
        settings = build_settings(
            registry_url=registry_url, registry_dir=registry_dir, storage=storage,
            bucket=bucket, region=region, s3_endpoint=s3_endpoint, access_key=access_key,
            secret_key=secret_key, auth=auth, username=username, password_file=password_file,
            allow_insecure_auth=allow_insecure_auth, insecure=insecure, ca_cert=ca_cert,
            dry_run=dry_run, direct=direct, registry_stopped=registry_stopped,
            gate_rounds=gate_probes, concurrency=concurrency, per_repository=per_repository,
            rate=rate, timeout=timeout, stop_grace=stop_grace,
            recheck_interval=recheck_interval, min_age=min_age, include=include,
            exclude=exclude, report=report, output=output,
            progress_interval=progress_interval, log_format=log_format, verbose=verbose,
            metrics_file=metrics_file, pushgateway=pushgateway,
            estimate_space=estimate_space, shard=shard, shards=shards,
            completion_index=os.environ.get("JOB_COMPLETION_INDEX"), policy=policy,
            prune_orphan_signatures=prune_orphan_signatures, gc=gc,
            min_blob_age=min_blob_age, prune_layer_links=prune_layer_links,
            purge_uploads=purge_uploads,
        )  # fmt: skip
    except ConfigError as exc:
        raise _usage_error(exc) from None

    from regcleaner.logs import setup_logging
    from regcleaner.runner import run_clean

    setup_logging(settings.output.verbose, settings.output.log_format)
    raise typer.Exit(run_clean(settings))


def main() -> None:
    """Console-script entry point."""
    app()


GC = "Blob collection"


@app.command()
def gc(
    registry_url: RegistryURL = None,
    registry_dir: RegistryDir = None,
    storage: StorageOption = "filesystem",
    bucket: Bucket = None,
    region: Region = None,
    s3_endpoint: S3Endpoint = None,
    access_key: AccessKey = None,
    secret_key: SecretKey = None,
    auth: Auth = None,
    username: Username = None,
    password_file: PasswordFile = None,
    allow_insecure_auth: AllowInsecureAuth = False,
    insecure: Insecure = False,
    ca_cert: CACert = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            envvar="DRY_RUN",
            rich_help_panel=GC,
            help="List what would be swept, and the bytes; delete nothing.",
        ),
    ] = False,
    registry_stopped: RegistryStopped = False,
    gate_probes: GateProbes = "3",
    min_blob_age: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            rich_help_panel=GC,
            help="Never sweep blobs written more recently (0: as the registry).",
        ),
    ] = "0",
    prune_layer_links: Annotated[
        bool,
        typer.Option(
            "--prune-layer-links",
            rich_help_panel=GC,
            help="Also remove repositories' _layers links whose blob is gone.",
        ),
    ] = False,
    purge_uploads: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            rich_help_panel=GC,
            help="Also remove unfinished uploads started longer ago than this.",
        ),
    ] = None,
    stop_grace: StopGrace = "10",
    report: Report = None,
    output: OutputOption = "text",
    progress_interval: ProgressInterval = "10",
    log_format: LogFormat = "text",
    metrics_file: MetricsFile = None,
    pushgateway: Pushgateway = None,
    verbose: Verbose = False,
) -> None:
    """Collect the blobs no manifest references, as the registry's garbage-collect does,
    many times faster; only while the registry is read-only or stopped."""
    from regcleaner.config import build_gc_settings

    try:
        settings = build_gc_settings(
            registry_url=registry_url, registry_dir=registry_dir, storage=storage,
            bucket=bucket, region=region, s3_endpoint=s3_endpoint, access_key=access_key,
            secret_key=secret_key, auth=auth, username=username, password_file=password_file,
            allow_insecure_auth=allow_insecure_auth, insecure=insecure, ca_cert=ca_cert,
            dry_run=dry_run, registry_stopped=registry_stopped, gate_rounds=gate_probes,
            min_blob_age=min_blob_age, prune_layer_links=prune_layer_links,
            purge_uploads=purge_uploads, stop_grace=stop_grace, report=report,
            output=output, progress_interval=progress_interval, log_format=log_format,
            verbose=verbose, metrics_file=metrics_file, pushgateway=pushgateway,
        )  # fmt: skip
    except ConfigError as exc:
        raise _usage_error(exc) from None

    from regcleaner.logs import setup_logging
    from regcleaner.runner import run_gc

    setup_logging(settings.output.verbose, settings.output.log_format)
    raise typer.Exit(run_gc(settings))


policy_app = typer.Typer(
    help="Tag retention policies.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The policy file to validate.")],
) -> None:
    """Validate a retention policy file and say what it keeps; touch nothing."""
    from regcleaner.retention import describe, load_policy

    try:
        loaded = load_policy(str(file))
    except ConfigError as exc:
        raise _usage_error(exc) from None
    for line in describe(loaded):
        typer.echo(line)
    typer.echo(f"{file}: valid; repositories no policy matches keep every tag")
