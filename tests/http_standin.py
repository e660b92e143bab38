"""A loopback HTTP server that answers JSON: the body of every API stand-in in the unit tests.

- `serve(handle)`: `handle(request) -> (status, payload)` sees the whole request (method, path,
  query, headers, raw body), for APIs that take more than JSON (the KFP API's multipart uploads,
  tests/unit/test_submit.py).
- `serve_json(handle)`: `handle(method, path, query, body) -> (status, payload)` with the body
  parsed as JSON, for the Kubernetes API stand-ins (TFJob launcher, Katib backend).

Both start on a free port of 127.0.0.1 (server.server_port) in a daemon thread; `stop(server)`
(or server.shutdown()) ends it. The payload goes back as JSON; nothing is logged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query_string: str
    headers: Message
    body: bytes

    @property
    def query(self) -> dict[str, list[str]]:
        """Every value of each parameter (?a=1&a=2 -> {"a": ["1", "2"]}), blank ones kept."""
        return parse_qs(self.query_string, keep_blank_values=True)

    @property
    def query_single(self) -> dict[str, str]:
        """One value per parameter (the last), blank ones kept."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Handle = Callable[[Request], tuple[int, Any]]
JsonHandle = Callable[[str, str, dict[str, list[str]], Any], tuple[int, Any]]


def serve(handle: Handle) -> ThreadingHTTPServer:
    """Starts the server; every request goes to `handle`, its payload back as JSON."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                self.command, url.path, url.query, self.headers, self.rfile.read(length)
            )
            status, payload = handle(request)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _reply

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest's output clean; the stand-ins record what they answered

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def serve_json(handle: JsonHandle) -> ThreadingHTTPServer:
    """serve() for JSON APIs: `handle(method, path, query, body)`, the body parsed as JSON."""
    return serve(
        lambda request: handle(
            request.method, request.path, parse_qs(request.query_string), request.json()
        )
    )


def stop(server: ThreadingHTTPServer) -> None:
    """Stops serving and closes the socket."""
    server.shutdown()
    server.server_close()
