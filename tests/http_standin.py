"""A loopback HTTP server that answers JSON: the body of the Kubernetes API stand-ins in the unit
tests (TFJob launcher, Katib backend). `handle(method, path, query, body) -> (status, payload)`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Handle = Callable[[str, str, dict[str, list[str]], Any], tuple[int, Any]]


def serve_json(handle: Handle) -> ThreadingHTTPServer:
    """Starts the server on a free port (server.server_port); call server.shutdown() after."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            url = urlsplit(self.path)
            status, payload = handle(self.command, url.path, parse_qs(url.query), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = _reply

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
