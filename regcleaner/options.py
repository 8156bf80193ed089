"""Option groups, and the catalogue that declares every command-line option once.

A command takes whole groups as parameters (``storage: StorageOptions``) beside its own
plain ones (``dry_run: bool = False``); ``grouped`` gives each its help, panel,
environment variables and names from ``options.toml``, spreads each group's fields into
the command's options and hands the command one frozen value per group. Types and
defaults stay in Python, where mypy sees them. Values stay raw text (numbers and durations
included) so that ``regcleaner.config`` validates them once, with one message naming
the option (``nan``, ``inf``, negatives and non-ASCII digits are refused there).

Help panels name what an option is about, so that ``clean --help`` reads in groups.
"""

from __future__ import annotations

import functools
import inspect
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import typer

from regcleaner.config import (
    Credentials,
    Output,
    Pace,
    StorageSettings,
    TLSOptions,
    access_settings,
    output_settings,
    pace_settings,
    parse_registry_url,
    storage_settings,
)
from regcleaner.quantities import parse_count

CATALOGUE = "options.toml"
"""Every option's help, panel, environment variables and names: a file of this package."""

_KEYS = frozenset({"help", "panel", "env", "metavar", "flags", "show_default", "min"})


class OptionGroup:
    """A frozen set of options that several commands share; see ``grouped``. Its fields
    give each option's type and default; ``scope`` names its tables in the catalogue."""

    __slots__ = ()
    scope: ClassVar[str]

    def values(self) -> dict[str, Any]:
        """The options by name: the keyword arguments of the group's ``config`` function."""
        return {item.name: getattr(self, item.name) for item in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RegistryOptions(OptionGroup):
    """Where the registry answers."""

    scope: ClassVar[str] = "registry"
    registry_url: str | None = None

    def url(self) -> str | None:
        """The validated URL without a trailing slash, or None."""
        return parse_registry_url(self.registry_url) if self.registry_url else None


@dataclass(frozen=True, slots=True)
class StorageOptions(OptionGroup):
    """Where the registry keeps its files: a directory, or a bucket."""

    scope: ClassVar[str] = "storage"
    registry_dir: Path | None = None
    storage: str = "filesystem"
    bucket: str | None = None
    region: str | None = None
    s3_endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    secret_key_file: Path | None = None
    s3_botocore_reads: bool = False
    cache: Path | None = None

    def settings(self) -> StorageSettings:
        """The validated storage location."""
        from regcleaner.storage.backends import backend_named

        return storage_settings(**(self.values() | {"storage": backend_named(self.storage).name}))


@dataclass(frozen=True, slots=True)
class AccessOptions(OptionGroup):
    """Credentials for the registry and its token server, and TLS."""

    scope: ClassVar[str] = "access"
    auth: str | None = None
    username: str | None = None
    password_file: Path | None = None
    allow_insecure_auth: bool = False
    insecure: bool = False
    ca_cert: Path | None = None

    def settings(self, url: str | None) -> tuple[Credentials | None, TLSOptions]:
        """Validated credentials and TLS options for ``url``."""
        return access_settings(url=url, **self.values())


@dataclass(frozen=True, slots=True)
class Target:
    """The validated registry URL, storage, credentials and TLS options."""

    url: str | None
    storage: StorageSettings
    credentials: Credentials | None
    tls: TLSOptions


@dataclass(frozen=True, slots=True)
class TargetOptions(OptionGroup):
    """The registry, its storage and how to reach the registry: what every command that
    may write reads (its options are those of the three groups)."""

    scope: ClassVar[str] = "target"
    registry: RegistryOptions
    storage: StorageOptions
    access: AccessOptions

    def settings(self) -> Target:
        """The validated URL, storage, credentials and TLS."""
        url = self.registry.url()
        credentials, tls = self.access.settings(url)
        return Target(url, self.storage.settings(), credentials, tls)


@dataclass(frozen=True, slots=True)
class GateOptions(OptionGroup):
    """The check before any storage write (maintenance window)."""

    scope: ClassVar[str] = "gate"
    registry_stopped: bool = False
    gate_probes: str = "3"

    def rounds(self) -> int:
        """The validated number of probe rounds."""
        return parse_count(self.gate_probes, "--gate-probes")


@dataclass(frozen=True, slots=True)
class CollectionOptions(OptionGroup):
    """How blobs are collected (``gc``, and ``clean --direct --gc``)."""

    scope: ClassVar[str] = "collection"
    min_blob_age: str = "0"
    prune_layer_links: bool = False
    purge_uploads: str | None = None
    registry_version: str | None = None

    def given(self) -> bool:
        """True if any collection option differs from its default."""
        return (
            self.prune_layer_links or self.purge_uploads is not None
            or self.min_blob_age != "0" or self.registry_version is not None
        )  # fmt: skip


_PACE = Pace()


@dataclass(frozen=True, slots=True)
class SpeedOptions(OptionGroup):
    """How fast clean deletes (defaults: ``config.Pace``'s)."""

    scope: ClassVar[str] = "speed"
    concurrency: str = f"{_PACE.limits.concurrency}"
    per_repository: str = f"{_PACE.limits.per_repository}"
    rate: str = f"{_PACE.limits.rate:g}"
    timeout: str = f"{_PACE.limits.request_timeout_s:g}"
    recheck_interval: str = f"{_PACE.recheck_interval_s:g}"

    def settings(self) -> Pace:
        """The validated pace."""
        return pace_settings(**self.values())


@dataclass(frozen=True, slots=True)
class OutputOptions(OptionGroup):
    """Report, standard output, logs and metrics."""

    scope: ClassVar[str] = "output"
    report: Path | None = None
    output: str = "text"
    progress_interval: str = "10"
    log_format: str = "text"
    metrics_file: Path | None = None
    pushgateway: str | None = None
    verbose: bool = False

    def settings(self) -> Output:
        """The validated output settings."""
        return output_settings(**self.values())


F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def catalogue() -> dict[str, dict[str, dict[str, Any]]]:
    """The parsed ``options.toml``: scope → option name → its declaration."""
    text = resources.files("regcleaner").joinpath(CATALOGUE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def declaration(scopes: tuple[str, ...], name: str) -> Any:
    """The typer option for ``name``, from the first of ``scopes`` that declares it. A
    missing declaration or an unknown key is a programming error, raised at import."""
    tables = catalogue()
    entry = next((tables[scope][name] for scope in scopes if name in tables.get(scope, {})),
                 None)  # fmt: skip
    if entry is None:
        where = " or ".join(f"[{scope}.{name}]" for scope in scopes)
        raise TypeError(f"{CATALOGUE} declares no {where}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown or "help" not in entry:
        raise TypeError(f"{CATALOGUE} [{scopes[0]}.{name}]: unknown keys {unknown} or no help")
    if not isinstance(entry.get("flags", []), list) or not isinstance(
        entry.get("env", ""), str | list
    ):
        raise TypeError(f"{CATALOGUE} [{scopes[0]}.{name}]: flags is a list, env a string "
                        "or a list")  # fmt: skip
    return typer.Option(
        *entry.get("flags", ()), envvar=entry.get("env"), metavar=entry.get("metavar"),
        rich_help_panel=entry.get("panel"), help=entry["help"],
        show_default=entry.get("show_default", True), min=entry.get("min"),
    )  # fmt: skip


def _group_type(annotation: Any) -> type[OptionGroup] | None:
    if isinstance(annotation, type) and issubclass(annotation, OptionGroup):
        return annotation
    return None


def _declared_elsewhere(annotation: Any) -> bool:
    """Already a typer parameter (an argument, ``--version``), or the click context."""
    if annotation is typer.Context:
        return True
    return typing.get_origin(annotation) is Annotated


_FIELDS: dict[type[OptionGroup], tuple[tuple[str, Any, Any], ...]] = {}


def _group_fields(group: type[OptionGroup]) -> tuple[tuple[str, Any, Any], ...]:
    """Each field of the group: its name, type and default (read once a group: when the
    command is declared, then again for every call)."""
    found = _FIELDS.get(group)
    if found is None:
        hints = typing.get_type_hints(group)
        found = tuple((item.name, hints[item.name], item.default)
                      for item in fields(group))  # type: ignore[arg-type]  # fmt: skip
        _FIELDS[group] = found
    return found


def _group_parameters(group: type[OptionGroup]) -> list[inspect.Parameter]:
    """The group's options, those of the groups it holds included, in field order."""
    parameters: list[inspect.Parameter] = []
    for name, hint, default in _group_fields(group):
        inner = _group_type(hint)
        if inner is not None:
            parameters.extend(_group_parameters(inner))
            continue
        option = declaration((group.scope,), name)
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[hint, option],
        ))  # fmt: skip
    return parameters


def _build(group: type[OptionGroup], values: dict[str, Any]) -> OptionGroup:
    """The group's value from the command's options, taking them out of ``values``."""
    arguments: dict[str, Any] = {}
    for name, hint, _ in _group_fields(group):
        inner = _group_type(hint)
        arguments[name] = _build(inner, values) if inner else values.pop(name)
    return group(**arguments)


def grouped(command: F) -> F:
    """Give the command its options from the catalogue, and spread its ``OptionGroup``
    parameters into them, building one group value per call.

    A plain parameter ``name`` of command ``clean`` is declared by ``[clean.name]``, else
    by ``[shared.name]``; a group's field by ``[<group scope>.name]``. An option name used
    twice is a programming error, raised at import time."""
    signature = inspect.signature(command, eval_str=True)
    scopes = (command.__name__, "shared")
    parameters: list[inspect.Parameter] = []
    groups: dict[str, type[OptionGroup]] = {}
    seen: set[str] = set()
    for parameter in signature.parameters.values():
        group = _group_type(parameter.annotation)
        if group is not None:
            groups[parameter.name] = group
            spread = _group_parameters(group)
        elif _declared_elsewhere(parameter.annotation):
            spread = [parameter]
        else:
            option = declaration(scopes, parameter.name)
            spread = [parameter.replace(annotation=Annotated[parameter.annotation, option])]
        for item in spread:
            if item.name in seen:
                raise TypeError(f"{command.__name__}: option {item.name!r} declared twice")
            seen.add(item.name)
            parameters.append(item.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        arguments = {name: _build(group, values) for name, group in groups.items()}
        return command(**arguments, **values)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {item.name: item.annotation for item in parameters}
    return typing.cast(F, wrapper)


def command_group(name: str, help_text: str) -> typer.Typer:
    """A typer app whose commands read their options here; called bare, it prints its
    help (see ``help_when_bare``). Rich help, no shell completion, plain tracebacks."""
    return typer.Typer(
        name=name, help=help_text, invoke_without_command=True, add_completion=False,
        pretty_exceptions_enable=False, rich_markup_mode="rich",
    )  # fmt: skip


def help_when_bare(context: typer.Context) -> None:
    """A command group called alone prints its help and exits 0 (click's own
    ``no_args_is_help`` exits 2, as for a usage error)."""
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())
        raise typer.Exit(0)
