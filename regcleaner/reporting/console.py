"""What every report shares: one console for standard error, and the peak memory."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@cache
def stderr_console() -> Console:
    """One console for standard error, shared by progress bars and log lines on a
    terminal, so that a log line never tears a bar. (rich is imported only when a run
    prints to a terminal or a summary table: a JSON run starts faster without it.)"""
    from rich.console import Console

    return Console(stderr=True)


def summary_table(console: Console, title: str) -> Table:
    """A two-column summary table (what, count). Its title is printed first, on a line
    of its own: as a table title it would wrap at the table's width."""
    from rich.table import Table

    console.print(title, style="bold", soft_wrap=True)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    return table


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: on Linux ru_maxrss
    survives exec and so counts the parent that spawned us."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
