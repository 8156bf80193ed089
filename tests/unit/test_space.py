"""The reclaimable-space estimate: each blob counted once, never when anything keeps it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcleaner import space
from regcleaner.digest import Digest
from regcleaner.keyset import blob_key
from regcleaner.manifests import Descriptor, ManifestInfo, ManifestKind, ManifestRefs, Unreadable
from regcleaner.space import SpaceEstimate, human_bytes


def d(name: str) -> Digest:
    return Digest("sha256:" + hashlib.sha256(name.encode()).hexdigest())


def image(size: int, *layers: tuple[str, int]) -> ManifestRefs:
    return ManifestRefs(
        ManifestKind.IMAGE,
        "application/vnd.oci.image.manifest.v1+json",
        blobs=tuple(Descriptor(d(name), n) for name, n in layers),
        size=size,
    )


@pytest.fixture
def estimate() -> SpaceEstimate:
    return SpaceEstimate()


def test_shared_blobs_are_counted_once_and_charged_to_the_first_repository(
    estimate: SpaceEstimate,
) -> None:
    a = {d("a1"): image(100, ("base", 1000), ("a-layer", 10))}
    b = {d("b1"): image(200, ("base", 1000), ("b-layer", 20))}
    estimate.add_repository("a", [d("a1")], [], a)
    estimate.add_repository("b", [d("b1")], [], b)
    total, blobs, per_repository = estimate.settle()
    assert (total, blobs) == (100 + 1000 + 10 + 200 + 20, 5)
    assert per_repository == [("a", 1110), ("b", 220)]
    estimate.close()


def test_a_blob_kept_anywhere_is_not_freed(estimate: SpaceEstimate) -> None:
    manifests: dict[Digest, ManifestInfo] = {
        d("old"): image(100, ("base", 1000), ("old-layer", 10)),
        d("new"): image(100, ("base", 1000), ("new-layer", 10)),
    }
    estimate.add_repository("app", [d("old")], [], manifests)
    # A later repository keeps the shared base layer: only what nothing keeps is freed.
    estimate.add_repository("other", [], [d("new")], manifests)
    assert estimate.settle() == (110, 2, [("app", 110)])
    estimate.close()


def test_an_unknown_size_is_filled_in_by_a_later_descriptor(estimate: SpaceEstimate) -> None:
    manifests: dict[Digest, ManifestInfo] = {
        d("m1"): image(50, ("layer", 0)),
        d("m2"): image(60, ("layer", 700)),
        d("broken"): Unreadable("manifest blob is missing"),
    }
    estimate.add_repository("a", [d("m1")], [], manifests)
    estimate.add_repository("b", [d("m2"), d("broken")], [], manifests)
    total, blobs, per_repository = estimate.settle()
    assert (total, blobs) == (50 + 700 + 60, 4)  # the unreadable manifest counts, size 0
    assert per_repository == [("a", 750), ("b", 60)]
    estimate.close()


def test_many_writes_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def run() -> tuple[int, int, list[tuple[str, int]]]:
        estimate = SpaceEstimate()
        for i in range(50):
            layers = [(f"shared{i % 7}", 1000), (f"own{i}", i + 1)]
            manifests = {d(f"gone{i}"): image(10, *layers), d(f"kept{i}"): image(10, layers[0])}
            kept = [d(f"kept{i}")] if i % 10 == 0 else []
            estimate.add_repository(f"r{i:02}", [d(f"gone{i}")], kept, manifests)
        try:
            return estimate.settle()
        finally:
            estimate.close()

    once = run()
    monkeypatch.setattr(space, "_BUFFERED", 3)  # written out every few repositories
    assert run() == once
    # r00, r10, r20, r30, r40 keep shared0, shared3, shared6, shared2, shared5:
    # 50 manifests, 50 own layers and shared1, shared4 are freed.
    assert once[1] == 50 + 50 + 2


def test_blobs_chosen_to_share_their_first_hex_digits_spread_over_the_partitions() -> None:
    # A tenant can push blobs whose digests all start "00" (about 256 tries each): were
    # the partition the key's own top bits, all of them would be settled at once.
    chosen = [Digest("sha256:00" + hashlib.sha256(str(i).encode()).hexdigest()[2:])
              for i in range(4096)]  # fmt: skip
    estimate = SpaceEstimate()
    try:
        manifests = {d("gone"): image(1, *((f"layer{i}", 1) for i in range(4096)))}
        estimate.add_repository("tenant", chosen, [], {})
        estimate.add_repository("other", [d("gone")], [], manifests)
        crowded = max(len(entries) // 3 for entries in estimate._freed)
        assert crowded < 4096 // 16, f"one partition holds {crowded} of the 8,193 blobs"
        assert estimate.settle()[1] == 4096 + 1 + 4096
    finally:
        estimate.close()


def test_keys_are_signed_64_bit_and_distinct() -> None:
    keys = {blob_key(d(str(i))) for i in range(10_000)}
    assert len(keys) == 10_000
    assert all(-(1 << 63) <= k < (1 << 63) for k in keys)
    assert blob_key("sha512:" + "ab" * 64) != blob_key("sha512:" + "cd" * 64)


def reference(
    repositories: list[tuple[str, list[Digest], list[Digest]]],
    manifests: Mapping[Digest, ManifestInfo],
) -> tuple[int, int, list[tuple[str, int]]]:
    """The estimate's definition, in memory and by digest."""
    kept: set[str] = set()
    for _, _, staying in repositories:
        for digest in staying:
            kept.add(digest)
            info = manifests.get(digest)
            if isinstance(info, ManifestRefs):
                kept.update(blob.digest for blob in info.blobs)
    owner: dict[str, str] = {}
    size: dict[str, int] = {}
    for name, gone, _ in repositories:
        for digest in gone:
            info = manifests.get(digest)
            pairs = [(digest, 0)]
            if isinstance(info, ManifestRefs):
                pairs = [(digest, info.size), *((b.digest, b.size) for b in info.blobs)]
            for blob, blob_size in pairs:
                if blob in kept:
                    continue
                owner.setdefault(blob, name)
                if not size.get(blob):
                    size[blob] = blob_size
    per: dict[str, int] = {}
    for freed, name in owner.items():
        per[name] = per.get(name, 0) + size[freed]
    rows = sorted(per.items(), key=lambda row: (-row[1], row[0]))
    return sum(size.values()), len(owner), rows


LAYERS = [f"layer{i}" for i in range(12)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(st.sampled_from(LAYERS), st.sampled_from([0, 0, 5, 700]))),
            st.sampled_from([0, 10, 99]),
            st.sampled_from(["gone", "kept", "both", "unreadable"]),
            st.integers(0, 4),
        ),
        max_size=30,
    ),
    st.sampled_from([1, 2, 7, 1 << 19]),
)
def test_the_estimate_is_its_definition_however_often_it_is_written_out(
    images: list[tuple[list[tuple[str, int]], int, str, int]], buffered: int
) -> None:
    """Random repositories of images sharing layers (sizes known, unknown, or learnt
    later; manifests deleted, kept, both in different repositories, unreadable),
    written out every entry or never: the reference's answer, in its order."""
    manifests: dict[Digest, ManifestInfo] = {}
    repositories: list[tuple[str, list[Digest], list[Digest]]] = [
        (f"r{i}", [], []) for i in range(5)
    ]
    for n, (layers, size, fate, where) in enumerate(images):
        digest = d(f"manifest{n}")
        if fate == "unreadable":
            manifests[digest] = Unreadable("missing")
        else:
            manifests[digest] = image(size, *layers)
        name, gone, staying = repositories[where]
        (staying if fate == "kept" else gone).append(digest)
        if fate == "both":
            repositories[(where + 1) % 5][2].append(digest)
    old = space._BUFFERED
    space._BUFFERED = buffered
    try:
        estimate = SpaceEstimate()
        for name, gone, staying in repositories:
            estimate.add_repository(name, gone, staying, manifests)
        try:
            assert estimate.settle() == reference(repositories, manifests)
        finally:
            estimate.close()
    finally:
        space._BUFFERED = old


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
