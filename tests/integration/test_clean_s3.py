"""End to end on S3: moto as the bucket, the real docker-registry with its s3 driver."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.api import RegistryAPI
from testkit.registry import Flavour, RegistryProcess
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from testkit.scenario import build_scenario
from tests.conftest import run_cli
from tests.integration.test_clean_disk import assert_all_tags_pull, report_digests

_ids = itertools.count()


@pytest.fixture
def s3_registry(
    moto_server: MotoS3, tmp_path: Path, registry_flavour: Flavour
) -> Iterator[tuple[RegistryProcess, str]]:
    bucket = f"registry-{next(_ids)}"
    moto_server.create_bucket(bucket)
    server = RegistryProcess(
        tmp_path / "registry",
        flavour=registry_flavour,
        storage=moto_server.registry_storage(bucket, "/team/registry"),
    )
    server.start()
    try:
        yield server, bucket
    finally:
        server.stop()


def s3_args(server: RegistryProcess, endpoint: str, bucket: str, *extra: str) -> list[str]:
    return [
        "clean", "--registry-url", server.url, "--storage", "S3", "--bucket", bucket,
        "--registry-dir", "/team/registry", "--s3-endpoint", endpoint, "--region", REGION,
        "--progress-interval", "0", "--min-age", "0", *extra,
    ]  # fmt: skip


def revisions_in_bucket(moto: MotoS3, bucket: str) -> set[tuple[str, str]]:
    client = moto.client()
    found = set()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="team/registry/docker/registry/v2/repositories/"
    ):
        for item in page.get("Contents", []):
            key = item["Key"].split("/repositories/", 1)[1]
            repo, _, rest = key.partition("/_manifests/")
            parts = rest.split("/")
            if len(parts) == 4 and parts[0] == "revisions" and parts[3] == "link":
                found.add((repo, "sha256:" + parts[2]))
    return found


def test_s3_clean_matches_disk_semantics(
    s3_registry: tuple[RegistryProcess, str], moto_server: MotoS3, tmp_path: Path
) -> None:
    server, bucket = s3_registry
    api = RegistryAPI(server.url)
    expectation = build_scenario(api)
    before = revisions_in_bucket(moto_server, bucket)
    assert expectation.keep | expectation.delete <= before
    env = {"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}

    dry = run_cli(
        s3_args(server, moto_server.url, bucket, "--dry-run"),
        env=env,
        report_path=tmp_path / "dry.json",
    )
    assert dry.exit_code == 0, dry.output
    assert dry.report is not None
    assert report_digests(dry.report, "would_delete") == expectation.delete
    assert revisions_in_bucket(moto_server, bucket) == before
    assert dry.report["storage"] == f"s3://{bucket}/team/registry at {moto_server.url}"

    real = run_cli(
        s3_args(server, moto_server.url, bucket), env=env, report_path=tmp_path / "real.json"
    )
    assert real.exit_code == 0, real.output
    assert real.report is not None
    assert report_digests(real.report, "deleted") == expectation.delete
    assert revisions_in_bucket(moto_server, bucket) == before - expectation.delete
    for text in (dry.output, real.output, (tmp_path / "real.json").read_text()):
        assert SECRET_KEY not in text

    server.stop()
    server.garbage_collect()
    server.start()
    assert_all_tags_pull(api, expectation)
    for repo, digest in expectation.keep:
        api.pull(repo, digest)
    for repo, digest in expectation.delete:
        assert not api.manifest_exists(repo, digest)


def test_s3_wrong_bucket_exits_2_before_anything(
    s3_registry: tuple[RegistryProcess, str], moto_server: MotoS3
) -> None:
    server, _ = s3_registry
    result = run_cli(
        s3_args(server, moto_server.url, "missing-bucket"),
        env={"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY},
    )
    assert result.exit_code == 2, result.output
    assert "bucket 'missing-bucket' does not exist" in result.stderr
    assert "Traceback" not in result.output


def s3_error(code: str, message: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>")  # fmt: skip


def test_s3_throttling_and_5xx_are_retried_and_a_dead_listing_fails_its_repository(
    s3_registry: tuple[RegistryProcess, str], moto_server: MotoS3, tmp_path: Path
) -> None:
    from testkit import images
    from testkit.faults import FaultProxy, FaultScript

    server, bucket = s3_registry
    api = RegistryAPI(server.url)
    history: dict[str, set[str]] = {}
    for repo in ("s3/ok-a", "s3/ok-b", "s3/dead"):
        pushed = [images.push_image(api, repo, "v", seed=f"{repo}{i}") for i in range(4)]
        history[repo] = {p.digest for p in pushed[:-1]}

    def decide(n: int, path: str) -> int | None:
        if "s3/dead/_manifests/revisions" in path.replace("%2F", "/"):
            return 403  # AccessDenied: not retryable, the listing fails for good
        if n % 3 == 0:
            return 503  # SlowDown
        if n % 7 == 0:
            return 500
        return None

    proxy = FaultProxy(moto_server.url)
    proxy.script = FaultScript(
        decide, methods=frozenset({"GET", "HEAD"}),
        body=s3_error("SlowDown", "Please reduce your request rate."),
        content_type="application/xml",
    )  # fmt: skip
    proxy.start()
    try:
        args = s3_args(server, proxy.url, bucket)
        result = run_cli(args, env={"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY},
                         report_path=tmp_path / "r.json")  # fmt: skip
    finally:
        proxy.stop()
    assert result.exit_code == 1, result.output
    assert result.report is not None
    by_name = {r["name"]: r for r in result.report["repositories"]}
    assert by_name["s3/dead"]["error"]
    assert by_name["s3/dead"]["deleted"] == []
    for repo in ("s3/ok-a", "s3/ok-b"):
        assert {d["digest"] for d in by_name[repo]["deleted"]} == history[repo]
    assert sum(1 for hit in proxy.seen if hit.answered == 503) >= 3
    for digest in history["s3/dead"]:
        assert api.manifest_exists("s3/dead", digest)
