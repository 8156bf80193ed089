"""moto in server mode on loopback: a real S3 endpoint for the registry and regcleaner."""

from __future__ import annotations

import logging
from typing import Any

from moto.server import ThreadedMotoServer

from testkit.registry import free_port

ACCESS_KEY = "regcleaner-test-access"
SECRET_KEY = "regcleaner-test-secret-0123456789"  # a test value, never a real key
REGION = "us-east-1"


class MotoS3:
    """A ThreadedMotoServer on 127.0.0.1 with helpers to make buckets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

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
