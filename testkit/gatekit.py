"""Fronts for the gate's tests: what stands before a registry in real deployments."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Redirector:
    """An nginx-like front on 127.0.0.1 that answers every request with a 301 to the
    same path on ``target`` (the usual http→https redirect)."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def _redirect(self) -> None:
                front.requests.append(f"{self.command} {self.path}")
                self.send_response(301)
                self.send_header("Location", front.target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_PUT = do_DELETE = do_POST = _redirect

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
