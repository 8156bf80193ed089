"""A byte store in an S3 bucket (AWS, MinIO, Ceph, R2, ...) through aiobotocore, and
for GET, HEAD and listings through regcleaner's own signed requests (``s3fast``),
which hand botocore every answer they do not serve.

Keys are relative to the bucket's prefix (the registry's ``rootdirectory``). Listings
page through ListObjectsV2 (1,000 keys a page), with ``Delimiter='/'`` for ``list`` and
without for ``list_leaves`` and ``walk``. Reads are GETs under one concurrency bound;
deletions are DeleteObjects requests of up to 1,000 keys, several in flight, whose
per-key errors (a 200 answer can carry them) are retried when retryable and otherwise
returned per key, never counted as done.

Throttling (503 SlowDown) and transient 5xx answers to whole requests are retried by
botocore's adaptive retry mode: backoff per request, and a client-side rate that drops
when S3 answers SlowDown and climbs again after (CUBIC, as the AWS SDKs do), so a run
that meets a prefix's request-rate limit slows to what the prefix takes instead of
retrying at full speed (the first 503 turns ``s3fast`` off, so that every request is
paced). What still fails becomes StorageError with the key and a hint. A listing that
says it goes on without a new continuation token is refused: stopping there would
hide keys.

Requests are counted by kind in ``stats`` (LIST pages, GET, HEAD, DeleteObjects), one
per logical request (botocore's retries inside one are not counted). ``page_size``
and ``requests_in_flight`` say what callers outside the store need to know to shape
their work: a listing page holds 1,000 keys, and several DeleteObjects are worth
having in flight.

Every listing, GET and HEAD carries the object's ETag (``FileInfo.etag``), the
validator the scan cache keys on. Modification times are whole seconds everywhere
(HEAD and GET carry no finer ones), so that a listing and a HEAD of the same object
agree.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from regcleaner import retry
from regcleaner.concurrency import StopScope
from regcleaner.config import S3Options
from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.storage.base import Blob, Entry, FileInfo, Leaf, RequestStats
from regcleaner.storage.s3fast import FastReads, NotServed
from regcleaner.storage.s3listing import install_listing_check, listing_parser_factory

MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Per-key DeleteObjects errors worth another try (the rest are reported per key).
RETRYABLE_DELETE_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
)
MAX_KEYS_PER_DELETE = 1000


def _seconds(value: Any) -> float:
    return float(int(value.timestamp()))


def _timestamp(value: str) -> datetime:
    """botocore's timestamp parser, fast for the two forms S3 sends: ISO 8601 in
    listings (``2026-12-07T05:03:57.000Z``) and RFC 7231 in headers (``Mon, 07 Dec
    2026 05:03:57 GMT``). botocore's own (dateutil) costs about 0.6 ms a timestamp,
    three quarters of the client CPU of a listing page of 1,000 keys; anything else
    goes to it."""
    try:
        if value[:4].isdigit():
            found = datetime.fromisoformat(value)
        else:
            found = email.utils.parsedate_to_datetime(value)
        if found.tzinfo is not None:
            return found
    except (ValueError, TypeError, IndexError):
        pass
    from botocore.utils import parse_timestamp

    parsed: datetime = parse_timestamp(value)
    return parsed


class S3Store:
    """A byte store under ``options.prefix`` in ``options.bucket``."""

    has_directories = False
    listing_concurrency = 16
    page_size = 1000
    """Keys a ListObjectsV2 page holds (S3's maximum, and its default)."""
    requests_in_flight = 8

    def __init__(self, options: S3Options) -> None:
        self.options = options
        prefix = options.prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._fast: FastReads | None = None
        """GET, HEAD and LIST signed and sent here (``s3fast``); botocore makes what
        it does not serve, and every other request."""
        self.handed_to_botocore = 0
        """GET, HEAD and LIST requests the fast path declined and botocore made."""
        self._client_lock = asyncio.Lock()
        self._gets = asyncio.Semaphore(options.max_connections)
        self._deletes = asyncio.Semaphore(options.delete_requests_in_flight)
        self.stats = RequestStats()
        self.listing_concurrency = options.listers
        self.requests_in_flight = max(1, options.delete_requests_in_flight)
        self.stop: StopScope | None = None
        """The run's stop scope, set by the runner: a stop ends the per-key retries'
        backoff, and no retry request starts after it."""
        self._key_backoff = retry.Backoff(base_s=0.2, cap_s=20.0)

    def describe(self) -> str:
        where = f"s3://{self.options.bucket}/{self._prefix.rstrip('/')}"
        if self.options.endpoint_url:
            where += f" at {self.options.endpoint_url}"
        return where

    def _key(self, relative: str) -> str:
        return self._prefix + relative

    def _dir(self, relative: str) -> str:
        return self._prefix + relative + "/" if relative else self._prefix

    async def _ensure_client(self) -> Any:
        if self._client is None:
            async with self._client_lock:  # one client (and one fast path) a store
                if self._client is None:
                    await self._make_client()
        return self._client

    async def _make_client(self) -> None:
        if self._client is None:
            try:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session
            except ImportError:  # pragma: no cover - depends on the install
                raise StorageSetupError(
                    "S3 support needs aiobotocore: pip install 'regcleaner[s3]'"
                ) from None
            config = AioConfig(
                retries={"max_attempts": self.options.max_attempts, "mode": "adaptive"},
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
            # The bundle botocore would verify with (AWS_CA_BUNDLE or the profile's
            # ca_bundle), before a client is built: botocore would retry a missing one
            # as if S3 did not answer.
            ca_file = session.get_config_variable("ca_bundle")
            problem = _unreadable(str(ca_file)) if ca_file else None
            if problem is not None:
                raise StorageSetupError(
                    f"the CA bundle {ca_file} cannot be read ({problem}): check "
                    "AWS_CA_BUNDLE or the profile's ca_bundle"
                )
            session.register_component(
                "response_parser_factory", listing_parser_factory(_timestamp)
            )
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", **kwargs)
            )
            install_listing_check(self._client.meta.events)
            if self.options.fast_reads:
                self._fast = await FastReads.build(
                    self._client, self.options.bucket, timestamp=_timestamp,
                    max_connections=self.options.max_connections,
                )  # fmt: skip

    def _translate(self, exc: Exception, action: str) -> StorageError:
        """botocore errors → StorageError with the bucket, key and a hint."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            InvalidEndpointConfigurationError,
            InvalidRegionError,
            NoCredentialsError,
            ParamValidationError,
        )

        bucket = self.options.bucket
        if isinstance(exc, NoCredentialsError):
            return StorageSetupError(
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
            # HeadBucket's answers have no body: the status alone says what went wrong.
            by_status = {
                404: f"bucket {bucket!r} does not exist",
                403: f"S3 refused access to bucket {bucket!r} (403): a wrong access key "
                "or secret key, or no s3:ListBucket permission on it",
                301: f"bucket {bucket!r} is in another region (set --region)",
                400: "S3 refused the request (400): often the wrong region (set --region)",
            }
            hint = hints.get(code) or (
                by_status.get(status, "") if action == "check" and code == str(status) else ""
            ) or f"S3 answered {status} {code}".strip()  # fmt: skip
            if action == "check":
                return StorageSetupError(f"{action}: {hint}")
            return StorageError(f"{action}: {hint}")
        if isinstance(exc, ParamValidationError) and action == "check":
            return StorageSetupError(f"bucket name {bucket!r} is not one S3 accepts")
        if isinstance(exc, InvalidRegionError | InvalidEndpointConfigurationError):
            return StorageSetupError(f"{action}: {exc}")  # settings botocore cannot use
        if isinstance(exc, BotoCoreError):
            return StorageError(f"{action}: {exc}")
        return StorageError(f"{action}: {type(exc).__name__}: {exc}")

    async def check(self) -> None:
        try:
            client = await self._ensure_client()
            await client.head_bucket(Bucket=self.options.bucket)
        except Exception as exc:
            if _is_botocore_error(exc):
                raise self._translate(exc, "check") from None
            raise
        self.stats.head += 1

    async def _pages(
        self, prefix: str, *, delimiter: str | None = None, start_after: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Pages of ListObjectsV2 under ``prefix`` (a full key prefix), from the first
        key after ``start_after`` (a full key) if given."""
        client = await self._ensure_client()
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        token: str | None = None
        seen: set[str] = set()
        try:
            while True:
                page: dict[str, Any] | None = None
                if self._fast is not None:
                    try:
                        page = await self._fast.page(prefix, delimiter, token, start_after)
                    except NotServed:
                        page = None
                        self.handed_to_botocore += 1
                if page is None:
                    call = kwargs if token is None else {**kwargs, "ContinuationToken": token}
                    page = await client.list_objects_v2(**call)
                self.stats.list += 1
                yield page
                token = page.get("NextContinuationToken")
                if token and "IsTruncated" not in page:  # botocore would take it as the end
                    raise StorageError(
                        f"listing {prefix}: S3 gave a continuation token without saying "
                        "whether the listing goes on (no IsTruncated)"
                    )
                if not page.get("IsTruncated"):
                    return
                if not token or token in seen:
                    # A listing cut short would hide keys (tags among them): refuse.
                    raise StorageError(
                        f"listing {prefix}: S3 said the listing goes on but gave no new "
                        "continuation token"
                    )
                seen.add(token)
        except Exception as exc:
            if _is_botocore_error(exc):
                raise self._translate(exc, f"listing {prefix}") from None
            raise

    async def list_children(self, prefix: str) -> AsyncGenerator[list[Entry], None]:
        base = self._dir(prefix)
        async for page in self._pages(base, delimiter="/"):
            entries = [
                Entry(common["Prefix"][len(base) :].rstrip("/"), "dir")
                for common in page.get("CommonPrefixes", [])
            ]
            entries += [
                Entry(item["Key"][len(base) :], "file", _seconds(item["LastModified"]),
                      int(item.get("Size", 0)))
                for item in page.get("Contents", [])
            ]  # fmt: skip
            entries = [entry for entry in entries if entry.name]
            if entries:
                yield entries

    async def list_leaves(self, prefix: str, leaf: str) -> AsyncGenerator[list[Leaf], None]:
        base = self._dir(prefix)
        tail = "/" + leaf
        async for page in self._pages(base):
            leaves: list[Leaf] = []
            for item in page.get("Contents", []):
                relative: str = item["Key"][len(base) :]
                if relative.endswith(tail):
                    name = relative[: -len(tail)]
                    if name and "/" not in name:
                        leaves.append(
                            Leaf(name, _seconds(item["LastModified"]), int(item.get("Size", 0)),
                                 True, item.get("ETag"))
                        )  # fmt: skip
            if leaves:
                yield leaves

    async def walk(self, prefix: str) -> AsyncGenerator[list[FileInfo], None]:
        base = self._dir(prefix)
        async for page in self._pages(base):
            files = _files_of(page, base)
            if files:
                yield files

    async def walk_rolling_up(
        self, prefix: str, delimiter: str, *, start_after: str = ""
    ) -> AsyncGenerator[tuple[list[FileInfo], list[str]], None]:
        base = self._dir(prefix)
        after = base + start_after if start_after else None
        async for page in self._pages(base, delimiter=delimiter, start_after=after):
            files = _files_of(page, base)
            rolled = [common["Prefix"][len(base) :] for common in page.get("CommonPrefixes", [])]
            if files or rolled:
                yield files, rolled

    async def _object_call(self, operation: str, key: str, action: str) -> Any | None:
        """One GetObject/HeadObject: None if the key is missing, StorageError with
        context for anything else botocore raises."""
        client = await self._ensure_client()
        try:
            return await getattr(client, operation)(Bucket=self.options.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return None
            if _is_botocore_error(exc):
                raise self._translate(exc, f"{action} {key}") from None
            raise

    async def read(self, key: str, cap: int) -> Blob | None:
        async with self._gets:
            self.stats.get += 1
            await self._ensure_client()
            if self._fast is not None:
                try:
                    return await self._fast.get(self._key(key), cap)
                except NotServed:
                    self.handed_to_botocore += 1  # botocore makes it
            response = await self._object_call("get_object", self._key(key), "reading")
            if response is None:
                return None
            # At most cap + 1 bytes, as the disk store reads: the caller sees the object
            # is too large without it being downloaded whole.
            chunks: list[bytes] = []
            remaining = cap + 1
            async with response["Body"] as body:
                while remaining > 0:
                    chunk: bytes = await body.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
            return Blob(b"".join(chunks), _seconds(response["LastModified"]), response.get("ETag"))

    async def read_many(self, keys: Sequence[str], cap: int) -> list[Blob | StorageError | None]:
        async def one(key: str) -> Blob | StorageError | None:
            try:
                return await self.read(key, cap)
            except StorageError as exc:
                return exc

        return list(await asyncio.gather(*(one(key) for key in keys)))

    async def stat(self, key: str) -> FileInfo | None:
        async with self._gets:
            self.stats.head += 1
            await self._ensure_client()
            if self._fast is not None:
                try:
                    found = await self._fast.head(self._key(key))
                except NotServed:
                    self.handed_to_botocore += 1  # botocore makes it
                else:
                    return None if found is None else found._replace(key=key)
            head = await self._object_call("head_object", self._key(key), "checking")
        if head is None:
            return None
        return FileInfo(
            key,
            _seconds(head["LastModified"]),
            int(head.get("ContentLength", 0)),
            True,
            head.get("ETag"),
        )

    async def stat_many(self, keys: Sequence[str]) -> list[FileInfo | None]:
        return list(await asyncio.gather(*(self.stat(key) for key in keys)))

    async def delete_many(
        self, keys: Sequence[str], *, directories: Sequence[str] = ()
    ) -> list[str | None]:
        del directories  # an object store has no directories to remove
        chunks = [
            keys[start : start + MAX_KEYS_PER_DELETE]
            for start in range(0, len(keys), MAX_KEYS_PER_DELETE)
        ]
        results: list[str | None] = []
        for errors in await asyncio.gather(*(self._delete_chunk(chunk) for chunk in chunks)):
            results += errors
        return results

    async def _delete_chunk(self, keys: Sequence[str]) -> list[str | None]:
        """One DeleteObjects (retrying the keys it reports as retryable); per-key result."""
        client = await self._ensure_client()
        outcome: dict[str, str | None] = {}
        remaining = list(dict.fromkeys(keys))
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            async with self._deletes:
                self.stats.delete += 1
                try:
                    answer = await client.delete_objects(
                        Bucket=self.options.bucket,
                        Delete={
                            "Objects": [{"Key": self._key(key)} for key in remaining],
                            "Quiet": True,
                        },
                    )
                except Exception as exc:
                    if not _is_botocore_error(exc):
                        raise
                    error = self._translate(exc, "deleting")
                    for key in remaining:
                        outcome[key] = str(error)
                    break
            failed: dict[str, tuple[str, str]] = {}
            for error in answer.get("Errors", []):
                key = str(error.get("Key", ""))[len(self._prefix) :]
                failed[key] = (str(error.get("Code", "")), str(error.get("Message", "")))
            again: list[str] = []
            for key in remaining:
                if key not in failed:
                    outcome[key] = None
                    self.stats.keys_deleted += 1
                    continue
                code, message = failed[key]
                outcome[key] = f"S3 refused to delete {key}: {code} {message}".strip()
                if code in RETRYABLE_DELETE_CODES:
                    again.append(key)
            if not again:
                break
            remaining = again
            if attempt < attempts and not await retry.pause(
                self._key_backoff.delay(attempt), self.stop
            ):
                break  # stopped: the keys still refused keep S3's answer as their result
        return [outcome.get(key, "not attempted") for key in keys]

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
            self._fast = None
        await self._stack.aclose()
        self._client = None


def _files_of(page: dict[str, Any], base: str) -> list[FileInfo]:
    """A listing page's objects, keys relative to ``base``."""
    return [
        FileInfo(item["Key"][len(base) :], _seconds(item["LastModified"]),
                 int(item.get("Size", 0)), True, item.get("ETag"))
        for item in page.get("Contents", [])
    ]  # fmt: skip


def _unreadable(path: str) -> str | None:
    """Why the file at ``path`` cannot be read (None: it can be opened)."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _is_botocore_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    return str(exc.response.get("Error", {}).get("Code", "")) in MISSING_CODES
