"""One exception hierarchy for regcleaner. ``regcleaner.exitcodes`` maps it to exit codes.

RegcleanerError
├── ConfigError                  bad option, environment variable, file or path
│   └── GateRefused              storage writes refused: the registry can still write
├── StorageError                 the storage failed during the run (a listing, a read)
│   ├── StorageSetupError        the storage cannot be used at all: no registry layout
│   │                            under the root, missing bucket, refused credentials
│   └── StorageUnreachable       the S3 endpoint does not answer (before the run)
├── ManifestError                one manifest cannot be understood (kept, never fatal)
├── MarkIncomplete               gc: the mark phase is not complete, nothing is swept
└── RegistryError                the registry API said something we cannot go on with
    ├── TransportError           no HTTP answer (reset, refused, timeout): retryable
    │   └── NothingAnswers       nothing at all: connection refused, no route, no such host
    ├── TokenFetchError          the token server failed or answered garbage: retryable
    ├── RegistryUnreachable      connection, DNS or TLS failure on first contact
    │   └── RegistryAbsent       nothing answers at the URL (refused, no route, no host)
    ├── AuthenticationError      401 that persists, wrong credentials
    ├── DeletionDisabled         405 on DELETE: delete disabled, read-only, cache
    ├── RegistryMismatch         the URL's registry does not serve the storage given
    └── PermissionDenied         403 on one repository: that repository fails, run goes on
"""

from __future__ import annotations


class RegcleanerError(Exception):
    """Base of every error regcleaner raises on purpose."""


class ConfigError(RegcleanerError):
    """An option, environment variable or file given by the operator is not usable."""


class GateRefused(ConfigError):
    """Writing storage was refused: the registry is not shown to be unable to write."""

    def __init__(self, message: str, *, short: str = "") -> None:
        super().__init__(message)
        self.short = short or message
        """Why, in one short clause (for a summary line)."""


class StorageError(RegcleanerError):
    """The storage backend failed where it had to answer."""


class StorageSetupError(StorageError):
    """The storage cannot be used at all (checked before anything is done)."""


class StorageUnreachable(StorageError):
    """The object store's endpoint does not answer (found before the run starts)."""


class ManifestError(RegcleanerError):
    """A manifest's bytes cannot be parsed into references; the manifest is kept."""


class MarkIncomplete(RegcleanerError):
    """Blob collection: something could not be marked, so nothing may be swept."""


class RegistryError(RegcleanerError):
    """The registry answered in a way that ends the work it was asked for."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(RegistryError):
    """The request did not get an HTTP answer (reset, refused, timeout, TLS)."""


class NothingAnswers(TransportError):
    """Nothing answered at all: the connection was refused, no route leads to the host,
    or the host name does not exist. Anything else (a timeout, a reset, a TLS handshake)
    may come from a server that is there."""


class TokenFetchError(RegistryError):
    """The token server could not be reached or answered garbage (retryable)."""


class RegistryUnreachable(RegistryError):
    """No usable connection to the registry."""


class RegistryAbsent(RegistryUnreachable):
    """Nothing answers at the registry URL at all (see NothingAnswers): the only answer
    that ``--registry-stopped`` may take as a stopped registry."""


class AuthenticationError(RegistryError):
    """The registry refuses our credentials."""


class DeletionDisabled(RegistryError):
    """The registry answers 405 to DELETE: nothing can be deleted through it."""


class RegistryMismatch(RegistryError):
    """The registry at the URL and the storage given are not the same registry."""


class PermissionDenied(RegistryError):
    """403: the credentials may not delete in this repository."""
