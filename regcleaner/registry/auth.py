"""Authorization headers for registry requests.

Basic auth is a fixed header computed once. The header value is a secret: it is kept
out of reprs, logs and exceptions.
"""

from __future__ import annotations

import base64

from regcleaner.config import Credentials


def basic_authorization(credentials: Credentials) -> str:
    """The ``Authorization: Basic`` value (RFC 7617, UTF-8)."""
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Authorizer:
    """Produces the Authorization header for a repository's requests."""

    def __init__(self, credentials: Credentials | None) -> None:
        self._basic: str | None = None
        if credentials is not None:
            self._basic = basic_authorization(credentials)

    def __repr__(self) -> str:
        return f"Authorizer(basic={'<redacted>' if self._basic else None})"

    @property
    def has_credentials(self) -> bool:
        """True if a username and password were configured."""
        return self._basic is not None

    def header(self, repository: str | None) -> str | None:
        """The Authorization header value to send, or None."""
        del repository  # basic auth is the same for every repository
        return self._basic
