"""The exit-code policy: a pure function of how a run ended.

- 0: done (a dry run included), nothing failed.
- 1: done, but some deletions or repositories failed; or the storage failed during the
  run; or blob collection refused to sweep; or the report file could not be written;
  or an internal error.
- 2: bad usage or configuration, including storage that is not a registry's, and a
  refused storage write (the registry can still write).
- 3: the registry: unreachable, credentials refused, deletion disabled (405), or the
  URL and the storage belong to different registries; or the S3 endpoint unreachable.
- 130 / 143: stopped by SIGINT / SIGTERM (the report covers what was done).

An error decides first, then a stop signal, then failures counted in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from regcleaner.errors import ConfigError, RegistryError, StorageSetupError, StorageUnreachable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REGISTRY = 3
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


@dataclass(frozen=True, slots=True)
class RunEnd:
    """What the exit code depends on."""

    error: BaseException | None = None
    stopped_by: str | None = None
    failures: int = 0
    """Failed deletions plus failed repositories (and, for gc, blobs not removed)."""


def exit_code(end: RunEnd) -> int:
    """The process exit code for a run that ended as ``end`` describes."""
    error = end.error
    if error is not None:
        if isinstance(error, ConfigError | StorageSetupError):
            return EXIT_USAGE
        if isinstance(error, RegistryError | StorageUnreachable):
            return EXIT_REGISTRY
        return EXIT_FAILED
    if end.stopped_by:
        return EXIT_SIGNAL.get(end.stopped_by, EXIT_FAILED)
    return EXIT_FAILED if end.failures else EXIT_OK
