"""KeySet (regcleaner/keyset.py), gc's mark set: it must answer exactly as a ``set``
of the same keys, whatever the order of adds and lookups; a key it misses would let
gc sweep a blob in use."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner.keyset import KeySet, blob_key

keys = st.integers(-(1 << 63), (1 << 63) - 1)
near = st.sampled_from([-(1 << 63), -1, 0, 1, (1 << 63) - 1, 1 << 48, -(1 << 48), (1 << 48) - 1])


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.one_of(keys, near)), max_size=200))
def test_a_keyset_answers_as_a_set(steps: list[tuple[bool, int]]) -> None:
    found = KeySet()
    expected: set[int] = set()
    for adding, key in steps:
        if adding:
            found.add(key)
            expected.add(key)
        else:
            assert (key in found) == (key in expected)
    assert len(found) == len(expected)
    for key in expected:
        assert key in found


def test_many_repeats_and_lookups_between_them() -> None:
    rng = random.Random(3)
    pool = [rng.getrandbits(64) - (1 << 63) for _ in range(5000)]
    found = KeySet()
    expected: set[int] = set()
    for step in range(1 << 21):  # past the point where repeats are dropped
        key = pool[step % len(pool)] if step % 3 else rng.choice(pool)
        found.add(key)
        expected.add(key)
        if step % 100_003 == 0:
            probe = rng.getrandbits(64) - (1 << 63)
            assert (probe in found) == (probe in expected)
            assert (pool[0] in found) == (pool[0] in expected)
    assert len(found) == len(expected)
    assert all(key in found for key in pool)
    assert sum(len(b) for b in found._buckets if b is not None) == len(expected)


def test_what_is_not_a_64_bit_int_is_not_in_it() -> None:
    found = KeySet([1, 2])
    assert "1" not in found
    assert 1 << 64 not in found
    assert 1.0 not in found


@given(st.text(max_size=80))
def test_every_name_keys_inside_64_bits(tail: str) -> None:
    """A _layers link of any name reaches gc's mark: its key must fit the set (int()
    takes "-", "+", "0x" and "_", which made keys outside 64 bits)."""
    for digest in ("sha256:" + tail, "sha256:-" + "f" * 63, "sha256:0x" + "f" * 62, tail):
        assert -(1 << 63) <= blob_key(digest) < 1 << 63
        KeySet().add(blob_key(digest))


def test_a_sha256_digest_keys_by_its_first_16_hex_digits() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    assert blob_key(digest) == 0x0123456789ABCDEF - (1 << 63)
    assert blob_key(digest.upper().replace("SHA256", "sha256")) == blob_key(digest)
