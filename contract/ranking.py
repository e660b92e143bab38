"""How the shop judges a ranked list: NDCG@k per request, as TFMA's NDCG metric computes it.

The Evaluator gets NDCG@k from TFMA (`tfma.metrics.NDCG`, query_key = contract.REQUEST_ID). The
simulator's ceiling (the same rows ranked by the true probability) and the monitor's live NDCG
(the served lists, from the outcomes that arrived) need the same number outside TFMA, so its
definition lives here, once, below every layer that reports it:

    DCG@k  = sum over the first min(k, n) items ranked by score of gain_i / log2(i + 1)
    NDCG@k = DCG@k / DCG@k of the same items ranked by gain; the mean over requests

A request with no positive gain (nothing bought) is left out, as TFMA gives it weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankingQuality:
    """NDCG@k over the requests that count, and how many there were."""

    ndcg: float  # nan when no request has a positive gain
    requests: int  # requests with at least one positive gain
    k: int


def _dcg(gains_in_order: np.ndarray, rank: np.ndarray, starts: np.ndarray, k: int) -> np.ndarray:
    """Per request: sum of gain / log2(rank + 1) over ranks 1..k (rows grouped by request)."""
    discounted = np.where(rank <= k, gains_in_order / np.log2(rank + 1.0), 0.0)
    return np.add.reduceat(discounted, starts)


def ndcg_at_k(
    scores: np.ndarray, gains: np.ndarray, requests: np.ndarray, k: int
) -> RankingQuality:
    """Mean NDCG@k of the lists `requests` groups (one score and one gain per row, any order)."""
    if k < 1:
        raise ValueError(f"ndcg_at_k: k must be >= 1, got {k}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    gains = np.asarray(gains, dtype=np.float64).reshape(-1)
    requests = np.asarray(requests).reshape(-1)
    if not len(scores) == len(gains) == len(requests):
        raise ValueError(
            f"ndcg_at_k: {len(scores)} scores, {len(gains)} gains, {len(requests)} request ids"
        )
    if len(scores) == 0:
        return RankingQuality(float("nan"), 0, k)
    _, query = np.unique(requests, return_inverse=True)
    by_score = np.lexsort((-scores, query))
    by_gain = np.lexsort((-gains, query))
    starts = np.flatnonzero(np.r_[True, np.diff(query[by_score]) != 0])
    sizes = np.diff(np.r_[starts, len(query)])
    rank = np.arange(len(query)) - np.repeat(starts, sizes) + 1
    dcg = _dcg(gains[by_score], rank, starts, k)
    ideal = _dcg(gains[by_gain], rank, starts, k)
    counted = ideal > 0
    if not counted.any():
        return RankingQuality(float("nan"), 0, k)
    return RankingQuality(float(np.mean(dcg[counted] / ideal[counted])), int(counted.sum()), k)
