"""What one window of served traffic says: feature skew and drift, predictions, live quality.

Skew and drift are TFDV's, with the curated schema's own comparators (L-infinity for categories,
Jensen-Shannon divergence for numbers), so the thresholds live in one place for the pipeline's
span check and for served traffic. Skew compares the window with the statistics of the examples
the serving model was trained on (they travel inside the pushed version); drift compares it with
the previous window. The measured distance of every compared feature is kept, not only the
anomalies, so a report shows how close each feature is to its threshold. Served traffic carries
no label, so a label shift shows as the outcome rate of settled impressions against the rate of
the label in the serving model's training statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

import contract
from components.validation import DRIFT_PREFIX, label_rate
from contract.ranking import ndcg_at_k
from serving.ab_report import quality

SERVING_ENV = "SERVING"
# Score histogram edges on the logit scale: purchase probabilities crowd below 0.2.
SCORE_EDGES = 1.0 / (1.0 + np.exp(-np.linspace(-7.0, 3.0, 21)))
SCORE_EDGES[0], SCORE_EDGES[-1] = 0.0, 1.0
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class FeatureShift:
    """One feature's distance in one comparison (skew: vs training; drift: vs previous window)."""

    feature: str
    comparison: str  # "skew" | "drift"
    measure: str  # "L_INFTY" | "JENSEN_SHANNON_DIVERGENCE"
    value: float
    threshold: float

    @property
    def crossed(self) -> bool:
        return self.value > self.threshold

    @property
    def ratio(self) -> float:
        return self.value / self.threshold if self.threshold else float("inf")

    def line(self) -> str:
        measure = {"L_INFTY": "L-inf", "JENSEN_SHANNON_DIVERGENCE": "JS div"}.get(
            self.measure, self.measure
        )
        return (
            f"{self.feature}: {self.comparison} {measure} {self.value:.3f} "
            f"{'>' if self.crossed else '<='} {self.threshold:g} ({self.ratio:.1f}x)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "crossed": self.crossed, "ratio": self.ratio}


def serving_features(schema: schema_pb2.Schema) -> list[str]:
    """The features a request carries: the schema's, minus those not in SERVING."""
    return [f.name for f in schema.feature if SERVING_ENV not in f.not_in_environment]


def window_statistics(
    traffic: pd.DataFrame, features: list[str]
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of the window's features (default options, as StatisticsGen uses)."""
    missing = [name for name in features if name not in traffic]
    if missing:
        raise ValueError(f"request log lacks feature(s) {missing}: is it this model's log?")
    return tfdv.generate_statistics_from_dataframe(traffic[features].reset_index(drop=True))


def _shifts(anomalies: anomalies_pb2.Anomalies, comparison: str) -> list[FeatureShift]:
    out = []
    for info in anomalies.drift_skew_info:
        measurements = info.skew_measurements if comparison == "skew" else info.drift_measurements
        for m in measurements:
            out.append(
                FeatureShift(
                    feature=".".join(info.path.step),
                    comparison=comparison,
                    measure=anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type),
                    value=float(m.value),
                    threshold=float(m.threshold),
                )
            )
    return out


def schema_problems(anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """Schema (not comparator) anomalies, one line per feature."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = [
            r.description
            for r in info.reason
            if not anomalies_pb2.AnomalyInfo.Type.Name(r.type).startswith(DRIFT_PREFIX)
        ]
        if reasons:
            lines.append(f"{feature}: {'; '.join(reasons)}")
    return lines


def compare(
    window_stats: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    training_stats: statistics_pb2.DatasetFeatureStatisticsList | None,
    previous_stats: statistics_pb2.DatasetFeatureStatisticsList | None,
) -> tuple[list[FeatureShift], list[str]]:
    """(skew and drift distances of every compared feature, schema problems of the window)."""
    checked = tfdv.validate_statistics(
        window_stats, schema, environment=SERVING_ENV, previous_statistics=previous_stats
    )
    shifts = _shifts(checked, "drift") if previous_stats is not None else []
    if training_stats is not None:
        # TFDV's skew check: `statistics` is the training side, `serving_statistics` the served.
        skew = tfdv.validate_statistics(
            training_stats, schema, environment=SERVING_ENV, serving_statistics=window_stats
        )
        shifts = _shifts(skew, "skew") + shifts
    return shifts, schema_problems(checked)


def score_histogram(scores: np.ndarray) -> list[int]:
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=SCORE_EDGES)
    return [int(c) for c in counts]


def js_distance(p_counts: list[int], q_counts: list[int]) -> float | None:
    """Jensen-Shannon distance (base 2, 0..1) of two histograms over the same edges."""
    p, q = np.asarray(p_counts, float), np.asarray(q_counts, float)
    if p.sum() == 0 or q.sum() == 0:
        return None
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


def predictions(scores: np.ndarray, previous_histogram: list[int] | None) -> dict[str, Any]:
    """The score distribution and its shift against the previous window."""
    histogram = score_histogram(scores)
    quantiles = np.quantile(scores, [0.1, 0.5, 0.9, 0.99]) if len(scores) else [None] * 4
    return {
        "count": int(len(scores)),
        "mean": float(scores.mean()) if len(scores) else None,
        "quantiles": dict(zip(("p10", "p50", "p90", "p99"), map(_float, quantiles), strict=False)),
        "histogram": histogram,
        "edges": [float(e) for e in SCORE_EDGES],
        "shift_vs_previous": js_distance(histogram, previous_histogram)
        if previous_histogram
        else None,
    }


def live_quality(
    labelled: pd.DataFrame, window_rows: int, min_labelled: int, min_positives: int
) -> dict[str, Any]:
    """AUC, log loss and calibration of the predictions whose outcome has arrived.

    `judged` says whether there are enough outcomes (and purchases) for the figures to count.
    """
    y = labelled[contract.LABEL].to_numpy(dtype=np.int64) if len(labelled) else np.array([], int)
    p = labelled["score"].to_numpy(dtype=np.float64) if len(labelled) else np.array([], float)
    figures = quality(y, p)
    positives = int(y.sum())
    figures.update(
        coverage=len(y) / window_rows if window_rows else 0.0,
        positives=positives,
        mean_score=float(p.mean()) if len(p) else None,
        calibration_error=abs(figures["calibration"] - 1.0)
        if figures["calibration"] is not None
        else None,
        curve=calibration_curve(y, p),
        judged=len(y) >= min_labelled and positives >= min_positives,
    )
    return figures


def live_ranking(settled: pd.DataFrame, k: int, min_requests: int) -> dict[str, Any]:
    """NDCG@k of the served lists whose outcomes are all known (settled rows grouped by
    request_id, ranked by the served scores; contract.ranking's definition, as the Evaluator's).

    `judged` says whether at least `min_requests` lists had a purchase."""
    known = settled.dropna(subset=[contract.REQUEST_ID]) if len(settled) else settled
    if len(known):
        result = ndcg_at_k(
            known["score"].to_numpy(dtype=np.float64),
            known[contract.LABEL].to_numpy(dtype=np.float64),
            known[contract.REQUEST_ID].astype(str).to_numpy(),
            k,
        )
        ndcg, requests = (None if np.isnan(result.ndcg) else result.ndcg), result.requests
    else:
        ndcg, requests = None, 0
    return {"k": k, "ndcg": ndcg, "requests": requests, "judged": requests >= min_requests}


def outcome_rate(
    settled: pd.DataFrame,
    window_rows: int,
    training_stats: statistics_pb2.DatasetFeatureStatisticsList | None,
    min_settled: int,
) -> dict[str, Any]:
    """The purchase rate of the window's settled impressions against the training label rate.

    `judged` says whether both rates are known, on at least `min_settled` impressions.
    """
    y = settled[contract.LABEL].to_numpy(dtype=np.int64) if len(settled) else np.array([], int)
    rate = float(y.mean()) if len(y) else None
    training = label_rate(training_stats) if training_stats is not None else None
    ratio = rate / training if rate is not None and training else None
    return {
        "settled": int(len(y)),
        "coverage": len(y) / window_rows if window_rows else 0.0,
        "purchases": int(y.sum()),
        "rate": rate,
        "training_rate": training,
        "ratio": ratio,
        "judged": ratio is not None and len(y) >= min_settled,
    }


def calibration_curve(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    """Mean score vs purchase rate in score-quantile bins (the reliability diagram's points)."""
    if len(y) < CALIBRATION_BINS:
        return []
    order = np.argsort(p, kind="mergesort")
    return [
        {"mean_score": float(p[b].mean()), "purchase_rate": float(y[b].mean()), "rows": len(b)}
        for b in np.array_split(order, CALIBRATION_BINS)
    ]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
