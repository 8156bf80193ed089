"""Validated, frozen settings. Everything the operator typed is checked here, once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from regcleaner.errors import ConfigError


class StorageKind(Enum):
    """Where the registry keeps its files."""

    FILESYSTEM = "filesystem"
    S3 = "s3"


class OutputFormat(Enum):
    """What goes to standard output at the end of a run."""

    TEXT = "text"
    JSON = "json"


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
class Settings:
    """One run of ``regcleaner clean``."""

    registry_url: str
    registry_dir: Path
    storage: StorageKind = StorageKind.FILESYSTEM
    s3: S3Options | None = None
    credentials: Credentials | None = None
    tls: TLSOptions = TLSOptions()
    dry_run: bool = False
    limits: Limits = Limits()
    min_age_s: float = 0.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    report_path: Path | None = None
    output: OutputFormat = OutputFormat.TEXT
    progress_interval_s: float = 10.0
    stop_grace_s: float = 10.0
    estimate_space: bool = True
    shard: tuple[int, int] | None = None
    """(index, count): clean only repositories whose stable hash falls in this shard."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w`` → seconds."""
    value = text.strip().lower()
    if not value:
        raise ConfigError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ConfigError(f"negative duration {text!r}")
        return seconds
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ConfigError(
            f"invalid duration {text!r}: use a number of seconds or e.g. 30m, 1h30m, 7d"
        )
    return total


def parse_credentials(text: str) -> Credentials:
    """``user:password``; only the first colon separates, so passwords may hold colons."""
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise ConfigError("credentials must be given as user:password")
    return Credentials(username, password)


def parse_registry_url(text: str) -> str:
    """Validate the registry base URL and return it without a trailing slash."""
    value = text.strip()
    if not value:
        raise ConfigError("the registry URL is empty (set --registry-url or REGISTRY_URL)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "the registry URL must start with http:// or https:// and name a host, "
            "e.g. https://registry.example.com"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError("do not put credentials in the registry URL; use --auth or REGISTRY_AUTH")
    if parts.query or parts.fragment:
        raise ConfigError("the registry URL must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("the registry URL has an invalid port") from None
    return value.rstrip("/")


def read_password_file(path: Path) -> str:
    """A password from a file (a mounted Kubernetes Secret); one trailing newline dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"password file {path} is not UTF-8 text") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise ConfigError(f"password file {path} is empty")
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
    shard: str | None, shards: int | None, completion_index: str | None
) -> tuple[int, int] | None:
    """``--shard I/N``, or ``--shards N`` with an Indexed Job's JOB_COMPLETION_INDEX."""
    if shard:
        index_text, sep, count_text = shard.partition("/")
        try:
            index, count = int(index_text), int(count_text)
        except ValueError:
            raise ConfigError(f"--shard must look like 2/8, not {shard!r}") from None
        if not sep:
            raise ConfigError(f"--shard must look like 2/8, not {shard!r}")
    elif shards:
        if completion_index is None:
            raise ConfigError("--shards needs --shard I/N or JOB_COMPLETION_INDEX (Indexed Job)")
        try:
            index, count = int(completion_index), shards
        except ValueError:
            raise ConfigError(
                f"JOB_COMPLETION_INDEX is not a number: {completion_index!r}"
            ) from None
    else:
        return None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need 0 <= index < count")
    return index, count


def parse_storage_kind(text: str) -> StorageKind:
    """``S3`` (any case) selects S3; the older script treated anything else as disk."""
    value = text.strip().lower()
    if value == "s3":
        return StorageKind.S3
    if value in ("", "filesystem", "disk", "local", "fs"):
        return StorageKind.FILESYSTEM
    raise ConfigError(f"unknown storage {text!r}: use filesystem or s3")
