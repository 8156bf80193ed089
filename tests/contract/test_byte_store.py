"""The byte-store contract: what any backend must do, run against a real directory tree
and a real S3 server (moto). A new backend passes this file and ``test_view.py``."""

from __future__ import annotations

import pytest

from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.storage.base import ByteStore, FileInfo, Leaf, RollingUpStore
from regcleaner.storage.s3 import S3Store
from testkit.s3 import MotoS3
from tests.contract.conftest import Layout, new_bucket_layout, run


async def children(store: ByteStore, prefix: str) -> dict[str, str]:
    return {e.name: e.kind async for page in store.list_children(prefix) for e in page}


async def leaves(store: ByteStore, prefix: str, leaf: str) -> dict[str, Leaf]:
    return {x.name: x async for page in store.list_leaves(prefix, leaf) for x in page}


async def walked(store: ByteStore, prefix: str) -> dict[str, FileInfo]:
    return {f.key: f async for page in store.walk(prefix) for f in page}


def test_list_children_gives_files_and_folders_one_level_down(layout: Layout) -> None:
    layout.put_many([("a/x", b"1"), ("a/sub/y", b"2"), ("a/sub/deeper/z", b"3"), ("b/w", b"4")])
    found = run(layout.store(), lambda s: children(s, "a"))
    assert found == {"x": "file", "sub": "dir"}
    assert run(layout.store(), lambda s: children(s, "missing")) == {}
    top = run(layout.store(), lambda s: children(s, ""))
    assert top == {"a": "dir", "b": "dir"}


def test_list_leaves_finds_only_the_named_leaf_of_each_child(layout: Layout) -> None:
    layout.put_many([
        ("r/one/link", b"12345"), ("r/two/link", b"1"), ("r/two/other/link", b"x"),
        ("r/three/nolink", b"x"), ("r/four/sub/link", b"x"),
    ])  # fmt: skip
    found = run(layout.store(), lambda s: leaves(s, "r", "link"))
    assert set(found) == {"one", "two"}
    assert found["one"].size == 5
    assert found["one"].regular
    deep = run(layout.store(), lambda s: leaves(s, "r", "sub/link"))
    assert set(deep) == {"four"}


def test_walk_gives_every_file_below_with_relative_keys(layout: Layout) -> None:
    layout.put_many([("w/a", b"1"), ("w/b/c", b"22"), ("w/b/d/e", b"333"), ("x/no", b"")])
    found = run(layout.store(), lambda s: walked(s, "w"))
    assert {k: f.size for k, f in found.items()} == {"a": 1, "b/c": 2, "b/d/e": 3}
    assert run(layout.store(), lambda s: walked(s, "nothing")) == {}


async def rolled_up(
    store: ByteStore, prefix: str, delimiter: str, *, start_after: str = ""
) -> list[tuple[str, bool]]:
    """Entries in the order the pages give them (True: rolled up), each page in key
    order; the pages' order checked too."""
    assert isinstance(store, RollingUpStore)
    found: list[tuple[str, bool]] = []
    async for files, rolled in store.walk_rolling_up(prefix, delimiter, start_after=start_after):
        page = sorted([(f.key, False) for f in files] + [(r, True) for r in rolled])
        assert not found or found[-1][0] < page[0][0]
        found += page
    return found


def test_a_walk_rolling_up_at_a_delimiter_gives_the_rest_as_a_walk_does(layout: Layout) -> None:
    store = layout.store()
    if not isinstance(store, RollingUpStore):
        assert store.has_directories  # a disk lists folder by folder instead
        return
    layout.put_many([
        ("r/a/_layers/sha256/1/link", b"1"), ("r/a/_layers/sha256/2/link", b"1"),
        ("r/a/_manifests/tags/t/current/link", b"22"), ("r/a/_uploads/u/data", b"333"),
        ("r/a/b/_layers/x", b"1"), ("r/a/b/_manifests/revisions/x/link", b"1"),
        ("r/a/_layers/", b"odd"), ("r/a-b/_layers_not/k", b"1"), ("r/z", b"1"),
        ("other/_layers/x", b"1"),
    ])  # fmt: skip
    found = run(store, lambda s: rolled_up(s, "r", "/_layers/"))
    assert found == [
        ("a-b/_layers_not/k", False),
        ("a/_layers/", True),
        ("a/_manifests/tags/t/current/link", False),
        ("a/_uploads/u/data", False),
        ("a/b/_layers/", True),
        ("a/b/_manifests/revisions/x/link", False),
        ("z", False),
    ]
    after = run(store, lambda s: rolled_up(s, "r", "/_layers/", start_after="a/"))
    assert after == found[1:]  # "a-b/..." sorts before "a/"
    assert run(store, lambda s: rolled_up(s, "r", "/_layers/", start_after="a/b/")) == found[4:]
    files = run(store, lambda s: _rolled_files(s, "r/a/_manifests", "/_layers/"))
    assert files == {"tags/t/current/link": 2}
    assert run(store, lambda s: rolled_up(s, "nothing", "/_layers/")) == []


async def _rolled_files(store: ByteStore, prefix: str, delimiter: str) -> dict[str, int]:
    assert isinstance(store, RollingUpStore)
    return {
        f.key: f.size async for files, _ in store.walk_rolling_up(prefix, delimiter) for f in files
    }


def test_a_walk_rolling_up_pages_count_rolled_entries_as_keys(layout: Layout) -> None:
    """S3 counts a rolled-up prefix as one of a page's 1,000 entries: 1,000 folders
    each rolled up, and 20 files, are two pages."""
    items = [(f"p/{i:04d}/_layers/x/link", b"x") for i in range(1000)]
    items += [(f"p/{i:04d}/_manifests/link", b"x") for i in range(20)]
    layout.put_many(items)
    store = layout.store()
    if not isinstance(store, RollingUpStore):
        return
    found = run(store, lambda s: rolled_up(s, "p", "/_layers/"))
    assert len(found) == 1020
    assert sum(rolled for _, rolled in found) == 1000
    assert store.stats.list == 2


def test_listings_page_past_1000_keys_and_deletions_batch_by_1000(layout: Layout) -> None:
    keys = [f"big/{i:05d}/link" for i in range(1005)]
    layout.put_many([(key, b"x") for key in keys])
    assert len(run(layout.store(), lambda s: leaves(s, "big", "link"))) == 1005
    assert len(run(layout.store(), lambda s: walked(s, "big"))) == 1005
    assert len(run(layout.store(), lambda s: children(s, "big"))) == 1005
    store = layout.store()
    results = run(store, lambda s: s.delete_many(keys[:1003]))
    assert results == [None] * 1003
    assert layout.keys() == set(keys[1003:])
    assert store.stats.keys_deleted == 1003
    if isinstance(store, S3Store):
        assert store.stats.delete == 2  # 1,000 keys a DeleteObjects


@pytest.mark.parametrize("size", [0, 10, 11, 5000])
def test_read_returns_at_most_cap_plus_one_bytes_and_the_mtime(layout: Layout, size: int) -> None:
    data = bytes(range(256)) * 20
    layout.put("k/blob", data[:size])

    async def read(store: ByteStore) -> tuple[bytes, float] | None:
        blob = await store.read("k/blob", 10)
        return None if blob is None else (blob.data, blob.mtime)

    got = run(layout.store(), read)
    assert got is not None
    assert got[0] == data[: min(size, 11)]
    assert got[1] > 1_700_000_000
    assert run(layout.store(), lambda s: s.read("k/none", 10)) is None


def test_read_many_answers_per_key_in_order(layout: Layout) -> None:
    layout.put_many([("m/a", b"aa"), ("m/c", b"cc")])
    found = run(layout.store(), lambda s: s.read_many(["m/a", "m/b", "m/c"], 100))
    assert [None if x is None else getattr(x, "data", x) for x in found] == [b"aa", None, b"cc"]


def test_stat_gives_mtime_and_size_or_none(layout: Layout) -> None:
    layout.put("s/file", b"12345")
    info = run(layout.store(), lambda s: s.stat("s/file"))
    assert info is not None
    assert info.size == 5
    assert run(layout.store(), lambda s: s.stat("s/none")) is None


def test_delete_many_deletes_exactly_the_keys_and_reports_each(layout: Layout) -> None:
    layout.put_many([(f"d/{i}/link", b"x") for i in range(5)] + [("d/keep", b"x")])
    keys = ["d/0/link", "d/1/link", "d/never/link"]
    results = run(layout.store(), lambda s: s.delete_many(keys, directories=["d/0", "d/1"]))
    assert results == [None, None, None]  # a key already missing counts as gone
    assert layout.keys() == {"d/2/link", "d/3/link", "d/4/link", "d/keep"}
    listed = run(layout.store(), lambda s: children(s, "d"))
    assert set(listed) == {"2", "3", "4", "keep"}  # no empty folders left behind


def test_check_fails_for_a_root_that_does_not_exist(tmp_path: object) -> None:
    from pathlib import Path

    from regcleaner.storage.filesystem import FilesystemStore

    assert isinstance(tmp_path, Path)
    with pytest.raises(StorageSetupError, match="is not a directory"):
        run(FilesystemStore(tmp_path / "nope"), lambda s: s.check())


def test_s3_missing_bucket_is_a_one_line_setup_error(moto_server: MotoS3) -> None:
    layout = new_bucket_layout(moto_server)
    store = S3Store(layout.options(bucket="no-such-bucket"))
    with pytest.raises(StorageSetupError, match="bucket 'no-such-bucket' does not exist") as caught:
        run(store, lambda s: s.check())
    assert "\n" not in str(caught.value)


def test_s3_listing_a_missing_bucket_fails_with_context(moto_server: MotoS3) -> None:
    layout = new_bucket_layout(moto_server)
    store = S3Store(layout.options(bucket="no-such-bucket"))
    with pytest.raises(StorageError, match="listing"):
        run(store, lambda s: children(s, "x"))


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("InvalidAccessKeyId", 403, "access key is not known"),
        ("SignatureDoesNotMatch", 403, "secret key is wrong"),
        ("AccessDenied", 403, "is denied"),
        ("PermanentRedirect", 301, "another region"),
        ("SlowDown", 503, "S3 answered 503 SlowDown"),
    ],
)
def test_s3_errors_translate_to_one_line_without_secrets(
    code: str, status: int, message: str
) -> None:
    # moto accepts any credentials, so the server's answers are scripted here.
    from botocore.exceptions import ClientError

    from regcleaner.config import S3Options
    from testkit.s3 import SECRET_KEY

    store = S3Store(S3Options(bucket="b", access_key="AKIA", secret_key=SECRET_KEY))
    error = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "HeadBucket",
    )
    translated = store._translate(error, "check")
    assert isinstance(translated, StorageSetupError)
    assert message in str(translated)
    assert "\n" not in str(translated)
    assert SECRET_KEY not in str(translated) + repr(store.options)


def test_disk_symbolic_links_are_reported_and_never_followed(tmp_path: object) -> None:
    from pathlib import Path

    from regcleaner.storage.filesystem import FilesystemStore
    from tests.contract.conftest import DiskLayout

    assert isinstance(tmp_path, Path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "link").write_text("secret")
    layout = DiskLayout(tmp_path / "root")
    layout.put("r/real/link", b"x")
    (tmp_path / "root/r/linked").symlink_to(outside)
    (tmp_path / "root/r/real2").mkdir()
    (tmp_path / "root/r/real2/link").symlink_to(outside / "link")
    store = FilesystemStore(tmp_path / "root")
    assert run(store, lambda s: children(s, "r")) == {"real": "dir", "linked": "other",
                                                      "real2": "dir"}  # fmt: skip
    found = run(FilesystemStore(tmp_path / "root"), lambda s: leaves(s, "r", "link"))
    assert found["real"].regular
    assert not found["linked"].regular
    assert not found["real2"].regular
    with pytest.raises(StorageError):
        run(FilesystemStore(tmp_path / "root"), lambda s: s.read("r/real2/link", 100))


def test_a_store_says_its_page_size_and_useful_requests_in_flight(layout: Layout) -> None:
    from regcleaner.storage.base import page_size, requests_in_flight

    store = layout.store()
    assert page_size(store) == 1000  # S3's, the in-memory store's, and the default
    assert requests_in_flight(store) == (1 if store.has_directories else 8)
    run(store, lambda s: s.check())


def test_listings_and_heads_carry_an_etag_where_the_store_has_one(layout: Layout) -> None:
    layout.put_many([("e/one/link", b"1"), ("e/two/link", b"22")])

    async def look(store: ByteStore) -> list[str | None]:
        walked_tags = [f.etag async for page in store.walk("e") for f in page]
        leaf_tags = [x.etag async for page in store.list_leaves("e", "link") for x in page]
        head = await store.stat("e/one/link")
        blob = await store.read("e/one/link", 10)
        assert head is not None
        assert blob is not None
        return [*walked_tags, *leaf_tags, head.etag, blob.etag]

    tags = run(layout.store(), look)
    if layout.name == "filesystem":
        assert tags == [None] * 6  # a disk's validator is mtime and size
    else:
        assert all(tags)
        assert tags[0] == tags[2] == tags[4] == tags[5]  # one object, one ETag
        assert tags[0] != tags[1]


def test_s3_slow_down_is_retried_with_backoff_until_it_passes(moto_server: MotoS3) -> None:
    """S3 answers 503 SlowDown to every other GET, HEAD and LIST: each request is
    retried (botocore's adaptive mode: backoff, and a send rate that drops) and every
    read, stat and listing still comes back whole."""
    from testkit.faults import FaultProxy, FaultScript

    layout = new_bucket_layout(moto_server)
    keys = [f"t/{i:02d}/link" for i in range(4)]
    layout.put_many([(key, key.encode()) for key in keys])
    proxy = FaultProxy(moto_server.url)
    proxy.script = FaultScript(
        lambda n, path: 503 if n % 2 else None,
        methods=frozenset({"GET", "HEAD"}),
        body='<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        "<Message>Please reduce your request rate.</Message></Error>",
        content_type="application/xml",
    )
    proxy.start()
    try:
        store = S3Store(layout.options(endpoint_url=proxy.url))
        slowed_down: list[bool] = []

        async def everything(s: ByteStore) -> tuple[list[object], list[object], int]:
            read = await s.read_many(keys, 100)
            stated = await s.stat_many(keys)
            listed = len(await walked(s, "t"))
            fast = getattr(s, "_fast", None)
            slowed_down.append(fast is not None and not fast.enabled)
            return list(read), list(stated), listed

        read, stated, listed = run(store, everything)
    finally:
        proxy.stop()
    assert [getattr(blob, "data", blob) for blob in read] == [key.encode() for key in keys]
    assert all(info is not None for info in stated)
    assert listed == len(keys)
    assert sum(1 for hit in proxy.seen if hit.answered == 503) >= len(keys)
    assert store.stats.get == len(keys)  # retries inside one request are not counted again
    # The first 503 turned regcleaner's own reads off: botocore's adaptive rate paces the
    # rest (built: the fast path answered the first requests).
    assert slowed_down == [True]
