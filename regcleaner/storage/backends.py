"""Byte-store backends, registered by name.

A backend is a name (and the aliases operators type), and a factory that opens its
store from the validated ``StorageSettings``; the store module itself is imported only
when the factory runs (aiobotocore costs ~0.3 s of start-up, paid only by S3 runs).
Adding a backend means writing its store module and registering it here or from its
own package (``tests/unit/test_backends.py`` registers ``testkit.memory``'s store as
``memory``); nothing else branches on the kind of storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regcleaner.errors import ConfigError

if TYPE_CHECKING:
    from regcleaner.config import StorageSettings
    from regcleaner.storage.base import ByteStore


@dataclass(frozen=True, slots=True)
class Backend:
    """One kind of storage: how it is named and how its store is opened."""

    name: str
    open: Callable[[StorageSettings], ByteStore]
    aliases: tuple[str, ...] = ()


_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Make ``backend`` selectable by its name and aliases (any case)."""
    for name in (backend.name, *backend.aliases):
        _BACKENDS[name.lower()] = backend


def backend_named(text: str) -> Backend:
    """The backend ``text`` names; ConfigError listing the known ones otherwise."""
    backend = _BACKENDS.get(text.strip().lower())
    if backend is None:
        known = " or ".join(sorted({b.name for b in _BACKENDS.values()}))
        raise ConfigError(f"unknown storage {text!r}: use {known}")
    return backend


def open_store(settings: StorageSettings) -> ByteStore:
    """The byte store ``settings`` describe (opens no connection yet)."""
    return backend_named(settings.kind).open(settings)


def _filesystem(settings: StorageSettings) -> ByteStore:
    from regcleaner.storage.filesystem import FilesystemStore

    return FilesystemStore(settings.root)


def _s3(settings: StorageSettings) -> ByteStore:
    from regcleaner.storage.s3 import S3Store

    if settings.s3 is None:
        raise ConfigError("S3 storage needs a bucket: --bucket or BUCKET")
    return S3Store(settings.s3)


# The older script: REGISTRY_STORAGE=S3 (any case) selects S3, anything else the disk.
register(Backend("filesystem", _filesystem, aliases=("", "disk", "local", "fs")))
register(Backend("s3", _s3))
