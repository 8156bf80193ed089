"""options.toml declares every command-line option once, and only those in use."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
import typer.main

from regcleaner import options
from regcleaner.cli import app
from regcleaner.options import OptionGroup, catalogue, grouped


def _root() -> Any:
    """The click command typer builds (typer vendors its own click: no isinstance)."""
    return typer.main.get_command(app)


def _params(command: str) -> dict[str, Any]:
    return {item.name: item for item in _root().commands[command].params}


def _groups() -> dict[str, type[OptionGroup]]:
    return {group.scope: group for group in OptionGroup.__subclasses__()}


def _commands() -> dict[str, Any]:
    """Every grouped command's undecorated function, by its name (its catalogue scope)."""
    found: dict[str, Any] = {}

    def walk(command: Any) -> None:
        for child in getattr(command, "commands", {}).values():
            walk(child)
        callback = getattr(command.callback, "__wrapped__", None)
        if callback is not None:
            found[callback.__name__] = callback

    walk(_root())
    return found


def _plain_parameters(function: Any) -> set[str]:
    signature = inspect.signature(function, eval_str=True)
    return {
        name
        for name, parameter in signature.parameters.items()
        if not (isinstance(parameter.annotation, type)
                and issubclass(parameter.annotation, OptionGroup))
    }  # fmt: skip


def test_every_table_declares_an_option_in_use() -> None:
    commands = _commands()
    assert {"clean", "gc", "usage", "prune_empty_repositories", "serve", "import_log"} <= set(
        commands
    )
    groups = _groups()
    plain = {name: _plain_parameters(function) for name, function in commands.items()}
    unused = []
    for scope, tables in catalogue().items():
        for name in tables:
            if scope in groups:
                used = name in {item.name for item in dataclasses.fields(groups[scope])}  # type: ignore[arg-type]
            elif scope == "shared":
                used = any(name in parameters and name not in catalogue().get(command, {})
                           for command, parameters in plain.items())  # fmt: skip
            else:
                used = name in plain.get(scope, set())
            if not used:
                unused.append(f"[{scope}.{name}]")
    assert unused == []


def test_every_clean_option_has_help_and_a_panel_but_dry_run() -> None:
    """--dry-run stands first, beside --help, in the panel every command has."""
    options_shown = [item for item in _params("clean").values() if item.param_type_name == "option"]
    assert len(options_shown) == 49
    for option in options_shown:
        assert option.help, option.name
        assert bool(option.rich_help_panel) == (option.name != "dry_run"), option.name


def test_a_flag_from_the_catalogue_keeps_its_names_and_environment() -> None:
    by_name = _params("clean")
    verbose = by_name["verbose"]
    assert verbose.opts == ["--verbose", "-v"]
    assert verbose.secondary_opts == []
    assert by_name["s3_endpoint"].envvar == ["S3_ENDPOINT", "AWS_ENDPOINT_URL_S3"]
    assert by_name["estimate_space"].secondary_opts == ["--no-estimate-space"]


def test_an_undeclared_option_is_refused_when_the_command_is_declared() -> None:
    def surprise(*, colour: str = "blue") -> None:
        """Not in the catalogue."""

    with pytest.raises(TypeError, match=r"declares no \[surprise\.colour\] or \[shared\.colour\]"):
        grouped(surprise)


def test_an_unknown_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        options, "catalogue", lambda: {"odd": {"colour": {"help": "x", "colur": "red"}}}
    )

    def odd(*, colour: str = "blue") -> None:
        """A misspelt key in its table."""

    with pytest.raises(TypeError, match=r"\[odd\.colour\]: unknown keys \['colur'\]"):
        grouped(odd)


def test_a_command_table_wins_over_shared() -> None:
    """usage's --include shows repositories (all are still read); clean's selects them."""
    usage_include = _params("usage")["include"]
    clean_include = _params("clean")["include"]
    assert usage_include.help.startswith("Show only repositories")
    assert clean_include.help == "Only repositories matching this glob (repeatable)."


def test_a_flag_written_as_a_string_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """``flags = "--x"`` would be spread into single characters."""
    monkeypatch.setattr(options, "catalogue", lambda: {"odd": {"x": {"help": "x", "flags": "--x"}}})

    def odd(*, x: bool = False) -> None:
        """One flag, written as a string."""

    with pytest.raises(TypeError, match=r"\[odd\.x\]: flags is a list"):
        grouped(odd)


def test_the_speed_defaults_read_back_as_the_pace_they_come_from() -> None:
    from regcleaner.config import Pace
    from regcleaner.options import SpeedOptions

    assert SpeedOptions().settings() == Pace()
