"""How a run reaches the registry: its client, and the gate a storage write waits
for (the checks themselves are in ``regcleaner.gate``). Used by the runner and by the
pruning of empty repositories; it imports neither."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from regcleaner.config import GcSettings, Settings
    from regcleaner.registry.client import RegistryClient
    from regcleaner.view import RegistryView

log = logging.getLogger("regcleaner")


def registry_client(settings: Settings | GcSettings) -> RegistryClient:
    """A client for the registry at ``settings.registry_url`` with the run's
    credentials, TLS and limits. (aiohttp is imported only when the registry is talked
    to: a direct run on a stopped registry starts without it.)"""
    from regcleaner.registry.auth import Authorizer
    from regcleaner.registry.client import RegistryClient

    assert settings.registry_url is not None
    return RegistryClient(
        settings.registry_url, Authorizer(settings.credentials), settings.tls, settings.limits
    )


async def first_repository(view: RegistryView) -> str | None:
    """The first repository the storage lists (None if there is none), without
    listing the rest."""
    from regcleaner.gate import first_repositories

    found = await first_repositories(view, 1)
    return found[0] if found else None


def make_gate(settings: Settings | GcSettings, view: RegistryView) -> Callable[[], Awaitable[None]]:
    """The check that must pass before storage is written: nothing answers at the URL
    and the operator says the registry is stopped, or the registry there is read-only
    and serves this storage (regcleaner.gate)."""

    async def gate() -> None:
        if settings.registry_url is None:
            log.warning(
                "--registry-stopped: trusting that no registry process can write %s; "
                "nothing was probed",
                view.describe(),
            )
            return
        from regcleaner.gate import answers_or_stopped, prove_read_only, prove_serves_storage

        client = registry_client(settings)
        async with client:
            if await answers_or_stopped(client, registry_stopped=settings.registry_stopped):
                return
            repository = await first_repository(view) or "regcleaner/read-only-probe"
            await prove_read_only(client, repository, rounds=settings.gate_rounds)
            await prove_serves_storage(client, view)

    return gate
