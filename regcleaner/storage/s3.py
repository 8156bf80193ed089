"""S3 storage (AWS, MinIO, Ceph, R2, ...) through aiobotocore.

Listing is prefix-scoped: repositories are found by walking ``repositories/`` one
level at a time with ``Delimiter='/'``; per repository only ``_manifests/revisions/``
is listed (digests and mtimes come from key names and LastModified) and
``_manifests/tags/`` with a delimiter (tag names), then each tag's ``current/link`` and
each manifest blob is fetched with concurrent GETs under one bound. ``blobs/``,
``_layers/``, ``_uploads/`` and tag ``index/`` history are never listed.

Throttling (503 SlowDown) and transient 5xx are retried by botocore's standard retry
mode with backoff; what still fails is translated to StorageError with context.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from regcleaner import layout
from regcleaner.config import S3Options
from regcleaner.digest import Digest, digest_from_hex, is_sha256_hex
from regcleaner.errors import StorageError
from regcleaner.manifests import MAX_MANIFEST_BYTES
from regcleaner.planner import ManifestInfo, RepositorySnapshot, Unreadable
from regcleaner.storage.base import MAX_LINK_BYTES, decode_manifest, parse_link

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(slots=True)
class S3Stats:
    """Requests made, by kind, for the benchmark and the report."""

    list_requests: int = 0
    get_requests: int = 0


class S3Storage:
    """Storage in a bucket, under the registry's ``rootdirectory``."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        prefix = options.prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._gets = asyncio.Semaphore(options.max_connections)
        self.stats = S3Stats()

    def describe(self) -> str:
        where = f"s3://{self.options.bucket}/{self._prefix.rstrip('/')}"
        if self.options.endpoint_url:
            where += f" at {self.options.endpoint_url}"
        return where

    def _key(self, relative: str) -> str:
        return self._prefix + relative

    async def _ensure_client(self) -> Any:
        if self._client is None:
            try:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session
            except ImportError:  # pragma: no cover - depends on the install
                raise StorageError(
                    "S3 support needs aiobotocore: pip install 'regcleaner[s3]'"
                ) from None
            config = AioConfig(
                retries={"max_attempts": self.options.max_attempts, "mode": "standard"},
                max_pool_connections=self.options.max_connections,
                s3={"addressing_style": "path"} if self.options.endpoint_url else None,
                connect_timeout=10,
                read_timeout=60,
            )
            kwargs: dict[str, Any] = {"config": config}
            if self.options.region:
                kwargs["region_name"] = self.options.region
            if self.options.endpoint_url:
                kwargs["endpoint_url"] = self.options.endpoint_url
            if self.options.access_key and self.options.secret_key:
                kwargs["aws_access_key_id"] = self.options.access_key
                kwargs["aws_secret_access_key"] = self.options.secret_key
            session = get_session()
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", **kwargs)
            )
        return self._client

    def _translate(self, exc: Exception, action: str) -> StorageError:
        """botocore errors → StorageError with the bucket, key and a hint."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        bucket = self.options.bucket
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                "no S3 credentials: set --access-key/--secret-key (ACCESS_KEY/SECRET_KEY) "
                "or the standard AWS variables, profile or web identity"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            hints = {
                "NoSuchBucket": f"bucket {bucket!r} does not exist",
                "InvalidAccessKeyId": "the S3 access key is not known to the server",
                "SignatureDoesNotMatch": "the S3 secret key is wrong",
                "AccessDenied": f"access to bucket {bucket!r} is denied",
                "PermanentRedirect": f"bucket {bucket!r} is in another region (set --region)",
                "AuthorizationHeaderMalformed": "wrong region for this bucket (set --region)",
            }
            hint = hints.get(code) or (
                f"bucket {bucket!r} does not exist"
                if status == 404 and action == "check"
                else f"S3 answered {status} {code}".strip()
            )
            return StorageError(f"{action}: {hint}")
        if isinstance(exc, BotoCoreError):
            return StorageError(f"{action}: {exc}")
        return StorageError(f"{action}: {type(exc).__name__}: {exc}")

    async def check(self) -> None:
        client = await self._ensure_client()
        try:
            await client.head_bucket(Bucket=self.options.bucket)
            found = await client.list_objects_v2(
                Bucket=self.options.bucket, Prefix=self._key(layout.V2_ROOT + "/"), MaxKeys=1
            )
            self.stats.list_requests += 1
        except Exception as exc:
            if _is_botocore_error(exc):
                raise self._translate(exc, "check") from None
            raise
        if not found.get("KeyCount") and not found.get("Contents"):
            raise StorageError(
                f"no registry storage under {self.describe()}: expected "
                f"{self._prefix}{layout.V2_ROOT}/ (set --registry-dir to the registry's "
                "rootdirectory)"
            )

    async def _list(
        self, prefix: str, *, delimiter: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Pages of ListObjectsV2 under ``prefix``."""
        client = await self._ensure_client()
        paginator = client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            async for page in paginator.paginate(**kwargs):
                self.stats.list_requests += 1
                yield page
        except Exception as exc:
            if _is_botocore_error(exc):
                raise self._translate(exc, f"listing {prefix}") from None
            raise

    async def _list_directory(self, prefix: str) -> tuple[list[str], bool]:
        """Sub-folder names under ``prefix``, and whether one of them is ``_manifests``."""
        children: list[str] = []
        is_repository = False
        async for page in self._list(prefix, delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(prefix) :].rstrip("/")
                if name == layout.MANIFESTS_DIR:
                    is_repository = True
                elif name and not name.startswith("_"):
                    children.append(name)
        return children, is_repository

    async def list_repositories(self) -> AsyncIterator[str]:
        """Walk ``repositories/`` level by level with a pool of concurrent listers."""
        top = self._key(layout.REPOSITORIES + "/")
        folders: asyncio.Queue[str] = asyncio.Queue()
        found: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1024)
        errors: list[BaseException] = []
        folders.put_nowait("")

        async def lister() -> None:
            while True:
                relative = await folders.get()
                try:
                    if not errors:
                        children, is_repository = await self._list_directory(top + relative)
                        if is_repository and relative:
                            await found.put(relative.rstrip("/"))
                        for child in sorted(children):
                            folders.put_nowait(f"{relative}{child}/")
                except Exception as exc:
                    errors.append(exc)
                finally:
                    folders.task_done()

        async def walk() -> None:
            workers = [asyncio.create_task(lister()) for _ in range(self.options.listers)]
            try:
                await folders.join()
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                await found.put(None)

        walker = asyncio.create_task(walk())
        try:
            while (name := await found.get()) is not None:
                yield name
        finally:
            if not walker.done():
                walker.cancel()
            await asyncio.gather(walker, return_exceptions=True)
        if errors:
            raise errors[0]

    async def snapshot(self, repository: str) -> RepositorySnapshot:
        revisions: dict[Digest, float] = {}
        revisions_prefix = self._key(layout.revisions_dir(repository) + "/")
        async for page in self._list(revisions_prefix):
            for item in page.get("Contents", []):
                parts = item["Key"][len(revisions_prefix) :].split("/")
                if len(parts) == 2 and parts[1] == "link" and is_sha256_hex(parts[0]):
                    # Whole seconds: HEAD's Last-Modified has no finer resolution.
                    revisions[digest_from_hex(parts[0])] = float(
                        int(item["LastModified"].timestamp())
                    )

        tags_prefix = self._key(layout.tags_dir(repository) + "/")
        tag_names: list[str] = []
        async for page in self._list(tags_prefix, delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                tag = common["Prefix"][len(tags_prefix) :].rstrip("/")
                if tag:
                    tag_names.append(tag)
        links = await asyncio.gather(
            *(self._get(self._key(layout.tag_current_link(repository, t)), MAX_LINK_BYTES)
              for t in tag_names)
        )  # fmt: skip
        tags: dict[str, Digest] = {}
        broken: dict[str, str] = {}
        for tag, data in zip(tag_names, links, strict=True):
            if data is None:
                continue  # a tag folder without current/link is no tag
            try:
                tags[tag] = parse_link(data)
            except ValueError as exc:
                broken[tag] = f"unreadable current link: {exc}"
        return RepositorySnapshot(repository, revisions, tags, broken)

    async def _object_call(self, operation: str, key: str, action: str) -> Any | None:
        """One GetObject/HeadObject under the GET bound: None if the key is missing,
        StorageError with context for anything else botocore raises."""
        client = await self._ensure_client()
        self.stats.get_requests += 1
        try:
            return await getattr(client, operation)(Bucket=self.options.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return None
            if _is_botocore_error(exc):
                raise self._translate(exc, f"{action} {key}") from None
            raise

    async def _get(self, key: str, cap: int) -> bytes | None:
        """GET an object, None if missing; raise StorageError on other failures."""
        async with self._gets:
            response = await self._object_call("get_object", key, "reading")
            if response is None:
                return None
            # At most cap + 1 bytes, as the filesystem backend reads: the caller sees the
            # object is too large without it being downloaded whole.
            chunks: list[bytes] = []
            remaining = cap + 1
            async with response["Body"] as body:
                while remaining > 0:
                    chunk: bytes = await body.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
            return b"".join(chunks)

    async def read_manifests(self, digests: Collection[Digest]) -> dict[Digest, ManifestInfo]:
        async def one(digest: Digest) -> tuple[Digest, ManifestInfo]:
            try:
                data = await self._get(self._key(layout.blob_data(digest)), MAX_MANIFEST_BYTES)
            except StorageError as exc:
                return digest, Unreadable(f"cannot read manifest blob: {exc}")
            if data is None:
                return digest, Unreadable("manifest blob is missing")
            return digest, decode_manifest(digest, data)

        return dict(await asyncio.gather(*(one(d) for d in digests)))

    async def revision_mtime(self, repository: str, digest: Digest) -> float | None:
        key = self._key(layout.revision_link(repository, digest))
        async with self._gets:
            head = await self._object_call("head_object", key, "checking")
        return None if head is None else float(int(head["LastModified"].timestamp()))

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None


def _is_botocore_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    return str(exc.response.get("Error", {}).get("Code", "")) in MISSING_CODES
