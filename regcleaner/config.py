"""Validated, frozen settings. Everything the operator typed is checked here, once.

The CLI passes the raw option values (strings for numbers and durations, so that
``nan``, ``inf`` and non-ASCII digits can be refused) to ``build_settings``; what comes
back holds every option of the run. A problem is one ``ConfigError`` naming the option.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from regcleaner.errors import ConfigError
from regcleaner.quantities import parse_count as parse_count
from regcleaner.quantities import parse_duration, parse_number

if TYPE_CHECKING:
    from regcleaner.retention import RetentionPolicy


class StorageKind:
    """Names of the built-in storage backends (``regcleaner.storage.backends`` holds
    every registered one)."""

    FILESYSTEM = "filesystem"
    S3 = "s3"


class OutputFormat(Enum):
    """What goes to standard output at the end of a run."""

    TEXT = "text"
    JSON = "json"


class Mode(Enum):
    """How planned deletions are carried out."""

    API = "api"
    """DELETE through the registry's API (the registry writable and running)."""
    DIRECT = "direct"
    """Remove the links from storage (maintenance window: registry read-only or stopped)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Username and password for basic auth and the token server. Never printed."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>)"


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """How to verify the registry's certificate."""

    insecure: bool = False
    ca_cert: Path | None = None


@dataclass(frozen=True, slots=True)
class S3Options:
    """Where the registry's bucket is and how to reach it. The secret is never printed."""

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    max_connections: int = 64
    max_attempts: int = 8
    listers: int = 16
    delete_requests_in_flight: int = 8
    fast_reads: bool = True
    """GET, HEAD and LIST signed and sent by regcleaner (``storage/s3fast.py``), not by
    botocore; ``--s3-botocore-reads`` turns it off."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Concurrency, rate and retry bounds of the delete phase and the scan."""

    concurrency: int = 32
    per_repository: int = 4
    rate: float = 0.0
    max_attempts: int = 6
    scan_workers: int = 4
    request_timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast clean deletes: its limits, and how often it looks again for pushes."""

    limits: Limits = Limits()
    recheck_interval_s: float = 2.0


@dataclass(frozen=True, slots=True)
class Output:
    """Where results, logs and metrics go."""

    report_path: Path | None = None
    format: OutputFormat = OutputFormat.TEXT
    progress_interval_s: float = 10.0
    log_format: OutputFormat = OutputFormat.TEXT
    verbose: bool = False
    metrics_file: Path | None = None
    pushgateway: str | None = None


@dataclass(frozen=True, slots=True)
class RunTarget:
    """What every command that reads storage, and may talk to the registry, is given:
    the registry, its storage, how to reach both, and where results go."""

    registry_url: str | None
    registry_dir: Path
    storage: str = StorageKind.FILESYSTEM
    s3: S3Options | None = None
    credentials: Credentials | None = None
    tls: TLSOptions = TLSOptions()
    dry_run: bool = False
    registry_stopped: bool = False
    """Writing storage: the operator says no registry process runs (with a URL, it must
    then not answer at all, or answer as read-only)."""
    gate_rounds: int = 3
    """Rounds of write probes before storage is written (replicas answer one connection
    each)."""
    limits: Limits = Limits()
    output: Output = Output()
    stop_grace_s: float = 10.0
    cache_path: Path | None = None
    """``--cache``: the scan cache file; None: every run reads everything."""

    @property
    def report_path(self) -> Path | None:
        return self.output.report_path

    @property
    def progress_interval_s(self) -> float:
        return self.output.progress_interval_s

    def store_settings(self) -> StorageSettings:
        """Where the storage is, for ``storage.backends.open_store``."""
        return StorageSettings(self.storage, self.registry_dir, self.s3, cache=self.cache_path)


@dataclass(frozen=True, slots=True)
class Settings(RunTarget):
    """One run of ``regcleaner clean``."""

    mode: Mode = Mode.API
    min_age_s: float = 3600.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    recheck_interval_s: float = 2.0
    """While deleting through the API: the longest time between two listings of a
    repository's revisions (pushes of other manifests are seen at the next one)."""
    estimate_space: bool = True
    shard: tuple[int, int] | None = None
    """(index, count): clean only repositories whose stable hash falls in this shard."""
    retention: RetentionPolicy | None = None
    """Tag retention (``--policy FILE``): expired tags count as absent."""
    prune_orphan_signatures: bool = False
    """Remove cosign-style signature tags whose signed digest is gone or deleted."""
    gc: GcSettings | None = None
    """``clean --direct --gc``: collect blobs right after the removal."""
    pulls_db: Path | None = None
    """``--pulls-db``: the pull record of ``regcleaner events serve``, read by the
    policy's ``pulled_within`` rules."""
    prune_empty_repositories: bool = False
    """``clean --direct --prune-empty-repositories``: after the removal, remove the
    repositories left with no tags and no manifests (``regcleaner.emptyrepos``)."""


@dataclass(frozen=True, slots=True)
class GcSettings(RunTarget):
    """One run of ``regcleaner gc`` (or the blob collection after ``clean --direct``)."""

    min_blob_age_s: float = 0.0
    """Blobs written more recently than this are never swept (0: exact parity with
    the registry's garbage-collect)."""
    prune_layer_links: bool = False
    """Also remove repositories' ``_layers`` links whose blob is gone."""
    purge_uploads_s: float | None = None
    """Also remove unfinished uploads started longer ago than this."""
    registry_version: str | None = None
    """``--registry-version``: "2" or "3"; None: asked of the registry at the URL, else
    unknown (what is removed besides blobs is then the lesser of the two)."""


def parse_credentials(text: str) -> Credentials:
    """``user:password``; only the first colon separates, so passwords may hold colons."""
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise ConfigError("credentials must be given as user:password")
    return Credentials(username, password)


def parse_registry_url(text: str, option: str = "the registry URL") -> str:
    """Validate a base URL and return it without a trailing slash."""
    value = text.strip()
    if not value:
        raise ConfigError(f"{option} is empty (set --registry-url or REGISTRY_URL)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{option} must start with http:// or https:// and name a host, "
            "e.g. https://registry.example.com"
        )
    if parts.username is not None or parts.password is not None:
        where = {
            "--s3-endpoint": "--access-key/--secret-key (ACCESS_KEY/SECRET_KEY)",
            "--pushgateway": "a URL without them",
        }.get(option, "--auth or REGISTRY_AUTH")
        raise ConfigError(f"do not put credentials in {option}; use {where}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{option} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{option} has an invalid port") from None
    return value.rstrip("/")


def read_password_file(path: Path, what: str = "password") -> str:
    """A password (or, with ``what``, another secret) from a file (a mounted Kubernetes
    Secret); one trailing newline dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not UTF-8 text") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise ConfigError(f"{what} file {path} is empty")
    return password


def is_loopback_url(url: str) -> bool:
    """True if the URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_shard(
    shard: str | None, shards: str | None, completion_index: str | None
) -> tuple[int, int] | None:
    """``--shard I/N``, or ``--shards N`` with an Indexed Job's JOB_COMPLETION_INDEX."""
    if shard:
        index_text, sep, count_text = shard.partition("/")
        if (
            not sep
            or not re.fullmatch(r"[0-9]{1,6}", index_text.strip())
            or not re.fullmatch(r"[0-9]{1,6}", count_text.strip())
        ):
            raise ConfigError(f"--shard must look like 2/8, not {shard!r}")
        index, count = int(index_text), int(count_text)
    elif shards:
        count = parse_count(shards, "--shards")
        if completion_index is None:
            raise ConfigError("--shards needs --shard I/N or JOB_COMPLETION_INDEX (Indexed Job)")
        if not re.fullmatch(r"[0-9]{1,6}", completion_index.strip()):
            raise ConfigError(f"JOB_COMPLETION_INDEX is not a number: {completion_index!r}")
        index = int(completion_index)
    else:
        return None
    if count < 1 or not 0 <= index < count:
        option = "--shard" if shard else "--shards/JOB_COMPLETION_INDEX"
        raise ConfigError(f"{option} {index}/{count}: need 0 <= index < count")
    return index, count


def parse_format(text: str, option: str) -> OutputFormat:
    """``text`` or ``json``."""
    try:
        return OutputFormat(text.strip().lower())
    except ValueError:
        raise ConfigError(f"unknown {option} format {text!r}: use text or json") from None


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where the registry's storage is: a directory, or a bucket and prefix."""

    kind: str
    root: Path
    s3: S3Options | None = None
    ignored: tuple[str, ...] = ()
    """Options given that this kind of storage does not use (the caller warns)."""
    cache: Path | None = None
    """``--cache``: the scan cache file (``regcleaner.scancache``), or None."""


def storage_settings(
    *,
    registry_dir: Path | None,
    storage: str,
    bucket: str | None,
    region: str | None,
    s3_endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
    secret_key_file: Path | None = None,
    s3_botocore_reads: bool = False,
    cache: Path | None = None,
) -> StorageSettings:
    """Where the registry's storage is: a directory, or a bucket and prefix. ``storage``
    is a registered backend's name (``regcleaner.storage.backends``)."""
    kind = storage
    root = registry_dir if registry_dir is not None else Path("/registry")
    if cache is not None and str(cache) in ("", "."):  # typer makes "" the path "."
        raise ConfigError("--cache is empty: give a file, e.g. --cache /cache/scan.sqlite")
    if kind != StorageKind.S3:
        given = {"--bucket": bucket, "--region": region, "--s3-endpoint": s3_endpoint,
                 "--access-key": access_key, "--secret-key": secret_key,
                 "--secret-key-file": secret_key_file,
                 "--s3-botocore-reads": s3_botocore_reads}  # fmt: skip
        ignored = tuple(name for name, v in given.items() if v)
        return StorageSettings(kind, root, None, ignored, cache)
    if not bucket:
        raise ConfigError("S3 storage needs a bucket: --bucket or BUCKET")
    if secret_key_file is not None:
        if secret_key:
            raise ConfigError("give --secret-key or --secret-key-file, not both")
        secret_key = read_password_file(secret_key_file, "secret key")
    if bool(access_key) != bool(secret_key):
        raise ConfigError("give both --access-key and --secret-key, or neither")
    if s3_endpoint:
        parse_registry_url(s3_endpoint, "--s3-endpoint")
    s3_options = S3Options(
        bucket=bucket,
        prefix=str(registry_dir or "").strip("/"),
        region=region or None,
        endpoint_url=s3_endpoint or None,
        access_key=access_key or None,
        secret_key=secret_key or None,
        fast_reads=not s3_botocore_reads,
    )
    return StorageSettings(kind, root, s3_options, cache=cache)


def access_settings(
    *,
    url: str | None,
    auth: str | None,
    username: str | None,
    password_file: Path | None,
    allow_insecure_auth: bool,
    insecure: bool,
    ca_cert: Path | None,
) -> tuple[Credentials | None, TLSOptions]:
    """Credentials and TLS for the registry (and its token server)."""
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
        and url is not None
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
    return credentials, TLSOptions(insecure=insecure, ca_cert=ca_cert)


def pace_settings(
    *, concurrency: str, per_repository: str, rate: str, timeout: str, recheck_interval: str
) -> Pace:
    """Validated limits of the delete phase (``--per-repository`` at most ``--concurrency``)."""
    total = parse_count(concurrency, "--concurrency")
    limits = Limits(
        concurrency=total,
        per_repository=min(parse_count(per_repository, "--per-repository"), total),
        rate=parse_number(rate, "--rate"),
        request_timeout_s=parse_number(timeout, "--timeout", positive=True),
    )
    return Pace(limits, parse_duration(recheck_interval, "--recheck-interval"))


def check_report_path(report: Path) -> None:
    """Refuse, before anything is done, a report that could not be written at the end
    (the record of what was deleted would be lost)."""
    if report.is_dir():
        raise ConfigError(f"--report {report} is a directory")
    if report.exists():  # a file, or /dev/stdout: writing it needs its own permission
        if not os.access(report, os.W_OK):
            raise ConfigError(f"--report {report}: no permission to write it")
        return
    folder = Path(os.path.realpath(report)).parent  # a dangling link: where it points
    if not folder.is_dir():
        raise ConfigError(f"--report {report}: its folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--report {report}: no permission to create it in {folder}")


def output_settings(
    *,
    report: Path | None,
    output: str,
    progress_interval: str,
    log_format: str,
    verbose: bool,
    metrics_file: Path | None,
    pushgateway: str | None,
) -> Output:
    """Report, standard output, logs and metrics."""
    if report is not None:
        check_report_path(report)
    if pushgateway:
        parse_registry_url(pushgateway, "--pushgateway")
    return Output(
        report_path=report,
        format=parse_format(output, "output"),
        progress_interval_s=parse_number(progress_interval, "--progress-interval"),
        log_format=parse_format(log_format, "log"),
        verbose=verbose,
        metrics_file=metrics_file,
        pushgateway=pushgateway or None,
    )


def _window_url(url: str | None, what: str, *, registry_stopped: bool, dry_run: bool) -> None:
    if url is None and not registry_stopped and not dry_run:
        raise ConfigError(
            f"{what} only when the registry cannot write: give --registry-url so "
            "that its read-only mode can be checked, or --registry-stopped if no registry "
            "process runs"
        )


def build_gc_settings(
    *,
    registry_url: str | None,
    storage: StorageSettings,
    credentials: Credentials | None,
    tls: TLSOptions,
    output: Output,
    dry_run: bool = False,
    registry_stopped: bool = False,
    gate_rounds: int = 3,
    min_blob_age: str = "0",
    prune_layer_links: bool = False,
    purge_uploads: str | None = None,
    stop_grace: str = "10",
    registry_version: str | None = None,
) -> GcSettings:
    """Validate the options of ``regcleaner gc`` (and of ``clean --direct --gc``, which
    builds its collection through here); ConfigError on the first problem."""
    _window_url(registry_url, "gc removes blobs", registry_stopped=registry_stopped,
                dry_run=dry_run)  # fmt: skip
    return GcSettings(
        registry_url=registry_url,
        registry_dir=storage.root,
        storage=storage.kind,
        s3=storage.s3,
        credentials=credentials,
        tls=tls,
        dry_run=dry_run,
        registry_stopped=registry_stopped,
        gate_rounds=gate_rounds,
        min_blob_age_s=parse_duration(min_blob_age, "--min-blob-age"),
        prune_layer_links=prune_layer_links,
        purge_uploads_s=(
            None if purge_uploads is None else parse_duration(purge_uploads, "--purge-uploads")
        ),
        output=output,
        stop_grace_s=parse_duration(stop_grace, "--stop-grace"),
        cache_path=storage.cache,
        registry_version=parse_registry_version(registry_version),
    )


def parse_registry_version(text: str | None) -> str | None:
    """``2`` or ``3`` (``2.8.2``, ``v3.1.1`` name them too); None when not given."""
    if text is None or not text.strip():
        return None
    major = text.strip().lower().removeprefix("v").partition(".")[0]
    if major not in ("2", "3"):
        raise ConfigError(f"--registry-version must be 2 or 3, not {text!r}")
    return major


GC_NEEDS_DIRECT = (
    "--gc collects blobs in the maintenance window of --direct; with the registry "
    "writable, run regcleaner gc (or registry garbage-collect) in a window later"
)


def build_settings(
    *,
    registry_url: str | None,
    storage: StorageSettings,
    credentials: Credentials | None,
    tls: TLSOptions,
    output: Output,
    dry_run: bool = False,
    direct: bool = False,
    registry_stopped: bool = False,
    gate_rounds: int = 3,
    pace: Pace = Pace(),
    stop_grace: str = "10",
    min_age: str = "1h",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    estimate_space: bool = True,
    shard: str | None = None,
    shards: str | None = None,
    completion_index: str | None = None,
    policy: Path | None = None,
    prune_orphan_signatures: bool = False,
    gc: GcSettings | None = None,
    pulls_db: Path | None = None,
    prune_empty_repositories: bool = False,
) -> Settings:
    """Validate everything the operator gave; raise ConfigError on the first problem."""
    mode = Mode.DIRECT if direct else Mode.API
    if registry_url is None and mode is Mode.API and not dry_run:
        raise ConfigError("the registry URL is required: --registry-url or REGISTRY_URL")
    if mode is Mode.DIRECT:
        _window_url(registry_url, "--direct writes storage", registry_stopped=registry_stopped,
                    dry_run=dry_run)  # fmt: skip
    if registry_stopped and mode is not Mode.DIRECT:
        raise ConfigError("--registry-stopped only makes sense with --direct")
    if prune_empty_repositories and mode is not Mode.DIRECT:
        raise ConfigError(
            "--prune-empty-repositories removes folders in the maintenance window of "
            "--direct; on its own: regcleaner prune-empty-repositories"
        )
    if gc is not None and mode is not Mode.DIRECT:
        raise ConfigError(GC_NEEDS_DIRECT)
    retention = None
    if policy is not None:
        from regcleaner.policyfile import load_policy

        retention = load_policy(str(policy))
    if pulls_db is not None and not pulls_db.is_file():
        raise ConfigError(
            f"--pulls-db {pulls_db} does not exist: give the --db file of regcleaner events serve"
        )
    if retention is not None and retention.uses_pulls and pulls_db is None:
        raise ConfigError(
            "the policy has pulled_within rules: give --pulls-db PATH, the --db file of "
            "regcleaner events serve"
        )
    if pulls_db is not None and retention is None:
        raise ConfigError("--pulls-db is read by a policy's pulled_within rules: add --policy")
    return Settings(
        registry_url=registry_url,
        registry_dir=storage.root,
        storage=storage.kind,
        s3=storage.s3,
        credentials=credentials,
        tls=tls,
        dry_run=dry_run,
        mode=mode,
        retention=retention,
        prune_orphan_signatures=prune_orphan_signatures,
        gc=gc,
        registry_stopped=registry_stopped,
        gate_rounds=gate_rounds,
        limits=pace.limits,
        min_age_s=parse_duration(min_age, "--min-age"),
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        output=output,
        stop_grace_s=parse_duration(stop_grace, "--stop-grace"),
        recheck_interval_s=pace.recheck_interval_s,
        estimate_space=estimate_space,
        shard=parse_shard(shard, shards, completion_index),
        pulls_db=pulls_db,
        prune_empty_repositories=prune_empty_repositories,
        cache_path=storage.cache,
    )
