"""The reclaimable-space estimate: each blob counted once, never when anything keeps it."""

from __future__ import annotations

import hashlib

import pytest

from regcleaner import space
from regcleaner.digest import Digest
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


def test_many_commits_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
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
    monkeypatch.setattr(space, "_COMMIT_ROWS", 3)
    assert run() == once
    # r00, r10, r20, r30, r40 keep shared0, shared3, shared6, shared2, shared5:
    # 50 manifests, 50 own layers and shared1, shared4 are freed.
    assert once[1] == 50 + 50 + 2


def test_keys_are_signed_64_bit_and_distinct() -> None:
    keys = {space._key(d(str(i))) for i in range(10_000)}
    assert len(keys) == 10_000
    assert all(-(1 << 63) <= k < (1 << 63) for k in keys)
    assert space._key("sha512:" + "ab" * 64) != space._key("sha512:" + "cd" * 64)


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
