"""Three backends for one contract: a real directory tree, a real S3 server (moto) and
the in-memory store of ``testkit.memory``. A new backend is one store module plus one
``Layout`` here."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from regcleaner.config import S3Options
from regcleaner.digest import Digest
from regcleaner.storage.base import ByteStore
from regcleaner.storage.filesystem import FilesystemStore
from regcleaner.storage.s3 import S3Store
from testkit.memory import MemoryStore
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

V2 = "docker/registry/v2"
T = TypeVar("T")


class Layout(Protocol):
    """Writes files into one backend and opens a byte store over them."""

    name: str

    def put(self, relative: str, data: bytes) -> None: ...
    def put_many(self, items: list[tuple[str, bytes]]) -> None: ...
    def keys(self) -> set[str]: ...
    def store(self) -> ByteStore: ...


class DiskLayout:
    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        for relative, data in items:
            self.put(relative, data)

    def keys(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}

    def store(self) -> ByteStore:
        return FilesystemStore(self.root)


class S3Layout:
    name = "s3"

    def __init__(
        self, server: MotoS3, bucket: str, prefix: str, *, fast_reads: bool = True
    ) -> None:
        self.fast_reads = fast_reads
        """False: every request through botocore (``--s3-botocore-reads``), the path
        the fast reads fall back to."""
        self.server = server
        self.bucket = bucket
        self.prefix = prefix
        self.client = server.client()
        self.client.create_bucket(Bucket=bucket)

    def put(self, relative: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{relative}", Body=data)

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: self.put(*item), items))

    def keys(self) -> set[str]:
        found: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
            found |= {item["Key"][len(self.prefix) + 1 :] for item in page.get("Contents", [])}
        return found

    def store(self) -> ByteStore:
        return S3Store(self.options())

    def options(self, **overrides: Any) -> S3Options:
        values: dict[str, Any] = {
            "bucket": self.bucket, "prefix": "/" + self.prefix, "region": REGION,
            "endpoint_url": self.server.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
            "fast_reads": self.fast_reads,
        }  # fmt: skip
        values.update(overrides)
        return S3Options(**values)


class MemoryLayout:
    name = "memory"

    def __init__(self) -> None:
        self.backing = MemoryStore(name="contract")

    def put(self, relative: str, data: bytes) -> None:
        self.backing.put(relative, data)

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        self.backing.put_many(items)

    def keys(self) -> set[str]:
        return self.backing.stored_keys()

    def store(self) -> ByteStore:
        return self.backing.reopen()


_buckets = itertools.count()


@pytest.fixture(params=["filesystem", "s3", "s3-botocore", "memory"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    """Each backend; S3 twice: with its own reads (``storage/s3fast.py``) and with every
    request through botocore."""
    if request.param == "filesystem":
        return DiskLayout(tmp_path / "root")
    if request.param == "memory":
        return MemoryLayout()
    server: MotoS3 = request.getfixturevalue("moto_server")
    return S3Layout(server, f"contract-{next(_buckets)}", "some/prefix",
                    fast_reads=request.param == "s3")  # fmt: skip


def new_bucket_layout(server: MotoS3) -> S3Layout:
    return S3Layout(server, f"contract-{next(_buckets)}", "p")


def manifest(seed: str, **extra: Any) -> tuple[bytes, Digest]:
    document = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": "sha256:" + "0" * 64, "size": 1},
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


def history_key(repo: str, tag: str, digest: str) -> str:
    return f"{V2}/repositories/{repo}/_manifests/tags/{tag}/index/sha256/{digest[7:]}/link"


def run(store: ByteStore, action: Callable[[ByteStore], Coroutine[Any, Any, T]]) -> T:
    """Run ``action`` on ``store`` in a fresh event loop, closing the store after."""

    async def go() -> T:
        try:
            return await action(store)
        finally:
            await store.aclose()

    return asyncio.run(go())
