"""NDCG@k per request (contract.ranking): TFMA's definition, the ceiling and the live figure."""

import numpy as np
import pandas as pd
import pytest

import contract
from contract.ranking import ndcg_at_k
from monitoring import checks
from simulator.generate import PAGE_SIZE, SimulationOptions, generate_span
from simulator.truth import TruthParams, bayes_ndcg


def test_ndcg_by_hand_leaves_out_requests_without_a_purchase():
    # a: the purchase ranked third (DCG 1/log2(4) = 0.5); b: nothing bought (left out); c: first.
    requests = np.array(["a", "a", "a", "b", "b", "c", "c"])
    gains = np.array([1, 0, 0, 0, 0, 0, 1])
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.2, 0.8])
    assert ndcg_at_k(scores, gains, requests, 10).ndcg == pytest.approx(0.75)
    assert ndcg_at_k(scores, gains, requests, 10).requests == 2
    assert ndcg_at_k(scores, gains, requests, 1).ndcg == pytest.approx(0.5)  # a: 0, c: 1
    shuffled = np.random.default_rng(0).permutation(len(scores))  # row order does not matter
    assert ndcg_at_k(scores[shuffled], gains[shuffled], requests[shuffled], 10).ndcg == (
        pytest.approx(0.75)
    )
    assert np.isnan(ndcg_at_k(scores, np.zeros(7), requests, 10).ndcg)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(scores, gains, requests, 0)


def test_the_true_probability_ranks_better_than_position_and_random_order():
    frame, _ = generate_span(SimulationOptions(rows_per_span=20_000, seed=4), 1)
    rows = {c: frame[c].to_numpy() for c in frame}
    labels = frame[contract.LABEL].to_numpy()
    ceiling = bayes_ndcg(rows, labels, TruthParams(), 10)
    requests = frame[contract.REQUEST_ID].to_numpy()
    random = ndcg_at_k(np.random.default_rng(1).random(len(frame)), labels, requests, 10)
    by_position = ndcg_at_k(-frame["position"].to_numpy(), labels, requests, 10)
    assert ceiling.requests == random.requests > 0.5 * len(frame) / PAGE_SIZE
    assert ceiling.ndcg > by_position.ndcg + 0.05 > random.ndcg + 0.05


def test_pages_share_user_and_context_and_show_distinct_products_at_distinct_positions():
    frame, _ = generate_span(SimulationOptions(rows_per_span=2005, seed=4), 1)
    pages = frame.groupby(contract.REQUEST_ID, sort=False)
    assert pages.ngroups == 201 and pages.size().iloc[-1] == 5  # the last page cut short
    shared = ["user_id", "device", "hour", "referrer", "country", "days_since_last_visit"]
    assert (pages[shared].nunique() == 1).all().all()
    assert (pages["product_id"].nunique() == pages.size()).all()
    assert (pages["position"].nunique() == pages.size()).all()


def test_live_ranking_counts_settled_lists_and_judges_on_enough_of_them():
    settled = pd.DataFrame(
        {
            contract.LABEL: [1, 0, 0, 1, 0, 0],
            "score": [0.9, 0.2, 0.1, 0.1, 0.8, 0.3],
            contract.REQUEST_ID: ["r1", "r1", "r1", "r2", "r2", None],  # None: an old feed's row
        }
    )
    live = checks.live_ranking(settled, 10, min_requests=2)
    expected = (1.0 + 1 / np.log2(3)) / 2  # r1 first, r2 second (the None row left out)
    assert live == {"k": 10, "ndcg": pytest.approx(expected), "requests": 2, "judged": True}
    assert not checks.live_ranking(settled, 10, min_requests=3)["judged"]
    assert checks.live_ranking(settled.iloc[:0], 10, 1) == {
        "k": 10, "ndcg": None, "requests": 0, "judged": False
    }  # fmt: skip
