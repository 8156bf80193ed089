"""Link files are read as the registry reads them: exactly one digest, nothing around it."""

from __future__ import annotations

import pytest

from regcleaner.view import parse_link

HEX = "ab" * 32


def test_a_link_is_one_digest() -> None:
    assert parse_link(f"sha256:{HEX}".encode()) == f"sha256:{HEX}"


@pytest.mark.parametrize(
    "data",
    [
        f"sha256:{HEX}\n".encode(),  # 2.8.2: "invalid checksum digest length"
        f"sha256:{HEX}\r\n".encode(),
        f" sha256:{HEX}".encode(),
        f"sha256:{HEX} ".encode(),
        f"sha256:{HEX}\t".encode(),
        f"sha256:{HEX.upper()}".encode(),
        b"",
        b"\xff",
        b"x" * 2000,
    ],
)
def test_anything_around_the_digest_makes_a_link_unreadable(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a sha256 digest|link file"):
        parse_link(data)
