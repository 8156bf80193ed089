"""A set of signed 64-bit keys in about 8 bytes a key.

gc's mark holds one key per blob in use (``blob_key``); a Python ``set`` of
ints takes about 50 bytes a key (44 more than this, measured with ``python -m bench.gc
--blobs 1000000``: 147 against 125 MB at 500,000 keys), about 200 MB more at the 4.5
million blobs in use of a registry of a million manifests. ``KeySet`` keeps the keys
in 65,536 buckets (by their top 16 bits), each an ``array('q')``: appended as they
come, sorted and deduplicated when first looked up after a change (and whenever as
many keys were appended as the set held), then searched by bisection (a bucket holds
about 70 keys at 4.5 million).
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable

_SIGNED = 1 << 63


def blob_key(digest: str) -> int:
    """A signed 64-bit key for a digest: its first 16 hex digits (a hash for anything
    else). gc's mark, the space estimate and the usage ledger key blobs so."""
    algorithm, _, hex_part = digest.partition(":")
    if algorithm == "sha256" and len(hex_part) >= 16:
        try:
            key = int(hex_part[:16], 16) - _SIGNED
        except ValueError:
            pass
        else:
            if key >= -_SIGNED:  # int() takes a sign: "-f..." would fall below 64 bits
                return key  # (a _layers link of any name reaches gc)
    return int.from_bytes(hashlib.sha256(digest.encode()).digest()[:8], "big") - _SIGNED


_BUCKETS = 1 << 16
_SHIFT = 48
_OFFSET = _BUCKETS // 2  # a signed key's top 16 bits run from -32,768 to 32,767


class KeySet:
    """``add``, ``update``, ``in`` and ``len`` of a ``set[int]`` of signed 64-bit ints."""

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._buckets: list[array[int] | None] = [None] * _BUCKETS
        self._unsorted: set[int] = set()
        """Buckets appended to since they were last sorted."""
        self._appended = 0
        self._sorted_size = 0
        self.update(keys)

    def add(self, key: int) -> None:
        index = (key >> _SHIFT) + _OFFSET
        bucket = self._buckets[index]
        if bucket is None:
            bucket = self._buckets[index] = array("q")
        bucket.append(key)  # OverflowError for a key outside 64 bits, as intended
        self._unsorted.add(index)
        self._appended += 1
        # Many manifests mark the same blobs: drop the repeats now and then (as often
        # as the set doubles, so that the sorting stays O(n log n) in all).
        if self._appended > max(1 << 20, self._sorted_size):
            self._sort()

    def update(self, keys: Iterable[int]) -> None:
        for key in keys:
            self.add(key)

    def _sort(self) -> None:
        buckets = self._buckets
        for index in self._unsorted:
            bucket = buckets[index]
            assert bucket is not None
            buckets[index] = array("q", sorted(set(bucket)))
        self._unsorted.clear()
        self._appended = 0
        self._sorted_size = sum(len(bucket) for bucket in buckets if bucket is not None)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int) or not -(1 << 63) <= key < 1 << 63:
            return False
        index = (key >> _SHIFT) + _OFFSET
        if index in self._unsorted:
            self._sort()
        bucket = self._buckets[index]
        if bucket is None:
            return False
        at = bisect_left(bucket, key)
        return at < len(bucket) and bucket[at] == key

    def __len__(self) -> int:
        if self._unsorted:
            self._sort()
        return self._sorted_size
