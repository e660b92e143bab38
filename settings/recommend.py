"""The recommendation endpoint's section: the KServe transformer (serving/transformer.py) that turns
"this user, in this context, wants k products" into a ranked list, and the flags derived from it.

The transformer reads the user's and the products' features from the online store through Feast's
feature server (HTTP), proposes candidates when the request names none (serving/retrieval.py),
scores them on the predictor over V2 and answers the top k. On KServe it is the
InferenceService's transformer; locally `shop-serve recommend` starts it beside the predictor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from settings.section import Section


class RecommendConfig(Section):
    """The transformer in front of the predictor: request limits, retrieval, the online store."""

    feature_server_url: str = Field(
        "http://127.0.0.1:6566",
        description="Feast's feature server (`feast serve`), which reads the online store (Redis)",
    )
    feature_server_port: int = Field(
        6566, ge=1, le=65535, description="the port `shop-serve recommend` starts it on, locally"
    )
    default_k: int = Field(10, ge=1, description="products answered when the request names no k")
    max_k: int = Field(50, ge=1, description="the largest k a request may ask for (400 above)")
    max_candidates: int = Field(
        500, ge=1, description="candidate product ids one request may name (413 above)"
    )
    retrieval_candidates: int = Field(
        100, ge=1, description="candidates the retrieval step proposes when the request names none"
    )
    retrieval_categories: int = Field(
        3, ge=1, description="the user's strongest categories retrieval draws candidates from"
    )
    catalog_refresh_s: float = Field(
        5.0,
        gt=0,
        description="how often the transformer re-reads every product's features from the "
        "online store: the most a served price or sale flag lags the stream",
    )
    scoring_position: int = Field(
        1,
        ge=1,
        description="the display position every candidate is scored at: the model learned "
        "position's effect, so ranking at one fixed position compares products alone",
    )
    timeout_s: float = Field(
        2.0,
        gt=0,
        description="the feature server's and the predictor's answer time (then a 503, retry-after)",
    )
    max_concurrency: int = Field(
        64,
        ge=1,
        description="requests in flight per transformer replica; above it a 503 with Retry-After "
        "(each holds one predictor call and two feature-server reads)",
    )
    log_served: bool = Field(
        True, description="one JSON line per answered request: the list, positions, version"
    )

    @model_validator(mode="after")
    def _k_fits(self) -> RecommendConfig:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k {self.default_k} is above max_k {self.max_k}")
        if self.max_k > self.max_candidates:
            raise ValueError(f"max_k {self.max_k} is above max_candidates {self.max_candidates}")
        return self


# The transformer's flags that come from this section, in one list: `shop-serve recommend`, the
# tests, the benchmark and the InferenceService manifest pass them (serving/transformer.py parses).
TRANSFORMER_FLAG_FIELDS = (
    "feature_server_url",
    "default_k",
    "max_k",
    "max_candidates",
    "retrieval_candidates",
    "retrieval_categories",
    "catalog_refresh_s",
    "scoring_position",
    "timeout_s",
    "max_concurrency",
)


def transformer_flags(values: Mapping[str, Any]) -> list[str]:
    """`--feature-server-url=...`, `--max-k=50`, ... for the TRANSFORMER_FLAG_FIELDS in `values`."""
    from settings.serving import number_text

    flags = []
    for name in TRANSFORMER_FLAG_FIELDS:
        value = values[name]
        text = value if isinstance(value, str) else number_text(value)
        flags.append(f"--{name.replace('_', '-')}={text}")
    return flags
