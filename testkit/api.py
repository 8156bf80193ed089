"""A small synchronous registry client for tests: push blobs and manifests, pull them back."""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from regcleaner import mediatypes

ACCEPT = mediatypes.ACCEPT_ALL_MANIFESTS


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of the bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Response:
    """Status, headers and body of one request."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Pushed:
    """A manifest pushed to a repository."""

    repository: str
    digest: str
    media_type: str
    size: int
    blobs: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default=())

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor pointing at this manifest."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


class RegistryAPI:
    """Push and pull through the v2 API, as a docker client would."""

    def __init__(
        self,
        url: str,
        *,
        authorization: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.authorization = authorization
        self.ssl_context = ssl_context

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request; HTTP errors come back as a Response, not an exception."""
        url = path if path.startswith("http") else self.url + path
        all_headers = dict(headers or {})
        if self.authorization:
            all_headers["Authorization"] = self.authorization
        req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ssl_context) as resp:
                return Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers.items()), exc.read())

    def push_blob(self, repository: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT with the digest); returns the digest."""
        digest = sha256(data)
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", b"")
        assert start.status == 202, (start.status, start.body)
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        done = self.request(
            "PUT",
            f"{location}{sep}digest={digest}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        assert done.status == 201, (done.status, done.body)
        return digest

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest by tag or digest; returns its digest."""
        response = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", body, {"Content-Type": media_type}
        )
        assert response.status == 201, (response.status, response.body)
        digest = sha256(body)
        assert response.headers.get("Docker-Content-Digest") == digest
        return digest

    def get_manifest(self, repository: str, reference: str) -> Response:
        """GET a manifest with every media type accepted."""
        return self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", None, {"Accept": ACCEPT}
        )

    def manifest_exists(self, repository: str, digest: str) -> bool:
        """True if the registry serves the manifest by digest."""
        return self.get_manifest(repository, digest).status == 200

    def get_blob(self, repository: str, digest: str) -> Response:
        """GET a blob (follows the registry's redirect, if any)."""
        return self.request("GET", f"/v2/{repository}/blobs/{digest}")

    def tags(self, repository: str) -> list[str]:
        """The repository's tags, per the registry."""
        response = self.request("GET", f"/v2/{repository}/tags/list?n=10000")
        if response.status == 404:
            return []
        assert response.status == 200, (response.status, response.body)
        return list(json.loads(response.body).get("tags") or [])

    def pull(self, repository: str, reference: str) -> set[str]:
        """Pull a manifest and everything it references, verifying every digest.

        Returns every manifest and blob digest fetched. Raises AssertionError with
        the failing path if anything is missing or corrupt.
        """
        seen: set[str] = set()
        self._pull(repository, reference, seen, f"{repository}:{reference}")
        return seen

    def _pull(self, repository: str, reference: str, seen: set[str], trail: str) -> None:
        response = self.get_manifest(repository, reference)
        assert response.status == 200, f"{trail}: manifest answered {response.status}"
        digest = sha256(response.body)
        if reference.startswith("sha256:"):
            assert digest == reference, f"{trail}: manifest digest mismatch"
        seen.add(digest)
        document = json.loads(response.body)
        for child in document.get("manifests") or []:
            self._pull(repository, child["digest"], seen, f"{trail} -> {child['digest'][:19]}")
        blobs = [document["config"]] if document.get("config") else []
        blobs += document.get("layers") or []
        for blob in blobs:
            got = self.get_blob(repository, blob["digest"])
            assert got.status == 200, f"{trail}: blob {blob['digest']} answered {got.status}"
            assert sha256(got.body) == blob["digest"], f"{trail}: blob {blob['digest']} corrupt"
            seen.add(blob["digest"])
