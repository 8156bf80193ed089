"""moto in server mode on loopback: a real S3 endpoint for the registry and regcleaner."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from moto.server import ThreadedMotoServer

from testkit.registry import free_port

ACCESS_KEY = "regcleaner-test-access"
SECRET_KEY = "regcleaner-test-secret-0123456789"  # a test value, never a real key
REGION = "us-east-1"


class MotoS3:
    """moto's S3 on 127.0.0.1 with helpers to make buckets: a ThreadedMotoServer in this
    process, or (``own_process``, for benchmarks) a server process of its own, so that
    its CPU does not contend for this process's GIL with whatever else runs here."""

    def __init__(self, *, own_process: bool = False, check_signatures: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_process = own_process or check_signatures
        self._check_signatures = check_signatures
        """moto then verifies every request's signature against an IAM user's secret
        (its ``INITIAL_NO_AUTH_ACTION_COUNT``): ``signed_credentials`` makes one."""
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if not self._own_process:
            self._server.start()
            return
        code = (
            "import logging, sys; from moto.server import ThreadedMotoServer; "
            "logging.getLogger('werkzeug').setLevel(logging.ERROR); "
            f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, verbose=False); "
            "s.start(); sys.stdin.read(); s.stop()"
        )
        env = dict(os.environ)
        if self._check_signatures:
            # Requests moto lets through unchecked: the first answer to the readiness
            # poll below, then signed_credentials' three IAM calls.
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto exited with {self._process.returncode}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.05)  # poll: not listening yet
        raise RuntimeError("moto did not start")

    def stop(self) -> None:
        if self._process is None:
            self._server.stop()
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def client(self) -> Any:
        """A synchronous boto3 S3 client for test setup and inspection."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def signed_credentials(self) -> tuple[str, str]:
        """(access key, secret) of a new IAM user allowed everything on S3: with
        ``check_signatures``, the only credentials moto accepts (call it once)."""
        import json

        import boto3

        iam = boto3.client(
            "iam", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip
        iam.create_user(UserName="regcleaner")
        allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [allow]}
        iam.put_user_policy(UserName="regcleaner", PolicyName="s3",
                            PolicyDocument=json.dumps(policy))  # fmt: skip
        key = iam.create_access_key(UserName="regcleaner")["AccessKey"]
        return str(key["AccessKeyId"]), str(key["SecretAccessKey"])

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def registry_storage(self, bucket: str, rootdirectory: str) -> dict[str, Any]:
        """The ``storage`` section for docker-registry's s3 driver against this server."""
        return {
            "s3": {
                "accesskey": ACCESS_KEY,
                "secretkey": SECRET_KEY,
                "region": REGION,
                "regionendpoint": self.url,
                "bucket": bucket,
                "rootdirectory": rootdirectory,
                "secure": False,
                "v4auth": True,
            }
        }
