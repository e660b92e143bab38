"""The shop's verdict on a served list, which only a simulation can give.

The ground truth reads observed columns only (simulator/truth.py), so the true purchase
probability of any product for a user in a context follows from the features the online store
serves for the pair. That makes any served list judgeable without waiting for outcomes: its
expected NDCG@k, with each product's true probability as its gain, against the best list the
same candidates allow (ranked by that probability). A live shop has only the delayed outcomes
(monitoring's live NDCG); this is what those outcomes estimate, without their noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from contract.ranking import ndcg_at_k
from simulator.truth import TruthParams, purchase_probability

# What the truth reads of a row beside the context (simulator/truth.py purchase_logit).
ROW_COLUMNS = (
    "user_category_affinity", "price", "user_avg_price", "days_since_last_visit", "rating",
    "on_sale",
)  # fmt: skip


def true_probability(
    rows: pd.DataFrame, context: Mapping[str, Any], truth: TruthParams, position: int = 1
) -> np.ndarray:
    """P(purchase) of each row (a user's features for one product each) shown at `position` in
    `context`: the gain that ranks the rows as well as anyone can. Rows with a missing feature
    (a product or user the store lacks) raise, naming the column."""
    missing = [c for c in ROW_COLUMNS if c not in rows or rows[c].isna().any()]
    if missing:
        raise ValueError(f"true_probability: rows lack values for {missing}")
    n = len(rows)
    columns = {c: rows[c].to_numpy() for c in ROW_COLUMNS}
    for name in ("device", "referrer", "hour"):
        columns[name] = np.full(n, context[name])
    columns["position"] = np.full(n, position)
    return purchase_probability(columns, truth)


def expected_ndcg(served: Sequence[str], pool: Sequence[str], gains: np.ndarray, k: int) -> float:
    """NDCG@k of the `served` order (product ids, best first) over the candidate `pool` with
    `gains` (one per pool product, in pool order): 1.0 is the best list the pool allows. The
    list must hold k products (or the whole pool), as the transformer's answers do."""
    pool = list(pool)
    if len(set(pool)) != len(pool):
        raise ValueError("expected_ndcg: the pool repeats a product id")
    outside = sorted(set(served) - set(pool))
    if outside:
        raise ValueError(f"expected_ndcg: served products {outside[:5]} are not in the pool")
    if len(served) < min(k, len(pool)):  # the pool's unserved products would fill the top k
        raise ValueError(f"expected_ndcg: {len(served)} served products for k={k}")
    rank = {pid: i for i, pid in enumerate(served)}
    scores = np.array([len(served) - rank[p] if p in rank else 0 for p in pool], dtype=float)
    quality = ndcg_at_k(scores, np.asarray(gains), np.zeros(len(pool)), k)
    return quality.ndcg
