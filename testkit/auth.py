"""Auth for the real registry in tests: an htpasswd file, a token server, TLS certificates."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
import jwt
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

SERVICE = "regcleaner-test-registry"
ISSUER = "regcleaner-test-token-issuer"


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with bcrypt hashes, as docker-registry's htpasswd auth wants."""
    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def htpasswd_auth(path: Path) -> dict[str, Any]:
    """The registry's ``auth`` section for htpasswd."""
    return {"htpasswd": {"realm": "regcleaner-test", "path": str(path)}}


@dataclass
class User:
    """A token-server account and what it may do, per repository."""

    password: str
    actions: dict[str, set[str]] = field(default_factory=dict)  # repo or "*" -> actions

    def allowed(self, repository: str) -> set[str]:
        return self.actions.get(repository, self.actions.get("*", set()))


class TokenServer:
    """The Docker token protocol: basic credentials in, a signed JWT out.

    Tokens are ES256 JWTs with the signing certificate in ``x5c``; the registry trusts
    the CA in ``rootcertbundle``. The server enforces scopes per user, counts fetches,
    and can be told to issue short-lived tokens or to behave like older Harbor
    (``delete`` granted only to a request for ``*``).
    """

    def __init__(self, workdir: Path, users: dict[str, User]) -> None:
        self.users = users
        self.ca = trustme.CA()
        self.signer = self.ca.issue_cert("token-signer")
        self.root_bundle = workdir / "token-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.root_bundle))
        chain = [x509.load_pem_x509_certificate(pem.bytes()) for pem in self.signer.cert_chain_pems]
        self._x5c = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode() for cert in chain]
        self._key = self.signer.private_key_pem.bytes()
        self.lifetime_s = 300.0
        self.advertised_expires_in: float | None = None
        self.star_only_delete = False
        self.fetches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def registry_auth(self) -> dict[str, Any]:
        """The registry's ``auth`` section pointing at this server."""
        return {
            "token": {
                "realm": self.url,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.root_bundle),
            }
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mint(
        self, access: list[dict[str, Any]], subject: str = "test", lifetime_s: float = 600
    ) -> str:
        """A token with exactly ``access``, for test pushes and pulls."""
        now = time.time()
        claims = {
            "iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": int(now + lifetime_s),
            "nbf": int(now - 5), "iat": int(now), "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})

    def grant(self, user: User, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, wanted = ":".join(parts[1:-1]), set(parts[-1].split(","))
            allowed = user.allowed(name)
            if "*" in wanted:
                granted = {"*"} if "*" in allowed or {"pull", "delete"} <= allowed else set()
            else:
                granted = wanted & allowed
                if self.star_only_delete:
                    granted.discard("delete")
            if granted:
                access.append({"type": "repository", "name": name, "actions": sorted(granted)})
        return access

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user = server._authenticate(self.headers.get("Authorization", ""))
                with server._lock:
                    server.fetches.append({"user": user, "scope": query.get("scope", [])})
                if user is None or query.get("service") != [SERVICE]:
                    self.send_response(401)
                    self.end_headers()
                    return
                access = server.grant(server.users[user], query.get("scope", []))
                token = server.mint(access, subject=user, lifetime_s=server.lifetime_s)
                expires_in = server.advertised_expires_in or server.lifetime_s
                body = json.dumps({"token": token, "access_token": token,
                                   "expires_in": expires_in}).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def _authenticate(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        account = self.users.get(user)
        return user if account is not None and account.password == password else None


@dataclass
class TLSFiles:
    """A CA and a server certificate for 127.0.0.1, as files."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path

    def registry_tls(self) -> dict[str, str]:
        return {"certificate": str(self.cert_pem), "key": str(self.key_pem)}


def make_tls(workdir: Path) -> TLSFiles:
    """trustme CA and a leaf for 127.0.0.1/localhost."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key")
    ca.cert_pem.write_to_path(str(files.ca_pem))
    leaf.private_key_pem.write_to_path(str(files.key_pem))
    files.cert_pem.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    return files


def basic_header(user: str, password: str) -> str:
    """An Authorization: Basic value for test clients."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
