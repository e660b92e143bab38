"""The run summary's ceiling plugin: what the simulator knows that no other data source does.

Registered as the entry point `shop_ranking.ceilings: simulator` (pyproject.toml), so
pipelines/summary.py reports the Bayes-optimal AUC and NDCG@k of a run's eval rows without
importing the simulator: a pipeline on a shop's own export runs with the simulator absent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from simulator.generate import truth_of_span
from simulator.truth import bayes_auc, bayes_ndcg


def eval_ceiling(
    data_root: str, span: int, rows: Mapping[str, np.ndarray], labels: np.ndarray, ndcg_k: int
) -> dict[str, float] | None:
    """{"auc", "ndcg"}: the Bayes-optimal AUC and NDCG@ndcg_k (per request_id) of the eval rows
    when data_root holds a simulator manifest with this span's truth, else None (the data came
    from elsewhere)."""
    try:
        truth = truth_of_span(data_root, span)
    except (FileNotFoundError, KeyError):
        return None
    return {
        "auc": bayes_auc(rows, labels, truth),
        "ndcg": bayes_ndcg(rows, labels, truth, ndcg_k).ndcg,
    }
