"""The model server's section (serving/, its KServe InferenceService, the local A/B split) and
the server flags derived from it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from settings.section import Section


class ServingConfig(Section):
    """The model server (serving/), its KServe InferenceService and the local A/B split."""

    model_name: str = Field(
        "shop-ranking", description="URL name (/v1/models/<name>) and the InferenceService's name"
    )
    max_instances: int = Field(
        1000, ge=1, description="the most instances one request may carry (413 above it)"
    )
    max_string_length: int = Field(
        256,
        ge=1,
        description="characters a string feature without a domain (user_id, product_id) may "
        "have (400 above it); a feature with a domain is bounded by its longest value",
    )
    max_concurrency: int = Field(
        16,
        ge=1,
        description="predictions one server admits at once; one more is answered 503 with "
        "Retry-After at once, so the admitted keep their latency (>= scale_target)",
    )
    retry_after_s: int = Field(1, ge=0, description="the Retry-After header of a 503")
    batch_max_size: int = Field(
        64, ge=1, description="instances of concurrent requests merged into one call; 1 = off"
    )
    batch_timeout_ms: float = Field(
        0.0, ge=0, description="extra wait for more requests; 0 = batch only what queued up"
    )
    reload_interval_s: float = Field(
        2.0, gt=0, description="how often the server looks for a newer pushed version"
    )
    log_requests: bool = Field(True, description="one JSON line per prediction (request_log_path)")
    ab_candidate_percent: int = Field(
        0, ge=0, le=100, description="local A/B: share of users sent to the newest version"
    )
    ab_key: str = Field("user_id", description="request field whose hash assigns an A/B variant")
    # KServe (manifests/kserve/, and the manifest Pusher writes next to each pushed version)
    namespace: str = Field("kubeflow", description="namespace of the InferenceService")
    image: str = Field(
        "shop-ranking-serving:0.1.0",
        description="the image of the predictor and of the transformer (serving/Dockerfile)",
    )
    tf_serving_version: str = Field(
        "2.16.1", description="runtimeVersion of KServe's TensorFlow runtime (TF Serving)"
    )
    storage_uri: str | None = Field(
        None, description="where KServe reads the pushed versions; None = the PVC's serving_dir"
    )
    service_account: str | None = Field(
        None,
        description="the predictors' ServiceAccount: for an s3:// storage URI it names the Secret "
        "with the keys and endpoint KServe's storage initializer reads (manifests/kfp)",
    )
    canary_traffic_percent: int = Field(
        10, ge=0, le=100, description="share of traffic a newly pushed version gets at first"
    )
    # The replicas and scaling hold for the predictor and for the transformer in front of it,
    # each scaled on its own: one transformer request holds one predictor call at a time.
    min_replicas: int = Field(1, ge=0, description="per component (predictor, transformer)")
    max_replicas: int = Field(4, ge=1, description="per component (predictor, transformer)")
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    scale_target: int = Field(8, ge=1, description="per replica, in scale_metric's unit")
    cpu: float = Field(1, gt=0, description="predictor CPU request (limit: twice)")
    memory_gb: float = Field(2, gt=0, description="predictor memory request and limit")
    transformer_cpu: float = Field(
        0.5,
        gt=0,
        description="transformer CPU request (limit: twice); it waits on the feature server "
        "and the predictor and loads no model",
    )
    transformer_memory_gb: float = Field(
        1, gt=0, description="transformer memory request and limit (it holds the catalog)"
    )

    @model_validator(mode="after")
    def _replicas_in_order(self) -> ServingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        if self.scale_metric == "concurrency" and self.max_concurrency < self.scale_target:
            raise ValueError(
                f"max_concurrency {self.max_concurrency} is below scale_target "
                f"{self.scale_target}: a replica would shed requests before KServe scales out"
            )
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.model_name):
            raise ValueError(f"model_name {self.model_name!r}: a DNS-1123 label (lowercase, '-')")
        return self


# The model server's flags that come from the serving section, in one list: `shop-serve start`,
# the tests and the InferenceService manifests all pass them (serving/server.py parses them).
SERVER_FLAG_FIELDS = (
    "max_instances",
    "max_string_length",
    "max_concurrency",
    "retry_after_s",
    "batch_max_size",
    "batch_timeout_ms",
    "reload_interval_s",
)


def number_text(value: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5": flag values and Kubernetes quantities alike."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def server_flags(values: Mapping[str, Any]) -> list[str]:
    """`--max-instances=1000`, ... for the SERVER_FLAG_FIELDS in `values`."""
    return [
        f"--{name.replace('_', '-')}={number_text(values[name])}" for name in SERVER_FLAG_FIELDS
    ]
