"""bench.s3's faster ListObjectsV2 for moto (benchmarks only) must list what moto's own
does: keys, rolled-up prefixes (a delimiter of any length), pages and StartAfter."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from moto.s3.models import FakeKey, S3Backend

from bench import s3 as bench_s3

_buckets = itertools.count()
PARTS = ["a", "a-b", "a.b", "a0", "_layers", "_manifests", "x", ""]


def listing(backend: S3Backend, bucket: Any, **kwargs: Any) -> list[str]:
    """Every entry of every page, in order (keys by name, prefixes as they come)."""
    entries: list[str] = []
    token = None
    while True:
        page, truncated, token = backend.list_objects_v2(
            bucket, continuation_token=token, max_keys=3, **kwargs
        )
        entries += [e.name if isinstance(e, FakeKey) else e for e in page]
        entries.append("|")  # page boundary
        if not truncated:
            return entries


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sets(st.lists(st.sampled_from(PARTS), min_size=1, max_size=4).map("/".join), max_size=25),
    st.sampled_from([None, "/", "/_layers/"]),
    st.sampled_from([None, "a", "a/", "a/_layers/", "a-b"]),
)
def test_the_bench_listing_lists_what_moto_lists(
    keys: set[str], delimiter: str | None, start_after: str | None
) -> None:
    if delimiter and start_after and delimiter in start_after:
        # StartAfter inside a rolled-up prefix (moto leaves the prefix out; what S3 does
        # is not written down): neither regcleaner nor the benchmarks list so
        assume(start_after.index(delimiter) + len(delimiter) == len(start_after))
    backend = S3Backend("us-east-1", "123456789012")
    name = f"fast-listing-{next(_buckets)}"
    backend.create_bucket(name, "us-east-1")
    try:
        for key in keys:
            backend.put_object(name, key, b"x")
        bucket = backend.get_bucket(name)
        kwargs = {"prefix": "", "delimiter": delimiter, "start_after": start_after}
        expected = listing(backend, bucket, **kwargs)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(S3Backend, "list_objects_v2", S3Backend.list_objects_v2)
            bench_s3.patch_moto_listing()
            assert listing(backend, bucket, **kwargs) == expected
    finally:
        for key in keys:
            backend.delete_object(name, key)
        backend.delete_bucket(name)
