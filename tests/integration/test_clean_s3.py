"""End to end on S3: moto as the bucket, the real docker-registry with its s3 driver."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.harness.api import RegistryAPI
from tests.harness.registry import RegistryProcess
from tests.harness.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.harness.scenario import build_scenario
from tests.integration.test_clean_disk import assert_all_tags_pull, report_digests

_ids = itertools.count()


@pytest.fixture
def s3_registry(moto_server: MotoS3, tmp_path: Path) -> Iterator[tuple[RegistryProcess, str]]:
    bucket = f"registry-{next(_ids)}"
    moto_server.create_bucket(bucket)
    server = RegistryProcess(
        tmp_path / "registry", storage=moto_server.registry_storage(bucket, "/team/registry")
    )
    server.start()
    try:
        yield server, bucket
    finally:
        server.stop()


def s3_args(server: RegistryProcess, moto: MotoS3, bucket: str, *extra: str) -> list[str]:
    return [
        "clean", "--registry-url", server.url, "--storage", "S3", "--bucket", bucket,
        "--registry-dir", "/team/registry", "--s3-endpoint", moto.url, "--region", REGION,
        "--progress-interval", "0", *extra,
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
        s3_args(server, moto_server, bucket, "--dry-run"),
        env=env,
        report_path=tmp_path / "dry.json",
    )
    assert dry.exit_code == 0, dry.output
    assert dry.report is not None
    assert report_digests(dry.report, "would_delete") == expectation.delete
    assert revisions_in_bucket(moto_server, bucket) == before
    assert dry.report["storage"] == f"s3://{bucket}/team/registry at {moto_server.url}"

    real = run_cli(
        s3_args(server, moto_server, bucket), env=env, report_path=tmp_path / "real.json"
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
        s3_args(server, moto_server, "missing-bucket"),
        env={"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY},
    )
    assert result.exit_code == 2, result.output
    assert "bucket 'missing-bucket' does not exist" in result.stderr
    assert "Traceback" not in result.output
