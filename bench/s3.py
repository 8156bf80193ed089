"""S3 requests per manifest: regcleaner's prefix-scoped scan against listing the bucket.

``python -m bench.s3 [REPOS]``: writes a synthetic registry (bench.generate) into a
moto S3 server on loopback, runs ``regcleaner clean --storage s3 --dry-run``, and
compares the S3 requests it made with what listing the whole bucket would take.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.generate import generate
from testkit.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3


def main() -> int:
    repositories = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir) / "storage"
        synthetic = generate(root, repositories)
        keys = [
            (str(path.relative_to(root)), path)
            for path in root.rglob("*") if path.is_file()
        ]  # fmt: skip
        moto = MotoS3(own_process=True)
        moto.start()
        try:
            client = moto.client()
            client.create_bucket(Bucket="bench")
            with ThreadPoolExecutor(16) as pool:
                list(
                    pool.map(
                        lambda item: client.put_object(
                            Bucket="bench", Key=f"root/{item[0]}", Body=item[1].read_bytes()
                        ),
                        keys,
                    )
                )
            report = Path(workdir) / "report.json"
            env = {**os.environ, "ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
            subprocess.run(
                [sys.executable, "-m", "regcleaner", "clean", "--storage", "s3", "--bucket",
                 "bench", "--registry-dir", "/root", "--region", REGION, "--s3-endpoint",
                 moto.url, "--registry-url", "http://127.0.0.1:9", "--dry-run",
                 "--progress-interval", "0", "--report", str(report)],
                check=True, env=env, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            summary = json.loads(report.read_text())["summary"]
        finally:
            moto.stop()
    requests = summary["storage_requests"]
    manifests = synthetic.manifests
    whole_bucket_lists = math.ceil(len(keys) / 1000)
    print(
        f"{manifests:,} manifests, {len(keys):,} keys in the bucket, {repositories:,} repositories"
    )
    print(
        f"regcleaner dry run: {requests['list']:,} LIST + {requests['get']:,} GET = "
        f"{(requests['list'] + requests['get']) / manifests:.3f} requests per manifest "
        f"({requests['list'] / manifests:.4f} LIST per manifest)"
    )
    print(
        f"listing the whole bucket: {whole_bucket_lists:,} LIST "
        f"({whole_bucket_lists / manifests:.4f} per manifest) before any GET; it grows "
        "with every layer, config and upload in the bucket, not with the manifests"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
