"""One contract, two backends: a real directory tree and a real S3 server (moto)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from regcleaner.config import S3Options
from regcleaner.digest import Digest
from regcleaner.errors import StorageError
from regcleaner.manifests import ManifestKind, ManifestRefs
from regcleaner.planner import RepositorySnapshot, Unreadable
from regcleaner.storage.base import Storage
from regcleaner.storage.filesystem import FilesystemStorage
from regcleaner.storage.s3 import S3Storage
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

V2 = "docker/registry/v2"


class Layout(Protocol):
    """Writes registry files into one backend and opens a Storage over them."""

    def put(self, relative: str, data: bytes) -> None: ...
    def put_many(self, items: list[tuple[str, bytes]]) -> None: ...
    def storage(self) -> Storage: ...


class DiskLayout:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        for relative, data in items:
            self.put(relative, data)

    def storage(self) -> Storage:
        return FilesystemStorage(self.root)


class S3Layout:
    def __init__(self, server: MotoS3, bucket: str, prefix: str) -> None:
        self.server = server
        self.bucket = bucket
        self.prefix = prefix
        self.client = server.client()
        self.client.create_bucket(Bucket=bucket)

    def put(self, relative: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{relative}", Body=data)

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: self.put(*item), items))

    def storage(self) -> Storage:
        return S3Storage(self.options())

    def options(self, **overrides: Any) -> S3Options:
        values: dict[str, Any] = {
            "bucket": self.bucket, "prefix": "/" + self.prefix, "region": REGION,
            "endpoint_url": self.server.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
        }  # fmt: skip
        values.update(overrides)
        return S3Options(**values)


_buckets = iter(range(1_000_000))


@pytest.fixture(params=["filesystem", "s3"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    if request.param == "filesystem":
        return DiskLayout(tmp_path / "root")
    server: MotoS3 = request.getfixturevalue("moto_server")
    return S3Layout(server, f"contract-{next(_buckets)}", "some/prefix")


def manifest(seed: str, **extra: Any) -> tuple[bytes, Digest]:
    document = {"schemaVersion": 2, "config": {"digest": "sha256:" + "0" * 64, "size": 1},
                "layers": [], "seed": seed, **extra}  # fmt: skip
    data = json.dumps(document).encode()
    return data, Digest("sha256:" + hashlib.sha256(data).hexdigest())


def blob_key(digest: str) -> str:
    h = digest[7:]
    return f"{V2}/blobs/sha256/{h[:2]}/{h}/data"


def revision_key(repo: str, digest: str) -> str:
    return f"{V2}/repositories/{repo}/_manifests/revisions/sha256/{digest[7:]}/link"


def tag_key(repo: str, tag: str) -> str:
    return f"{V2}/repositories/{repo}/_manifests/tags/{tag}/current/link"


def run(storage: Storage, action: Callable[[Storage], Any]) -> Any:
    async def go() -> Any:
        try:
            return await action(storage)
        finally:
            await storage.aclose()

    return asyncio.run(go())


async def all_repositories(storage: Storage) -> list[str]:
    await storage.check()
    return [name async for name in storage.list_repositories()]


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
    names = run(layout.storage(), all_repositories)
    assert sorted(names) == ["a", "a/b", "a/b/c", "org/team/app", "solo"]
    assert len(names) == len(set(names))


def test_snapshot_reads_revisions_and_current_tags_only(layout: Layout) -> None:
    one, d1 = manifest("1")
    two, d2 = manifest("2")
    repo = "team/app"
    base = f"{V2}/repositories/{repo}/_manifests"
    layout.put_many([
        (blob_key(d1), one), (blob_key(d2), two),
        (revision_key(repo, d1), d1.encode()), (revision_key(repo, d2), d2.encode()),
        (tag_key(repo, "latest"), d2.encode()),
        (f"{base}/tags/latest/index/sha256/{d1[7:]}/link", d1.encode()),  # history
        (f"{base}/tags/old/index/sha256/{d1[7:]}/link", d1.encode()),  # untagged: no current
        (tag_key(repo, "broken"), b"garbage"),
        (f"{base}/revisions/sha256/{d1[7:]}/signatures/sha256/{'2' * 64}/link", b"x"),
        (f"{base}/revisions/sha256/not-hex/link", b"x"),
    ])  # fmt: skip
    before = time.time()
    snapshot = run(layout.storage(), lambda s: s.snapshot(repo))
    assert set(snapshot.revisions) == {d1, d2}
    assert snapshot.tags == {"latest": d2}
    assert set(snapshot.broken_tags) == {"broken"}
    assert all(abs(mtime - before) < 120 for mtime in snapshot.revisions.values())


def test_snapshot_of_a_missing_repository_is_empty(layout: Layout) -> None:
    layout.put(f"{V2}/repositories/x/_manifests/tags/t/current/link", b"x")
    snapshot = run(layout.storage(), lambda s: s.snapshot("nope"))
    assert snapshot.revisions == {}
    assert snapshot.tags == {}


def test_revision_mtime_matches_the_snapshot_and_is_none_when_gone(layout: Layout) -> None:
    one, d1 = manifest("1")
    _, d_never = manifest("never pushed")
    repo = "team/app"
    layout.put_many([(blob_key(d1), one), (revision_key(repo, d1), d1.encode())])

    async def look(storage: Storage) -> tuple[RepositorySnapshot, float | None, float | None]:
        snapshot = await storage.snapshot(repo)
        return (
            snapshot,
            await storage.revision_mtime(repo, d1),
            await storage.revision_mtime(repo, d_never),
        )

    snapshot, mtime, missing = run(layout.storage(), look)
    assert mtime == snapshot.revisions[d1]
    assert missing is None


def test_read_manifests_parses_and_reports_problems(layout: Layout) -> None:
    good, d_good = manifest("good", subject={"digest": "sha256:" + "9" * 64, "size": 1})
    bad, d_bad = manifest("bad")
    _, d_missing = manifest("missing")
    layout.put_many([(blob_key(d_good), good), (blob_key(d_bad), b"{tampered")])
    found = run(layout.storage(), lambda s: s.read_manifests([d_good, d_bad, d_missing]))
    assert isinstance(found[d_good], ManifestRefs)
    assert found[d_good].kind is ManifestKind.IMAGE
    assert found[d_good].subject == "sha256:" + "9" * 64
    assert found[d_bad] == Unreadable("blob content does not match its digest")
    assert found[d_missing] == Unreadable("manifest blob is missing")
    del bad


def test_pagination_past_1000_keys(layout: Layout) -> None:
    repo = "big"
    items: list[tuple[str, bytes]] = []
    digests = []
    for i in range(1100):
        digest = "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()
        digests.append(digest)
        items.append((revision_key(repo, digest), digest.encode()))
    for i in range(1005):
        items.append((tag_key(repo, f"t{i}"), digests[i].encode()))
    layout.put_many(items)
    snapshot = run(layout.storage(), lambda s: s.snapshot(repo))
    assert len(snapshot.revisions) == 1100
    assert len(snapshot.tags) == 1005


def test_check_refuses_a_root_without_registry_layout(layout: Layout) -> None:
    layout.put("something/else", b"x")
    with pytest.raises(StorageError, match="docker/registry/v2"):
        run(layout.storage(), lambda s: s.check())


def test_s3_missing_bucket_is_a_one_line_error(moto_server: MotoS3) -> None:
    layout = S3Layout(moto_server, f"cfg-{next(_buckets)}", "p")
    storage = S3Storage(layout.options(bucket="no-such-bucket"))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist") as caught:
        run(storage, lambda s: s.check())
    assert "\n" not in str(caught.value)


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

    storage = S3Storage(S3Options(bucket="b", access_key="AKIA", secret_key=SECRET_KEY))
    error = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "HeadBucket",
    )
    translated = storage._translate(error, "check")
    assert message in str(translated)
    assert "\n" not in str(translated)
    assert SECRET_KEY not in str(translated) + repr(storage.options)


def test_oversized_manifest_blob_is_unreadable_not_downloaded_whole(layout: Layout) -> None:
    data = b" " * (4 * 1024 * 1024 + 10)
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    layout.put(blob_key(digest), data)
    found = run(layout.storage(), lambda s: s.read_manifests([digest]))
    assert found[digest] == Unreadable("blob larger than 4194304 bytes")
