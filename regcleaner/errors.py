"""One exception hierarchy for regcleaner; the CLI maps each branch to an exit code.

RegcleanerError                  exit 2 unless a subclass says otherwise
├── ConfigError                  bad option, environment variable or path (2)
├── StorageError                 storage root or bucket cannot be listed or read (2)
├── ManifestError                one manifest cannot be understood (kept, never fatal)
└── RegistryError                the registry API said something we cannot go on with
    ├── RegistryUnreachable      connection, DNS or TLS failure on first contact (3)
    ├── AuthenticationError      401 that persists, wrong credentials (3)
    ├── DeletionDisabled         405 on DELETE: delete disabled, read-only, cache (3)
    └── PermissionDenied         403 on one repository: that repository fails, run goes on
"""

from __future__ import annotations


class RegcleanerError(Exception):
    """Base of every error regcleaner raises on purpose."""

    exit_code: int = 2


class ConfigError(RegcleanerError):
    """An option, environment variable or file given by the operator is not usable."""


class StorageError(RegcleanerError):
    """The storage backend cannot be listed or read where it must be."""


class ManifestError(RegcleanerError):
    """A manifest's bytes cannot be parsed into references; the manifest is kept."""


class RegistryError(RegcleanerError):
    """The registry answered in a way that ends the work it was asked for."""

    exit_code = 3

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RegistryUnreachable(RegistryError):
    """No usable connection to the registry."""


class AuthenticationError(RegistryError):
    """The registry refuses our credentials."""


class DeletionDisabled(RegistryError):
    """The registry answers 405 to DELETE: nothing can be deleted through it."""


class PermissionDenied(RegistryError):
    """403: the credentials may not delete in this repository."""
