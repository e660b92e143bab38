"""The hidden ground-truth purchase model.

P(purchase) is a logistic function of observed columns only, so the Bayes-optimal score of any row
(from the data files or from a pipeline's eval split) can be recomputed from the row itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

import contract
from contract.ranking import RankingQuality, ndcg_at_k

DEVICE_EFFECT = {"mobile": -0.35, "desktop": 0.25, "tablet": 0.0}
REFERRER_EFFECT = {"direct": 0.0, "search": 0.35, "email": 0.55, "social": -0.45, "ads": -0.2}
EVENING_HOURS = (19, 23)


@dataclass(frozen=True)
class TruthParams:
    """Coefficients of the logistic ground truth; concept drift changes some of them."""

    intercept: float = -2.1
    affinity: float = 3.0
    price_above_usual: float = -1.6
    price_below_usual: float = 0.4
    recency: float = -0.45
    position: float = -0.09
    rating: float = 0.45
    on_sale: float = 0.5
    mobile_evening: float = 0.9
    email_affinity: float = 1.2

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> TruthParams:
        return cls(**{k: float(v) for k, v in values.items()})


def _column(rows: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(rows[name]).reshape(-1)


def _lookup(values: np.ndarray, table: Mapping[str, float]) -> np.ndarray:
    """Vectorised dict lookup (values outside the table are a caller error: KeyError names it)."""
    uniques, inverse = np.unique(values, return_inverse=True)
    return np.array([table[u] for u in uniques], dtype=np.float64)[inverse]


def purchase_logit(rows: Mapping[str, np.ndarray], params: TruthParams) -> np.ndarray:
    """Ground-truth log-odds for a batch of rows given as column arrays."""
    affinity = _column(rows, "user_category_affinity").astype(np.float64)
    price = _column(rows, "price").astype(np.float64)
    usual = _column(rows, "user_avg_price").astype(np.float64)
    relative_price = np.log(price / usual)
    device = _column(rows, "device").astype(str)
    referrer = _column(rows, "referrer").astype(str)
    hour = _column(rows, "hour").astype(np.int64)
    evening = (hour >= EVENING_HOURS[0]) & (hour <= EVENING_HOURS[1])
    return (
        params.intercept
        + params.affinity * affinity
        + params.price_above_usual * np.maximum(relative_price, 0.0)
        + params.price_below_usual * np.maximum(-relative_price, 0.0)
        + params.recency * np.log1p(_column(rows, "days_since_last_visit").astype(np.float64))
        + params.position * (_column(rows, "position").astype(np.float64) - 1.0)
        + params.rating * (_column(rows, "rating").astype(np.float64) - 3.5)
        + params.on_sale * _column(rows, "on_sale").astype(np.float64)
        + _lookup(device, DEVICE_EFFECT)
        + _lookup(referrer, REFERRER_EFFECT)
        + params.mobile_evening * ((device == "mobile") & evening)
        + params.email_affinity * (referrer == "email") * affinity
    )


def purchase_probability(rows: Mapping[str, np.ndarray], params: TruthParams) -> np.ndarray:
    """Ground-truth P(purchase | row): the Bayes-optimal ranking score."""
    return 1.0 / (1.0 + np.exp(-purchase_logit(rows, params)))


def bayes_auc(rows: Mapping[str, np.ndarray], labels: np.ndarray, params: TruthParams) -> float:
    """AUC of the ground-truth probabilities: no model can rank these rows better in expectation."""
    return float(roc_auc_score(np.asarray(labels).reshape(-1), purchase_probability(rows, params)))


def bayes_ndcg(
    rows: Mapping[str, np.ndarray], labels: np.ndarray, params: TruthParams, k: int = 10
) -> RankingQuality:
    """NDCG@k of each request's rows ranked by the true probability (contract.ranking): the best
    any ranker can reach on these lists in expectation."""
    return ndcg_at_k(
        purchase_probability(rows, params), labels, _column(rows, contract.REQUEST_ID), k
    )
