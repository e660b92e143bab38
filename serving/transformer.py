"""`python -m serving.transformer`: the recommendation endpoint, a KServe transformer.

The shop's front end asks one thing: "this user, in this context, wants k products: which?".

    POST /v1/models/<name>:predict
    {"user_id": "u17", "context": {"device": "mobile", "hour": 20, "referrer": "search",
     "country": "DE"}, "k": 10, "candidates": ["p3", "p99"]}           (k, candidates optional)

The transformer (KServe's pattern for Feast) reads the user's profile from the online store
through Feast's feature server, takes the request's candidates or asks the retriever
(serving/retrieval.py) for some, builds one row per candidate from the catalog's features (read
from the online store every recommend.catalog_refresh_s), sends them as binary V2 tensors to the
predictor (serving/server.py), ranks by score and answers the top k with the model version, the
A/B variant and an impression id per product (`<request id>-<position>`) that outcomes join on.
Every answer is one line of the served log (the monitor's and the A/B report's input).

Answers that are not a ranking: an unknown user gets the most popular products, unscored, with
`"cold_start": true`; a request outside the contract is a 400 naming the field (413 for too many
candidates); a candidate the catalog does not know is left out and listed in `"skipped"`; an
unreachable feature server or predictor is a 503 with Retry-After, never a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from fastapi.responses import ORJSONResponse
from kserve import Model, ModelServer
from kserve import model_server as kserve_model_server
from kserve.model import PredictorConfig
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from contract.columns import CATEGORIES, COUNTRIES, DEVICES, HOURS, REFERRERS
from serving.http_guard import HttpGuard
from serving.listen import ALL_INTERFACES, listen_on
from serving.online_features import FeatureServerClient, OnlineStoreError
from serving.retrieval import Catalog, CatalogEntry, CategoryPopularity, Retriever

log = logging.getLogger("serving.transformer")

VERSION_HEADER, VARIANT_HEADER = "x-model-version", "x-ab-variant"
CONTEXT_FIELDS: dict[str, tuple] = {
    "device": DEVICES,
    "referrer": REFERRERS,
    "country": COUNTRIES,
}
REQUEST_FIELDS = {"user_id", "context", "k", "candidates", "request_id"}
MAX_ID_LENGTH = 256


class RecommendError(Exception):
    """A request the endpoint cannot answer; `status` is the HTTP status (4xx, or 503)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    default_k: int = 10
    max_k: int = 50
    max_candidates: int = 500


@dataclass(frozen=True)
class Recommendation:
    """A validated request."""

    request_id: str
    user_id: str
    context: dict[str, Any]
    k: int
    candidates: tuple[str, ...] | None


def parse_request(body: Any, limits: Limits, request_id: str | None = None) -> Recommendation:
    """The request, typed and inside the contract, or a RecommendError naming the field."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise RecommendError(f"the body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise RecommendError("the body must be a JSON object with 'user_id' and 'context'")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise RecommendError(f"unknown field(s) {unknown}; a request has {sorted(REQUEST_FIELDS)}")
    user_id = _id(body.get("user_id"), "user_id")
    context = body.get("context")
    if not isinstance(context, dict):
        raise RecommendError("field 'context': expected an object with " + _context_names())
    extra = sorted(set(context) - {*CONTEXT_FIELDS, "hour"})
    if extra:
        raise RecommendError(
            f"field 'context': unknown field(s) {extra}; it has {_context_names()}"
        )
    typed: dict[str, Any] = {}
    for name, values in CONTEXT_FIELDS.items():
        value = context.get(name)
        if value is None:
            raise RecommendError(f"field 'context.{name}': missing (one of {', '.join(values)})")
        if value not in values:
            raise RecommendError(
                f"field 'context.{name}': {_shown(value)} is not one of {', '.join(values)}"
            )
        typed[name] = value
    hour = context.get("hour")
    low, high = HOURS
    if isinstance(hour, bool) or not isinstance(hour, int) or not low <= hour <= high:
        raise RecommendError(f"field 'context.hour': {_shown(hour)} is not an integer {low}-{high}")
    typed["hour"] = hour
    k = body.get("k", limits.default_k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.max_k:
        raise RecommendError(f"field 'k': {_shown(k)} is not an integer 1-{limits.max_k}")
    candidates = body.get("candidates")
    if candidates is not None:
        if not isinstance(candidates, list) or not candidates:
            raise RecommendError("field 'candidates': expected a non-empty list of product ids")
        if len(candidates) > limits.max_candidates:
            raise RecommendError(
                f"field 'candidates': {len(candidates)} product ids; the limit is "
                f"{limits.max_candidates}",
                status=413,
            )
        candidates = tuple(
            dict.fromkeys(_id(c, f"candidates[{i}]") for i, c in enumerate(candidates))
        )
    rid = body.get("request_id") or request_id or uuid.uuid4().hex
    return Recommendation(_id(rid, "request_id"), user_id, typed, k, candidates)


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RecommendError(f"field {name!r}: expected a non-empty string, got {_shown(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise RecommendError(
            f"field {name!r}: {len(value)} characters; the limit is {MAX_ID_LENGTH}"
        )
    return value


def _context_names() -> str:
    return "device, hour, referrer, country"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


class CatalogFeatures:
    """Every catalog product's online features as columns, so a request's rows are a fancy
    index, not a loop: read from the online store as a whole every catalog_refresh_s."""

    def __init__(self, catalog: Catalog, rows: Mapping[str, Mapping[str, Any]]):
        self.catalog = catalog
        entries = catalog.entries
        self.position = {e.product_id: i for i, e in enumerate(entries)}
        known = [rows[e.product_id] for e in entries]
        self.columns: dict[str, np.ndarray] = {
            "product_id": np.array([e.product_id.encode() for e in entries], dtype=object),
            "category": np.array([r["category"].encode() for r in known], dtype=object),
            "brand": np.array([r["brand"].encode() for r in known], dtype=object),
            "price": np.array([r["price"] for r in known], dtype=np.float32),
            "on_sale": np.array([r["on_sale"] for r in known], dtype=np.int64),
            "rating": np.array([r["rating"] for r in known], dtype=np.float32),
        }
        index = {c: i for i, c in enumerate(CATEGORIES)}
        self.category_index = np.array([index[r["category"]] for r in known], dtype=np.int64)


def rows_by_id(ids: list[str], rows: list) -> dict[str, Mapping[str, Any]]:
    return {pid: row for pid, row in zip(ids, rows, strict=True) if row is not None}


def model_inputs(
    user: Mapping[str, Any], context: Mapping[str, Any], rows: np.ndarray,
    products: CatalogFeatures, user_id: str, position: int, inputs: Mapping[str, str],
) -> list[InferInput]:  # fmt: skip
    """One V2 tensor per input the predictor declares, for the candidates at `rows` of the
    catalog: product columns by index, the user's and the context's values repeated, and
    user_category_affinity as the user's affinity for each product's category (the feature's one
    definition: features/store.py category_affinity)."""
    n = len(rows)
    affinity = np.array([float(user[f"affinity_{c}"]) for c in CATEGORIES], dtype=np.float32)
    values: dict[str, np.ndarray] = {name: col[rows] for name, col in products.columns.items()}
    values["user_category_affinity"] = affinity[products.category_index[rows]]
    values["user_id"] = np.full(n, user_id.encode(), dtype=object)
    values["user_avg_price"] = np.full(n, user["user_avg_price"], dtype=np.float32)
    values["days_since_last_visit"] = np.full(n, user["days_since_last_visit"], dtype=np.int64)
    for name in ("device", "referrer", "country"):
        values[name] = np.full(n, context[name].encode(), dtype=object)
    values["hour"] = np.full(n, context["hour"], dtype=np.int64)
    values["position"] = np.full(n, position, dtype=np.int64)
    tensors = []
    for name, datatype in inputs.items():
        if name not in values:
            raise RuntimeError(f"the predictor takes {name!r}, which the transformer cannot build")
        array = values[name]
        if datatype == "INT32":
            array = array.astype(np.int32)
        elif datatype == "FP64":
            array = array.astype(np.float64)
        tensor = InferInput(name, [n], datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    return tensors


@dataclass(frozen=True)
class TransformerSettings:
    model_name: str
    predictor_host: str
    feature_server_url: str
    limits: Limits = Limits()
    retrieval_candidates: int = 100
    retrieval_categories: int = 3
    catalog_refresh_s: float = 5.0
    scoring_position: int = 1
    timeout_s: float = 2.0
    served_log: str | None = None
    retry_after_s: int = 1


@dataclass
class _Plan:
    """What preprocess hands to predict and postprocess."""

    request: Recommendation
    started: float
    cold_start: bool
    source: str  # "request", the retriever's name, or "popularity" (cold start)
    product_ids: list[str]
    skipped: list[str]
    timings: dict[str, float]


class Recommender(Model):
    def __init__(self, settings: TransformerSettings, retriever: Retriever | None = None):
        super().__init__(
            settings.model_name,
            PredictorConfig(
                settings.predictor_host,
                predictor_protocol="v2",
                predictor_request_timeout_seconds=max(1, round(settings.timeout_s)),
            ),
            return_response_headers=True,
        )
        self.settings = settings
        self.retriever = retriever or CategoryPopularity(settings.retrieval_categories)
        self.features = FeatureServerClient(settings.feature_server_url, settings.timeout_s)
        self.products: CatalogFeatures | None = None
        self._inputs: dict[str, str] | None = None
        self._served = _ServedLog(settings.served_log)

    # -- the catalog ---------------------------------------------------------------------------
    def refresh_catalog(self) -> None:
        """Reads the retrieval index and every product's features from the online store (sync:
        the watcher runs it in a thread; requests keep the previous catalog meanwhile)."""
        ids = self.features.catalog_ids_blocking()
        rows = self.features.products_blocking(ids)
        entries = tuple(
            CatalogEntry(pid, row["category"], float(row["popularity"]))
            for pid, row in zip(ids, rows, strict=True)
            if row is not None
        )
        if not entries:
            raise OnlineStoreError(f"none of the {len(ids)} indexed products has online features")
        self.products = CatalogFeatures(Catalog(entries), rows_by_id(ids, rows))

    def load(self) -> bool:
        self.refresh_catalog()
        log.info("catalog: %d products with online features", len(self.products.position))
        self.ready = True
        return True

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.catalog_refresh_s)
            try:
                await loop.run_in_executor(None, self.refresh_catalog)
            except Exception as err:  # keep the last good catalog
                log.warning("catalog not refreshed, serving the previous one: %s", err)

    async def _predictor_inputs(self) -> dict[str, str]:
        """name -> datatype of the predictor's inputs, from its V2 metadata (asked once)."""
        if self._inputs is None:
            url = f"http://{self.settings.predictor_host}/v2/models/{self.name}"
            try:
                async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
                    answer = await client.get(url)
                answer.raise_for_status()
            except httpx.HTTPError as err:
                raise RecommendError(f"predictor {url}: {err}", status=503) from err
            self._inputs = {t["name"]: t["datatype"] for t in answer.json()["inputs"]}
        return self._inputs

    # -- the request path ----------------------------------------------------------------------
    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        started = time.perf_counter()
        request = parse_request(payload, self.settings.limits, (headers or {}).get("x-request-id"))
        products = self.products
        try:
            user = await self.features.user(request.user_id)
        except OnlineStoreError as err:
            raise RecommendError(f"online store unavailable: {err}", status=503) from err
        looked_up = time.perf_counter()
        timings = {"lookup_ms": (looked_up - started) * 1e3}
        skipped: list[str] = []
        if user is None:
            ids, source = products.catalog.popular(request.k), "popularity"
        elif request.candidates is not None:
            ids = [c for c in request.candidates if c in products.position]
            skipped = [c for c in request.candidates if c not in products.position]
            source = "request"
            if not ids:
                raise RecommendError(
                    f"field 'candidates': none of the {len(skipped)} product ids is in the "
                    f"catalog (first: {_shown(skipped[0])})"
                )
        else:
            ids = self.retriever.propose(user, self.settings.retrieval_candidates, products.catalog)
            source = self.retriever.name
        plan = _Plan(request, started, user is None, source, ids, skipped, timings)
        if user is None:
            return plan
        rows = np.array([products.position[i] for i in ids], dtype=np.int64)
        inputs = model_inputs(
            user, request.context, rows, products, request.user_id,
            self.settings.scoring_position, await self._predictor_inputs(),
        )  # fmt: skip
        timings["build_ms"] = (time.perf_counter() - looked_up) * 1e3
        infer = InferRequest(
            self.name, inputs, request_id=request.request_id,
            parameters={"binary_data_output": True},
        )  # fmt: skip
        return plan, infer

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess built it from a validated request

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:  # fmt: skip
        if isinstance(payload, _Plan):  # cold start: nothing to score
            return payload, None, {}
        plan, infer = payload
        answer_headers: dict[str, str] = {}
        started = time.perf_counter()
        try:
            # Not Model._http_predict: kserve 0.15 adds "Content-Type: application/json" beside
            # its client's "content-type: application/octet-stream" for binary tensors, and the
            # predictor then parses the binary body as JSON (400).
            response = await self._http_client.infer(
                self._predictor_base_url,
                model_name=self.name,
                data=infer,
                headers={"x-request-id": plan.request.request_id},
                response_headers=answer_headers,
            )
        except httpx.HTTPStatusError as err:
            status = err.response.status_code
            if status == 503:
                raise RecommendError(
                    f"predictor overloaded: {err.response.text[:200]}", 503
                ) from err
            raise RecommendError(
                f"predictor answered {status}: {err.response.text[:300]}", status=502
            ) from err
        except httpx.HTTPError as err:
            raise RecommendError(f"predictor unreachable: {err}", status=503) from err
        plan.timings["predict_ms"] = (time.perf_counter() - started) * 1e3
        return plan, response, answer_headers

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        plan, response, answer_headers = result
        request = plan.request
        if response is None:
            ranked = [(pid, None) for pid in plan.product_ids[: request.k]]
            version = variant = None
        else:
            scores = _scores(response)
            order = np.argsort(-scores, kind="stable")[: request.k]  # ties: retrieval's order
            ranked = [(plan.product_ids[i], float(scores[i])) for i in order]
            version = answer_headers.get(VERSION_HEADER)
            variant = answer_headers.get(VARIANT_HEADER)
        products = [
            {
                "product_id": pid,
                "position": position,
                "score": score,
                "impression_id": f"{request.request_id}-{position}",
            }
            for position, (pid, score) in enumerate(ranked, start=1)
        ]
        plan.timings["total_ms"] = (time.perf_counter() - plan.started) * 1e3
        answer = {
            "request_id": request.request_id,
            "user_id": request.user_id,
            "model_version": version,
            "variant": variant,
            "cold_start": plan.cold_start,
            "candidates_from": plan.source,
            "candidates": len(plan.product_ids),
            "products": products,
        }
        if plan.skipped:
            answer["skipped"] = plan.skipped
        if response_headers is not None:
            response_headers["x-request-id"] = request.request_id
            if version:
                response_headers[VERSION_HEADER] = version
        self._served.write(answer, request.context, plan.timings)
        return answer


def _scores(response: InferResponse) -> np.ndarray:
    output = response.outputs[0]
    scores = np.asarray(output.as_numpy(), dtype=np.float64).reshape(-1)
    if not np.isfinite(scores).all():
        raise RecommendError("the predictor returned a non-finite score", status=502)
    return scores


class _ServedLog:
    """One JSON line per answered request: what was shown, where, by which model version."""

    def __init__(self, path: str | None):
        self._file = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the server)

    def write(self, answer: dict, context: dict, timings: dict) -> None:
        if self._file is None:
            return
        record = {"ts": time.time(), **answer, "context": context, "timings_ms": timings}
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()


async def _refused(_, exc: RecommendError) -> ORJSONResponse:
    log.info("refused (%d): %s", exc.status, exc)
    headers = {"retry-after": "1"} if exc.status == 503 else None
    return ORJSONResponse(status_code=exc.status, content={"error": str(exc)}, headers=headers)


def parse_args(argv: list[str] | None = None) -> tuple[TransformerSettings, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m serving.transformer", description=__doc__.split("\n")[0]
    )
    # kserve's own flags (KServe's controller passes --model_name, --predictor_host, --http_port)
    p.add_argument("--model_name", default="shop-ranking")
    p.add_argument("--predictor_host", required=True, help="host:port of the V2 predictor")
    p.add_argument("--http_port", type=int, default=8080)
    p.add_argument("--http-host", default=ALL_INTERFACES, help="127.0.0.1: loopback only")
    # ours: settings/recommend.py (transformer_flags) and the paths
    p.add_argument("--feature-server-url", required=True)
    p.add_argument("--default-k", type=int, default=10)
    p.add_argument("--max-k", type=int, default=50)
    p.add_argument("--max-candidates", type=int, default=500)
    p.add_argument("--retrieval-candidates", type=int, default=100)
    p.add_argument("--retrieval-categories", type=int, default=3)
    p.add_argument("--catalog-refresh-s", type=float, default=5.0)
    p.add_argument("--scoring-position", type=int, default=1)
    p.add_argument("--timeout-s", type=float, default=2.0)
    p.add_argument("--max-concurrency", type=int, default=64, help="requests in flight; 503 above")
    p.add_argument("--served-log", default=None, help="JSON lines file of the served lists")
    args, _ = p.parse_known_args(argv)  # kserve reads its own flags from sys.argv too
    settings = TransformerSettings(
        model_name=args.model_name,
        predictor_host=args.predictor_host,
        feature_server_url=args.feature_server_url,
        limits=Limits(args.default_k, args.max_k, args.max_candidates),
        retrieval_candidates=args.retrieval_candidates,
        retrieval_categories=args.retrieval_categories,
        catalog_refresh_s=args.catalog_refresh_s,
        scoring_position=args.scoring_position,
        timeout_s=args.timeout_s,
        served_log=args.served_log,
    )
    return settings, args


def main(argv: list[str] | None = None) -> None:
    settings, args = parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s transformer %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    model = Recommender(settings)
    model.load()  # fails here, before the port opens, without a feature server or an index
    listen_on(args.http_host)
    kserve_model_server.app.add_exception_handler(RecommendError, _refused)
    kserve_model_server.app.add_middleware(
        HttpGuard,
        model_name=settings.model_name,
        max_concurrency=args.max_concurrency,
        retry_after_s=settings.retry_after_s,
    )
    server = ModelServer(http_port=args.http_port, enable_grpc=False, workers=1,
                         enable_latency_logging=False)  # fmt: skip

    async def start_watching() -> None:
        asyncio.get_running_loop().create_task(model.watch())

    server.servers.append(start_watching())
    server.start([model])


if __name__ == "__main__":
    main()
