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

import orjson

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
        if v2 and not _binary(scope):
            scope = _json_body_scope(scope)
            body = await _read_body(receive)
            problem = _not_a_v2_object(body)
            if problem:
                return await _answer(send, 400, problem, {})
            receive = _replay(body, receive)
        self.in_flight += 1  # one event loop: no lock needed between the check and this
        metrics.IN_FLIGHT.labels(self.model_name).set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            metrics.IN_FLIGHT.labels(self.model_name).set(self.in_flight)


def _binary(scope: Scope) -> bool:
    return any(name == BINARY_HEADER for name, _ in scope["headers"])


def _json_body_scope(scope: Scope) -> Scope:
    """The scope with `content-type: application/json` (the body carries no binary part)."""
    kept = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
    return {**scope, "headers": [*kept, (b"content-type", b"application/json")]}


async def _read_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    """A receive that hands the app the body read here, then the client's own messages."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    raise _NonFinite(name)


def _not_a_v2_object(body: bytes) -> str | None:
    """Why a JSON V2 body is refused before kserve sees it: kserve answers a body that is not a
    JSON object (a bare `Infinity`, say), or an invalid one holding NaN or Infinity anywhere,
    with a 500 from its own error handler (it cannot write the value back as JSON). orjson reads
    strict JSON only (no NaN or Infinity), so what it reads is JSON json reads alike; the rest
    goes through json, whose errors name the problem."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        return _not_an_object(parsed)
    try:
        parsed = json.loads(body, parse_constant=_refuse_constant)
    except _NonFinite as err:
        return f"the body holds {err}: not a JSON number (send finite values)"
    except (ValueError, UnicodeDecodeError) as err:
        return f"the body is not JSON: {err}"
    return _not_an_object(parsed)


def _not_an_object(parsed: Any) -> str | None:
    if not isinstance(parsed, dict):
        return f'a V2 request is a JSON object ({{"inputs": [...]}}), not {type(parsed).__name__}'
    return None


async def _answer(send: Callable, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
