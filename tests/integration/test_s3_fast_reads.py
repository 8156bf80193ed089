"""regcleaner's own S3 reads (storage/s3fast.py) against a server that checks every
signature: moto with IAM authentication on, which refuses a request signed with the
wrong secret or over the wrong canonical request."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from regcleaner.config import S3Options
from regcleaner.errors import StorageError, StorageSetupError
from regcleaner.storage import s3fast
from regcleaner.storage.s3 import S3Store
from regcleaner.storage.s3fast import NotServed, Signer
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

# Keys a registry never writes, and reserved characters a signature must encode right.
ODD_KEYS = ["plain/data", "a b/c+d", "per%cent/x", "tilde~/star*", "quote'(paren)!",
            "unicode/é名", "eq=amp&q?", "colon:semi;at@",
            "many/" + "deep/" * 20 + "data"]  # fmt: skip
BUCKET = "signed"
PREFIX = "root/dir"


@pytest.fixture(scope="module")
def signing_moto() -> Iterator[tuple[MotoS3, str, str]]:
    server = MotoS3(check_signatures=True)
    server.start()
    try:
        access, secret = server.signed_credentials()
        import boto3

        client = boto3.client("s3", endpoint_url=server.url, region_name=REGION,
                              aws_access_key_id=access, aws_secret_access_key=secret)  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        for i, key in enumerate(ODD_KEYS):
            client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=b"x" * (i + 1))
        for i in range(1005):  # more than a page
            client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/many-keys/{i:04d}", Body=b"")
        yield server, access, secret
    finally:
        server.stop()


def _store(server: MotoS3, access: str, secret: str, *, fast: bool = True) -> S3Store:
    return S3Store(S3Options(bucket=BUCKET, prefix=PREFIX, region=REGION,
                             endpoint_url=server.url, access_key=access, secret_key=secret,
                             fast_reads=fast))  # fmt: skip


async def _everything(store: S3Store) -> dict[str, Any]:
    try:
        reads = await store.read_many(ODD_KEYS, 100)
        stats = await store.stat_many([*ODD_KEYS, "missing/key"])
        walked = [(f.key, f.mtime, f.size, f.etag) async for page in store.walk("") for f in page]
        children = [e async for page in store.list_children("") for e in page]
        rolled = [
            (sorted(f.key for f in files), rolled)
            async for files, rolled in store.walk_rolling_up("", "/deep/", start_after=ODD_KEYS[1])
        ]
        missing = await store.read("missing/key", 100)
        served = store._fast is not None and store._fast.enabled
        return {"reads": reads, "stats": stats, "walked": walked, "children": children,
                "rolled": rolled, "missing": missing, "fast": served,
                "requests": store.stats}  # fmt: skip
    finally:
        await store.aclose()


def test_own_reads_are_accepted_by_a_server_checking_signatures_and_agree_with_botocore(
    signing_moto: tuple[MotoS3, str, str],
) -> None:
    server, access, secret = signing_moto

    def not_scanned(*_: object) -> None:
        raise AssertionError("a page of moto's was not read by scan_listing")

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(s3fast, "parse_listing", not_scanned)
        fast = asyncio.run(_everything(_store(server, access, secret)))
    slow = asyncio.run(_everything(_store(server, access, secret, fast=False)))
    assert fast["fast"]  # built, and never turned off
    assert not slow["fast"]
    for name in ("reads", "stats", "walked", "children", "rolled", "missing"):
        assert fast[name] == slow[name], name
    assert [blob.data for blob in fast["reads"]] == [b"x" * (i + 1) for i in range(len(ODD_KEYS))]
    assert len(fast["walked"]) == len(ODD_KEYS) + 1005
    assert ["many/deep/"] in [rolled for _, rolled in fast["rolled"]]
    assert all(key > ODD_KEYS[1] for files, _ in fast["rolled"] for key in files)
    assert fast["missing"] is None
    assert fast["stats"][-1] is None
    assert fast["requests"] == slow["requests"]  # one count per request, either way


def test_the_server_refuses_a_signature_over_another_request(
    signing_moto: tuple[MotoS3, str, str],
) -> None:
    """What makes the test above able to fail: moto does check the signature."""
    server, access, secret = signing_moto
    host = server.url.removeprefix("http://")

    async def get(signed_path: str, sent_path: str, key: str) -> int:
        headers = Signer(REGION).headers("GET", host, signed_path, {}, (access, key, None),
                                         _amz_date())  # fmt: skip
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + sent_path, headers=headers) as response,
        ):
            return response.status

    good = f"/{BUCKET}/{PREFIX}/plain/data"
    assert asyncio.run(get(good, good, secret)) == 200
    assert asyncio.run(get(good, f"/{BUCKET}/{PREFIX}/a%20b/c%2Bd", secret)) == 403
    assert asyncio.run(get(good, good, secret + "x")) == 403


def test_a_wrong_secret_fails_as_botocore_reports_it(
    signing_moto: tuple[MotoS3, str, str],
) -> None:
    """The fast path does not answer a 403: botocore makes the request again and says
    what is wrong, as it did before this path existed; and the fast path turns off (a
    refusal would come again)."""
    server, access, secret = signing_moto
    store = _store(server, access, secret + "x")

    async def read() -> None:
        try:
            assert store._fast is None  # not built yet
            with pytest.raises(StorageError, match="secret key is wrong"):
                await store.read("plain/data", 100)
            assert store._fast is not None
            assert not store._fast.enabled
            with pytest.raises(NotServed, match="off"):
                await store._fast.get(f"{PREFIX}/plain/data", 100)
        finally:
            await store.aclose()

    asyncio.run(read())


def _amz_date() -> str:
    import time

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def test_over_tls_the_fast_path_trusts_what_botocore_trusts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """S3 behind TLS with a private CA: given as AWS_CA_BUNDLE, botocore and the fast
    path both verify against it and the reads are served here; without it, the first
    request turns the path off and botocore says what is wrong; a bundle that cannot be
    read is named before any request (botocore retried it as if S3 did not answer)."""
    from testkit.auth import make_tls
    from testkit.latency import LatencyProxy

    tls = make_tls(tmp_path)

    moto = MotoS3()
    moto.start()
    certificate = (str(tls.cert_pem), str(tls.key_pem))
    front = LatencyProxy(upstream=moto.url, delay_s=0.0, certificate=certificate)
    front.start()
    try:
        moto.create_bucket("tls")
        moto.client().put_object(Bucket="tls", Key="p/a b", Body=b"over tls")
        options = S3Options(bucket="tls", prefix="p", region=REGION, endpoint_url=front.url,
                            access_key=ACCESS_KEY, secret_key=SECRET_KEY)  # fmt: skip

        async def read(store: S3Store) -> tuple[object, bool]:
            try:
                blob = await store.read("a b", 100)
                fast = store._fast
                return blob, fast is not None and fast.enabled and fast.scheme == "https"
            finally:
                await store.aclose()

        monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.ca_pem))
        blob, served_here = asyncio.run(read(S3Store(options)))
        assert getattr(blob, "data", None) == b"over tls"
        assert served_here
        assert front.requests["GET"] >= 1

        monkeypatch.delenv("AWS_CA_BUNDLE")

        async def refused() -> None:
            store = S3Store(dataclasses.replace(options, max_attempts=1))
            try:
                with pytest.raises(StorageError):
                    await store.read("a b", 100)
                assert store._fast is not None
                assert not store._fast.enabled  # the certificate refused turned it off
            finally:
                await store.aclose()

        asyncio.run(refused())

        missing = tmp_path / "missing-ca.pem"
        monkeypatch.setenv("AWS_CA_BUNDLE", str(missing))

        async def unreadable() -> None:
            store = S3Store(options)
            try:
                with pytest.raises(StorageSetupError, match=f"the CA bundle {missing} cannot"):
                    await store.read("a b", 100)
                assert front.requests["GET"] == gets  # no request was made
            finally:
                await store.aclose()

        gets = front.requests["GET"]
        asyncio.run(unreadable())

        # One that opens but holds no certificate turns the fast path off, naming it;
        # botocore's request says what is wrong, as a StorageError.
        junk = tmp_path / "junk-ca.pem"
        junk.write_text("not a certificate\n")
        monkeypatch.setenv("AWS_CA_BUNDLE", str(junk))
        with caplog.at_level(logging.WARNING, logger="regcleaner.storage.s3fast"):
            asyncio.run(refused())
        assert any(str(junk) in r.getMessage() for r in caplog.records)  # named
    finally:
        front.stop()
        moto.stop()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {"SECRET_KEY": "WRONG" * 8},
            "S3 refused access to bucket 'signed' (403): a wrong "
            "access key or secret key, or no s3:ListBucket permission on it",
        ),
        ({"ACCESS_KEY": "AKIAWRONGWRONGWRONG0"}, "S3 refused access to bucket 'signed' (403)"),
        (
            {"AWS_CA_BUNDLE": "/nonexistent/ca.pem"},
            "the CA bundle /nonexistent/ca.pem cannot be read (No such file or directory)",
        ),
        ({"REGION": "eu west 1"}, "check: Provided region_name 'eu west 1' doesn't match"),
        ({"BUCKET": "My_Bucket!!"}, "bucket name 'My_Bucket!!' is not one S3 accepts"),
    ],
    ids=["wrong-secret", "unknown-access-key", "missing-ca-bundle", "region-typo", "bucket-name"],
)
def test_what_an_operator_gets_wrong_about_s3_is_said_in_one_line_with_exit_2(
    signing_moto: tuple[MotoS3, str, str], tmp_path: Path, change: dict[str, str], said: str
) -> None:
    """Each had been misreported: HeadBucket's 403 has no body ("S3 answered 403 403"),
    a missing CA bundle was retried until it read as "S3 did not answer within 6 s"
    (exit 3), a region or bucket name botocore refuses was an internal error with a
    traceback (exit 1)."""
    from tests.conftest import run_cli

    server, access, secret = signing_moto
    env = {"REGISTRY_STORAGE": "s3", "BUCKET": BUCKET, "REGION": REGION,
           "S3_ENDPOINT": server.url, "ACCESS_KEY": access, "SECRET_KEY": secret,
           "REGISTRY_DIR": f"/{PREFIX}", **change}  # fmt: skip
    result = run_cli(["clean", "--dry-run", "--progress-interval", "0"], env=env,
                     report_path=tmp_path / "report.json")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert secret not in result.output + result.stderr
    assert result.report is not None
    assert secret not in json.dumps(result.report)


def test_the_s3_secret_can_come_from_a_file_kept_out_of_argv(
    signing_moto: tuple[MotoS3, str, str], tmp_path: Path
) -> None:
    """--secret-key shows in ps; SECRET_KEY_FILE / --secret-key-file reads it from a
    mounted Secret (one trailing newline dropped), as --password-file does for the
    registry. The server checks the signature, so only the right secret gets past the
    bucket check (to this bucket's missing registry layout)."""
    from tests.conftest import run_cli

    server, access, secret = signing_moto
    env = {"REGISTRY_STORAGE": "s3", "BUCKET": BUCKET, "REGION": REGION,
           "S3_ENDPOINT": server.url, "ACCESS_KEY": access,
           "REGISTRY_DIR": f"/{PREFIX}"}  # fmt: skip
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(secret + "\n")
    wrong.write_text("WRONG" * 8 + "\n")
    command = ["clean", "--dry-run", "--progress-interval", "0"]
    ok = run_cli(command, env={**env, "SECRET_KEY_FILE": str(right)})
    assert ok.exit_code == 2, ok.output
    assert "no registry storage under" in ok.stderr  # past the credentials
    refused = run_cli([*command, "--secret-key-file", str(wrong)], env=env)
    assert refused.exit_code == 2, refused.output
    assert "S3 refused access to bucket 'signed' (403)" in refused.stderr
    both = run_cli(command, env={**env, "SECRET_KEY_FILE": str(right), "SECRET_KEY": secret})
    assert both.exit_code == 2
    assert "give --secret-key or --secret-key-file, not both" in both.stderr
    for result in (ok, refused, both):
        assert secret not in result.output + result.stderr
