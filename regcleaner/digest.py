"""Digest value type: the only digests regcleaner acts on are ``sha256:<64 lowercase hex>``."""

from __future__ import annotations

import re
from typing import NewType

Digest = NewType("Digest", str)

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def parse_digest(text: str) -> Digest:
    """Return ``text`` as a Digest, or raise ValueError if it is not ``sha256:<64 hex>``."""
    if not _SHA256.fullmatch(text):
        raise ValueError(f"not a sha256 digest: {text[:80]!r}")
    return Digest(text)


def is_sha256_hex(text: str) -> bool:
    """True for exactly 64 lowercase hex characters (a revision or blob directory name)."""
    return _HEX64.fullmatch(text) is not None


def digest_from_hex(hex_part: str) -> Digest:
    """Build a Digest from the 64-hex directory name used by the storage layout."""
    if not is_sha256_hex(hex_part):
        raise ValueError(f"not a sha256 hex string: {hex_part[:80]!r}")
    return Digest("sha256:" + hex_part)


def hex_of(digest: Digest) -> str:
    """The hex part of a digest, as used in storage paths."""
    return digest[7:]
