"""The server's front door: an ASGI middleware in front of kserve's routes.

kserve 0.15's FastAPI app gets three things wrong for a production endpoint, and all three are
decided from the method, the path and the headers, before a body is read:
- a GET on `/v1/models/<name>:predict` matches the model-metadata route and answers 404 ("model
  shop-ranking:predict does not exist"); here every method but POST on a prediction path is a 405
  with `Allow: POST`;
- a V2 body without the `inference-header-content-length` header and without a JSON content type
  (kserve's own InferenceRESTClient and tritonclient in JSON mode send none) is taken for binary
  and refused; in the Open Inference Protocol that header announces binary tensor data after the
  JSON, and without it the whole body is JSON, so it is marked as such;
- nothing bounds the work in flight: under overload requests queue until every one is slow. Here
  at most `max_concurrency` predictions are admitted at once; one past it is answered 503 with
  `Retry-After` at once, so admitted requests keep their latency and a client (or the load
  balancer) retries elsewhere. Probes, metadata and /metrics are never shed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from serving import metrics

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

V1_PREDICT = re.compile(r"^/v1/models/[^/]+:predict$")
V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
BINARY_HEADER = b"inference-header-content-length"


class HttpGuard:
    def __init__(self, app: ASGIApp, model_name: str, max_concurrency: int, retry_after_s: int):
        self.app = app
        self.model_name = model_name
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        metrics.MAX_CONCURRENCY.labels(model_name).set(max_concurrency)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        v2 = bool(V2_INFER.match(path))
        if not (v2 or V1_PREDICT.match(path)):
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await _answer(
                send, 405, f"{scope['method']} {path}: predictions are POSTed", {"allow": "POST"}
            )
        if self.in_flight >= self.max_concurrency:
            metrics.SHED.labels(self.model_name).inc()
            return await _answer(
                send,
                503,
                f"{self.in_flight} predictions in flight, the limit (serving.max_concurrency) "
                f"is {self.max_concurrency}: retry in {self.retry_after_s} s",
                {"retry-after": str(self.retry_after_s)},
            )
        if v2:
            scope = _json_unless_binary(scope)
        self.in_flight += 1  # one event loop: no lock needed between the check and this
        metrics.IN_FLIGHT.labels(self.model_name).set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            metrics.IN_FLIGHT.labels(self.model_name).set(self.in_flight)


def _json_unless_binary(scope: Scope) -> Scope:
    """The scope with `content-type: application/json` when the body carries no binary part."""
    headers = scope["headers"]
    if any(name == BINARY_HEADER for name, _ in headers):
        return scope
    kept = [(name, value) for name, value in headers if name != b"content-type"]
    return {**scope, "headers": [*kept, (b"content-type", b"application/json")]}


async def _answer(send: Callable, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
