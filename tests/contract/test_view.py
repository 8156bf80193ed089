"""The registry-view contract, on both byte stores: the registry's meaning read (and, for
direct removal, written) through any backend the same way."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping

import pytest

from regcleaner import layout as paths
from regcleaner.blobfolders import list_blobs
from regcleaner.digest import Digest
from regcleaner.errors import StorageSetupError
from regcleaner.manifests import ManifestKind, ManifestRefs, Unreadable
from regcleaner.snapshots import RepositorySnapshot
from regcleaner.storage.base import ByteStore, EntryKind
from regcleaner.view import BlobInfo, RegistryView, StrayEntry
from tests.contract.conftest import (
    V2,
    Layout,
    blob_key,
    history_key,
    manifest,
    revision_key,
    run,
    tag_key,
)


async def all_repositories(store: ByteStore) -> list[str]:
    view = RegistryView(store)
    await view.check()
    names: list[str] = []

    async def found(name: str) -> None:
        names.append(name)

    await view.repositories(found)
    return names


def test_discovers_nested_and_prefix_repositories(layout: Layout) -> None:
    data, digest = manifest("x")
    items = [(blob_key(digest), data)]
    for repo in ("a", "a/b", "a/b/c", "org/team/app", "solo"):
        items.append((revision_key(repo, digest), digest.encode()))
    items += [
        (f"{V2}/repositories/a/_layers/sha256/{'1' * 64}/link", b"x"),
        (f"{V2}/repositories/a/_uploads/abc/startedat", b"x"),
        (f"{V2}/repositories/onlylayers/_layers/sha256/{'1' * 64}/link", b"x"),
        (f"{V2}/repositories/org/_uploads/u/data", b"x"),
    ]
    layout.put_many(items)
    names = run(layout.store(), all_repositories)
    assert sorted(names) == ["a", "a/b", "a/b/c", "org/team/app", "solo"]
    assert len(names) == len(set(names))


def two_revisions(layout: Layout, repo: str) -> tuple[Digest, Digest, str]:
    """Two manifests (their blobs and revision links) in ``repo``; their digests and
    the repository's ``_manifests`` folder."""
    one, d1 = manifest("1")
    two, d2 = manifest("2")
    layout.put_many([
        (blob_key(d1), one), (blob_key(d2), two),
        (revision_key(repo, d1), d1.encode()), (revision_key(repo, d2), d2.encode()),
    ])  # fmt: skip
    return d1, d2, f"{V2}/repositories/{repo}/_manifests"


def test_snapshot_reads_revisions_current_tags_and_push_times(layout: Layout) -> None:
    repo = "team/app"
    d1, d2, base = two_revisions(layout, repo)
    layout.put_many([
        (tag_key(repo, "latest"), d2.encode()),
        (history_key(repo, "latest", d1), d1.encode()),  # history
        (history_key(repo, "old", d1), d1.encode()),  # untagged: no current link
        (tag_key(repo, "broken"), b"garbage"),
        (f"{base}/revisions/sha256/{d1[7:]}/signatures/sha256/{'2' * 64}/link", b"x"),
        (f"{base}/revisions/sha256/not-hex/link", b"x"),
    ])  # fmt: skip
    before = time.time()
    snapshot = run(layout.store(), lambda s: RegistryView(s).snapshot(repo))
    assert set(snapshot.revisions) == {d1, d2}
    assert snapshot.tags == {"latest": d2}
    assert set(snapshot.broken_tags) == {"broken"}
    assert set(snapshot.tag_times) == {"latest"}
    assert abs(snapshot.tag_times["latest"] - before) < 120
    assert all(abs(mtime - before) < 120 for mtime in snapshot.revisions.values())
    assert snapshot.tag_history is None

    full = run(layout.store(), lambda s: RegistryView(s).snapshot(repo, history=True))
    assert full.tags == snapshot.tags
    assert full.tag_history == {d1: ("latest", "old")} or full.tag_history == {
        d1: ("old", "latest")
    }
    assert full.revision_files == {d1: (f"signatures/sha256/{'2' * 64}/link",)}


def test_snapshot_of_a_missing_repository_is_empty(layout: Layout) -> None:
    layout.put(f"{V2}/repositories/x/_manifests/tags/t/current/link", b"x")
    snapshot = run(layout.store(), lambda s: RegistryView(s).snapshot("nope"))
    assert snapshot.revisions == {}
    assert snapshot.tags == {}


def test_revision_mtime_matches_the_snapshot_and_is_none_when_gone(layout: Layout) -> None:
    one, d1 = manifest("1")
    _, d_never = manifest("never pushed")
    repo = "team/app"
    layout.put_many([(blob_key(d1), one), (revision_key(repo, d1), d1.encode())])

    async def look(store: ByteStore) -> tuple[RepositorySnapshot, float | None, float | None]:
        view = RegistryView(store)
        snapshot = await view.snapshot(repo)
        return (
            snapshot,
            await view.revision_mtime(repo, d1),
            await view.revision_mtime(repo, d_never),
        )

    snapshot, mtime, missing = run(layout.store(), look)
    assert mtime == snapshot.revisions[d1]
    assert missing is None


def test_read_manifests_verifies_and_parses_and_reports_problems(layout: Layout) -> None:
    good, d_good = manifest("good", subject={"digest": "sha256:" + "9" * 64, "size": 1})
    _, d_bad = manifest("bad")
    _, d_missing = manifest("missing")
    layout.put_many([(blob_key(d_good), good), (blob_key(d_bad), b"{tampered")])
    found = run(
        layout.store(), lambda s: RegistryView(s).read_manifests([d_good, d_bad, d_missing])
    )
    good_refs = found[d_good]
    assert isinstance(good_refs, ManifestRefs)
    assert good_refs.kind is ManifestKind.IMAGE
    assert good_refs.subject == "sha256:" + "9" * 64
    assert found[d_bad] == Unreadable("blob content does not match its digest")
    assert found[d_missing] == Unreadable("manifest blob is missing")


def test_oversized_manifest_blob_is_unreadable_not_downloaded_whole(layout: Layout) -> None:
    data = b" " * (4 * 1024 * 1024 + 10)
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    layout.put(blob_key(digest), data)
    found = run(layout.store(), lambda s: RegistryView(s).read_manifests([digest]))
    assert found[digest] == Unreadable("blob larger than 4194304 bytes")


def test_pagination_past_1000_revisions_and_tags(layout: Layout) -> None:
    repo = "big"
    items: list[tuple[str, bytes]] = []
    digests = []
    for i in range(1002):
        digest = "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()
        digests.append(digest)
        items.append((revision_key(repo, digest), digest.encode()))
    for i in range(3):
        items.append((tag_key(repo, f"t{i}"), digests[i].encode()))
    layout.put_many(items)
    snapshot = run(layout.store(), lambda s: RegistryView(s).snapshot(repo))
    assert len(snapshot.revisions) == 1002
    assert len(snapshot.tags) == 3


def test_check_refuses_a_root_without_registry_layout(layout: Layout) -> None:
    layout.put("something/else", b"x")
    with pytest.raises(StorageSetupError, match="docker/registry/v2"):
        run(layout.store(), lambda s: RegistryView(s).check())


def test_removal_keys_take_a_manifest_out_of_its_repository_and_nothing_else(
    layout: Layout,
) -> None:
    """What direct removal deletes: the revision folder and the tag-history entries of
    the removed digest, in this repository only."""
    one, d1 = manifest("1")
    two, d2 = manifest("2")
    repo, other = "team/app", "team/other"
    base = f"{V2}/repositories/{repo}/_manifests"
    layout.put_many([
        (blob_key(d1), one), (blob_key(d2), two),
        (revision_key(repo, d1), d1.encode()), (revision_key(repo, d2), d2.encode()),
        (revision_key(other, d1), d1.encode()),
        (tag_key(repo, "v"), d2.encode()),
        (history_key(repo, "v", d1), d1.encode()), (history_key(repo, "v", d2), d2.encode()),
        (history_key(repo, "w", d1), d1.encode()),
        (f"{base}/revisions/sha256/{d1[7:]}/signatures/sha256/{'3' * 64}/link", b"x"),
    ])  # fmt: skip
    before = layout.keys()

    async def remove(store: ByteStore) -> list[str | None]:
        view = RegistryView(store)
        snapshot = await view.snapshot(repo, history=True)
        plan = view.removal_keys(snapshot, [d1])
        return await store.delete_many(plan.keys, directories=plan.directories)

    assert run(layout.store(), remove) == [None, None, None, None]
    removed = before - layout.keys()
    assert removed == {
        revision_key(repo, d1),
        history_key(repo, "v", d1),
        history_key(repo, "w", d1),
        f"{base}/revisions/sha256/{d1[7:]}/signatures/sha256/{'3' * 64}/link",
    }
    after = run(layout.store(), lambda s: RegistryView(s).snapshot(repo, history=True))
    assert set(after.revisions) == {d2}
    assert after.tags == {"v": d2}
    assert after.tag_history == {d2: ("v",)}
    assert after.revision_files == {}


def test_blobs_are_enumerated_with_sizes(layout: Layout) -> None:
    one, d1 = manifest("1")
    two, d2 = manifest("2")
    hh = d1[7:9]
    sha512 = "sha512:" + hh + "0" * 126
    layout.put_many([
        (blob_key(d1), one), (blob_key(d2), two),
        (f"{V2}/blobs/sha512/{hh}/{sha512[7:]}/data", b"wide"),
        (f"{V2}/blobs/sha256/{hh}/not-a-digest/data", b"x"),
        (f"{V2}/blobs/sha256/{hh}/{d1[7:]}/sub/data", b"x"),  # below a blob
        (f"{V2}/blobs/sha256/{hh}/data", b"x"),
        (f"{V2}/blobs/sha256/data", b"x"),
        (f"{V2}/blobs/data", b"x"),
        (f"{V2}/blobs/md5/{hh}/{hh + '0' * 30}/data", b"x"),  # an unknown algorithm
        # Files not named data: the registry's garbage-collect ignores them.
        (f"{V2}/blobs/sha256/{hh}/{d2[7:]}/startedat", b"x"),
        (f"{V2}/blobs/sha256/{hh}/{'e' * 64}/data/inside", b"x"),
        (f"{V2}/blobs/sha256/loose", b"x"),
    ])  # fmt: skip

    async def blobs(store: ByteStore) -> tuple[dict[str, int], list[str]]:
        sizes: dict[str, int] = {}
        odd: list[StrayEntry] = []

        def consume(found: list[BlobInfo], strange: list[StrayEntry]) -> None:
            sizes.update({b.digest: b.size for b in found})
            odd.extend(strange)

        await list_blobs(store, consume, width=4, problem=pytest.fail)
        return sizes, [entry.key for entry in odd]

    sizes, odd = run(layout.store(), blobs)
    assert sizes == {d1: len(one), d2: len(two), sha512: 4}
    assert sorted(odd) == sorted([
        f"{paths.BLOBS}/data",
        f"{paths.BLOBS}/md5/{hh}/{hh + '0' * 30}/data",
        f"{paths.BLOBS_SHA256}/data",
        f"{paths.BLOBS_SHA256}/{hh}/data",
        f"{paths.BLOBS_SHA256}/{hh}/not-a-digest/data",
        f"{paths.BLOBS_SHA256}/{hh}/{d1[7:]}/sub/data",
    ])  # fmt: skip


def test_revision_links_are_read_below_every_algorithm(layout: Layout) -> None:
    _, d1 = manifest("1")
    repo = "team/app"
    base = f"{V2}/repositories/{repo}/_manifests/revisions"
    signature = f"sha256/{d1[7:]}/signatures/sha256/{'2' * 64}/link"
    layout.put_many([
        (revision_key(repo, d1), d1.encode()),
        (f"{base}/{signature}", b"sig"),
        (f"{base}/sha512/abc/link", b"garbage"),
        (f"{base}/sha256/{d1[7:]}/other", b"not a link"),
    ])  # fmt: skip
    links, odd = run(layout.store(), lambda s: RegistryView(s).revision_link_files(repo))
    assert sorted(links) == sorted([
        (f"sha256/{d1[7:]}/link", d1.encode()), (signature, b"sig"),
        ("sha512/abc/link", b"garbage"),
    ])  # fmt: skip
    assert odd == []


def test_repository_folders_say_what_marks_them(layout: Layout) -> None:
    data, digest = manifest("x")
    layout.put_many([
        (blob_key(digest), data),
        (revision_key("both", digest), digest.encode()),
        (f"{V2}/repositories/both/_layers/sha256/{'1' * 64}/link", b"x"),
        (revision_key("manifests/only", digest), digest.encode()),
        (f"{V2}/repositories/layers/only/_layers/sha256/{'1' * 64}/link", b"x"),
        (f"{V2}/repositories/layersfile/_layers", b"x"),
        (f"{V2}/repositories/uploads/_uploads/u/startedat", b"x"),
    ])  # fmt: skip

    async def folders(store: ByteStore) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}

        async def emit(name: str, here: Mapping[str, EntryKind]) -> None:
            found[name] = set(here)

        await RegistryView(store).repository_folders(emit, markers=(paths.LAYERS_DIR,))
        return found

    assert run(layout.store(), folders) == {
        "both": {"_manifests", "_layers"},
        "manifests/only": {"_manifests"},
        "layers/only": {"_layers"},
        "layersfile": {"_layers"},
    }
    # The clean pipeline's listing is unchanged: folders holding _manifests only.
    assert sorted(run(layout.store(), all_repositories)) == ["both", "manifests/only"]


def test_one_walk_of_manifests_reads_what_separate_listings_read(
    layout: Layout, tmp_path: object
) -> None:
    """On an object store a snapshot with history (or with a cache) is one walk of
    ``_manifests/``; the listings a store with folders makes (revisions, tag names, each
    tag's history, the revision folders' files) must find the same things in the same
    odd places."""
    from pathlib import Path

    from regcleaner.scancache import ScanCache

    assert isinstance(tmp_path, Path)
    repo = "team/app"
    d1, d2, base = two_revisions(layout, repo)
    layout.put_many([
        (tag_key(repo, "latest"), d2.encode()), (tag_key(repo, "v1"), d1.encode()),
        (history_key(repo, "latest", d1), d1.encode()),
        (history_key(repo, "latest", d2), d2.encode()),
        (history_key(repo, "gone", d1), d1.encode()),  # untagged: no current link
        (f"{base}/tags/v1/index/sha256/not-hex/link", b"x"),
        (f"{base}/tags/v1/index/sha256/{d2[7:]}/link/deeper", b"x"),
        (f"{base}/tags/v1/other/file", b"x"),
        (f"{base}/revisions/sha256/{d1[7:]}/signatures/sha256/{'2' * 64}/link", b"x"),
        (f"{base}/revisions/sha256/not-hex/link", b"x"),
        (f"{base}/revisions/sha512/{'3' * 128}/link", b"x"),
        (f"{base}/revisions/sha384/{'6' * 64}/link", b"x"),  # 64 hex, another algorithm
        (f"{base}/tags/gone/index/sha384/{'6' * 64}/link", b"x"),
        (f"{base}/revisions/sha256/{'4' * 64}/link/deeper", b"x"),
        (f"{base}/revisionsX/sha256/{'5' * 64}/link", b"x"),
        (f"{base}/other/key", b"x"),
    ])  # fmt: skip

    async def both(store: ByteStore) -> tuple[RepositorySnapshot, ...]:
        walked = await RegistryView(store).snapshot(repo, history=True)
        cached = ScanCache.open(tmp_path / f"cache-{layout.name}.sqlite", store.describe())
        walked_cached = await RegistryView(store, cached).snapshot(repo)
        # The same store read as one with folders: a listing per folder.
        store.has_directories = True
        listed = await RegistryView(store).snapshot(repo, history=True)
        listed_plain = await RegistryView(store).snapshot(repo)
        return walked, listed, walked_cached, listed_plain

    walked, listed, walked_cached, listed_plain = run(layout.store(), both)
    # A tag's files: every key below its folder on an object store (all of them must
    # go when it is removed: there is no folder to remove), the names a disk knows.
    assert dataclasses.replace(walked, tag_files=None) == dataclasses.replace(
        listed, tag_files=None
    )
    assert walked_cached == listed_plain
    if not layout.store().has_directories:
        below = f"{base}/tags/"
        expected: dict[str, list[str]] = {}
        for key in sorted(layout.keys()):
            if key.startswith(below):
                tag, _, rest = key[len(below) :].partition("/")
                expected.setdefault(tag, []).append(rest)
        assert walked.tag_files == {tag: tuple(names) for tag, names in expected.items()}
    assert set(walked.revisions) == {d1, d2}
    assert walked.tags == {"latest": d2, "v1": d1}
    assert walked.tag_history is not None
    assert set(walked.tag_history) == {d1, d2}
