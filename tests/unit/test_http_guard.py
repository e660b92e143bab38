"""serving/http_guard.py on a stand-in ASGI app: 405 for a GET on a prediction path, V2 bodies
without the binary header read as JSON, and admission: past max_concurrency a 503 with
Retry-After at once, while probes and metadata are never shed."""

from __future__ import annotations

import asyncio
import json

from serving import metrics
from serving.http_guard import HttpGuard

V1 = "/v1/models/shop-ranking:predict"
V2 = "/v2/models/shop-ranking/infer"


class SlowApp:
    """Answers 200 once `release` is set, recording the headers it was called with."""

    def __init__(self):
        self.release = asyncio.Event()
        self.seen: list[dict[bytes, bytes]] = []

    async def __call__(self, scope, receive, send):
        self.seen.append(dict(scope["headers"]))
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(
    app, method: str, path: str, headers=(), body: bytes = b"{}"
) -> tuple[int, dict[bytes, bytes], dict]:
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], sent[-1]["body"]
    return start["status"], dict(start["headers"]), json.loads(body) if body else {}


def test_other_methods_on_prediction_paths_are_405_with_allow_post():
    async def scenario():
        inner = SlowApp()
        inner.release.set()
        guard = HttpGuard(inner, "shop-ranking", max_concurrency=4, retry_after_s=1)
        for method, path in (("GET", V1), ("PUT", V1), ("GET", V2), ("DELETE", V2)):
            status, headers, body = await call(guard, method, path)
            assert (status, headers[b"allow"]) == (405, b"POST"), (method, path)
            assert path in body["error"]
        assert (await call(guard, "GET", "/v1/models/shop-ranking"))[0] == 200  # metadata
        assert inner.seen and len(inner.seen) == 1

    asyncio.run(scenario())


def test_v2_bodies_without_the_binary_header_are_json_and_binary_ones_are_untouched():
    async def scenario():
        inner = SlowApp()
        inner.release.set()
        guard = HttpGuard(inner, "shop-ranking", max_concurrency=4, retry_after_s=1)
        await call(guard, "POST", V2)  # kserve's InferenceRESTClient: no content type
        await call(guard, "POST", V2, [(b"content-type", b"application/octet-stream")])
        binary = [(b"inference-header-content-length", b"120"),
                  (b"content-type", b"application/octet-stream")]  # fmt: skip
        await call(guard, "POST", V2, binary)
        await call(guard, "POST", V1, [(b"content-type", b"text/plain")])
        kinds = [seen.get(b"content-type") for seen in inner.seen]
        assert kinds == [b"application/json", b"application/json",
                         b"application/octet-stream", b"text/plain"]  # fmt: skip

    asyncio.run(scenario())


def test_a_json_v2_body_that_is_not_an_object_is_a_400_before_kserve_sees_it():
    """kserve answers a bare `Infinity` (or any non-object) with a 500 from its error handler."""

    async def scenario():
        inner = SlowApp()
        inner.release.set()
        guard = HttpGuard(inner, "shop-ranking", max_concurrency=4, retry_after_s=1)
        for body, reason in (
            (b"Infinity", "holds Infinity"),
            (b"1.5", "not float"),
            (b"[1, 2]", "not list"),
            (b'{"": Infinity}', "holds Infinity"),
            (b'{"inputs": [{"data": [NaN]}]}', "holds NaN"),
            (b"{not json", "the body is not JSON"),
            (b"\xff", "the body is not JSON"),
        ):
            status, _, answer = await call(guard, "POST", V2, body=body)
            assert status == 400 and reason in answer["error"], (body, answer)
        assert inner.seen == [] and guard.in_flight == 0
        assert (await call(guard, "POST", V2, body=b'{"inputs": []}'))[0] == 200

    asyncio.run(scenario())


def test_past_the_limit_predictions_get_503_at_once_and_probes_still_answer():
    def shed() -> float:
        return metrics.SHED.labels("guarded")._value.get()

    async def scenario():
        inner = SlowApp()
        guard = HttpGuard(inner, "guarded", max_concurrency=2, retry_after_s=3)
        admitted = [asyncio.create_task(call(guard, "POST", p)) for p in (V1, V2)]
        await asyncio.sleep(0.01)
        assert guard.in_flight == 2 and metrics.IN_FLIGHT.labels("guarded")._value.get() == 2
        before = shed()
        status, headers, body = await asyncio.wait_for(call(guard, "POST", V1), 1)
        assert (status, headers[b"retry-after"]) == (503, b"3")
        assert "serving.max_concurrency" in body["error"] and shed() == before + 1
        probe = asyncio.create_task(call(guard, "GET", "/v2/health/ready"))
        await asyncio.sleep(0.01)
        assert not probe.done()  # reached the app (which holds it), not shed
        inner.release.set()
        assert [s for s, _, _ in await asyncio.gather(*admitted, probe)] == [200, 200, 200]
        assert guard.in_flight == 0
        assert (await call(guard, "POST", V1))[0] == 200  # admitted again once below the limit

    asyncio.run(scenario())
