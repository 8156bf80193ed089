"""The exit-code policy as a pure function of how a run ended."""

from __future__ import annotations

import pytest

from regcleaner.errors import (
    AuthenticationError,
    ConfigError,
    DeletionDisabled,
    GateRefused,
    MarkIncomplete,
    RegistryMismatch,
    RegistryUnreachable,
    StorageError,
    StorageSetupError,
    StorageUnreachable,
)
from regcleaner.exitcodes import RunEnd, exit_code


@pytest.mark.parametrize(
    ("end", "code"),
    [
        (RunEnd(), 0),
        (RunEnd(failures=3), 1),
        (RunEnd(stopped_by="SIGTERM"), 143),
        (RunEnd(stopped_by="SIGINT", failures=2), 130),
        (RunEnd(error=ConfigError("bad option")), 2),
        (RunEnd(error=GateRefused("writable")), 2),
        (RunEnd(error=StorageSetupError("no such bucket")), 2),
        # A storage failure during a run is not bad usage.
        (RunEnd(error=StorageError("listing failed mid-run")), 1),
        (RunEnd(error=MarkIncomplete("unreadable manifest")), 1),
        (RunEnd(error=RegistryUnreachable("down")), 3),
        (RunEnd(error=AuthenticationError("401")), 3),
        (RunEnd(error=DeletionDisabled("405")), 3),
        (RunEnd(error=RegistryMismatch("different registries")), 3),
        # The S3 endpoint does not answer: unreachable, like the registry (not "failed").
        (RunEnd(error=StorageUnreachable("connection refused")), 3),
        (RunEnd(error=ZeroDivisionError("a bug")), 1),
        # An error decides before a signal or failures.
        (RunEnd(error=DeletionDisabled("405"), stopped_by="SIGTERM", failures=1), 3),
    ],
)
def test_exit_code(end: RunEnd, code: int) -> None:
    assert exit_code(end) == code
