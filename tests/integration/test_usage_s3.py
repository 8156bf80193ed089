"""``regcleaner usage`` on S3 (moto) gives the numbers it gives on disk for the same
registry: one random-ish registry is written once and replayed into a directory and a
bucket, and the two JSON documents must agree on every repository and total."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from regcleaner.usage.command import usage
from testkit.registry_writer import DiskSink, MemorySink, RegistryWriter, S3Sink
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

APP = typer.Typer()
APP.command("usage")(usage)
APP.command("unused")(lambda: None)
S3_ROOT = "/root"


def write(writer: RegistryWriter) -> None:
    shared = b"shared layer\n" * 300
    for number, name in enumerate(("app", "team/app", "team/app/web", "lib")):
        for version in range(3):
            own = f"{name} {version}\n".encode() * (100 * (number + 1))
            image = writer.image(name, f'{{"{name}":{version}}}'.encode(), [shared, own],
                                 oci=True)  # fmt: skip
            if version == 2:
                writer.tag(name, "latest", image.digest)
    writer.blob(b"orphan\n" * 700)


def measure(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(
        APP, ["usage", "--output", "json", "--min-age", "0", "--progress-interval", "0", *args],
        env=env, catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_s3_and_disk_give_the_same_numbers(moto_server: MotoS3, tmp_path: Path) -> None:
    memory = MemorySink()
    write(RegistryWriter(memory))
    memory.replay(DiskSink(tmp_path))
    bucket = "usage-s3"
    moto_server.create_bucket(bucket)
    with S3Sink(moto_server.client(), bucket, S3_ROOT) as sink:
        memory.replay(sink)

    on_disk = measure("--registry-dir", str(tmp_path))
    on_s3 = measure(
        "--storage", "s3", "--bucket", bucket, "--registry-dir", S3_ROOT,
        "--s3-endpoint", moto_server.url, "--region", REGION,
        env={"ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY},
    )  # fmt: skip
    assert on_s3["repositories"] == on_disk["repositories"]
    assert on_s3["totals"] == on_disk["totals"]
    assert on_disk["totals"]["shared_bytes"] > 0
    assert on_disk["totals"]["orphaned_bytes"] > 0
    assert all(r["reclaimable_bytes"] > 0 for r in on_disk["repositories"])
