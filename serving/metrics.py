"""Prometheus metrics of the model server, served at /metrics next to kserve's own histograms.

kserve 0.15 already exports request_preprocess/predict/postprocess_seconds per model; these add
what a dashboard of a ranking service needs: requests and instances by version, protocol and
outcome, end-to-end latency, batch sizes, which version is live, and admission (requests in
flight, the limit, and those shed with a 503: serving/http_guard.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "shop_requests_total",
    "Prediction requests by outcome (ok, invalid, too_large, non_finite, error)",
    ["model", "protocol", "outcome"],
)
INSTANCES = Counter(
    "shop_instances_scored_total", "Instances scored", ["model", "version", "variant"]
)
LATENCY = Histogram(
    "shop_request_latency_seconds",
    "Request latency from validation to scores",
    ["model", "protocol"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "shop_model_batch_instances",
    "Instances per model call after batching concurrent requests",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
LIVE_VERSION = Gauge("shop_model_version", "Numbered version being served", ["model", "variant"])
RELOADS = Counter("shop_model_reloads_total", "Version loads by outcome", ["model", "outcome"])
IN_FLIGHT = Gauge(
    "shop_requests_in_flight", "Prediction requests admitted and not answered", ["model"]
)
MAX_CONCURRENCY = Gauge(
    "shop_max_concurrency", "Predictions admitted at once (serving.max_concurrency)", ["model"]
)
SHED = Counter(
    "shop_requests_shed_total",
    "Predictions answered 503 at once: the server was at its limit",
    ["model"],
)
