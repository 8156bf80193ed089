"""``python -m regcleaner.usage usage|prune-empty-repositories ...``: the two commands on
their own, until (and besides) their registration in ``regcleaner.cli``."""

from __future__ import annotations

import typer

from regcleaner.usage.command import prune_empty_repositories, usage

app = typer.Typer(name="regcleaner-usage", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)  # fmt: skip
app.command("usage")(usage)
app.command("prune-empty-repositories")(prune_empty_repositories)

if __name__ == "__main__":
    app()
