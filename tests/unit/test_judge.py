"""simulator/judge.py: a served list's expected NDCG@k against the best list of its pool, from
the ground truth of the features the online store serves."""

import numpy as np
import pandas as pd
import pytest

from simulator.judge import ROW_COLUMNS, expected_ndcg, true_probability
from simulator.truth import TruthParams, purchase_probability

CONTEXT = {"device": "mobile", "hour": 20, "referrer": "search"}


def _rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(n)],
            "user_category_affinity": rng.uniform(0, 1, n),
            "price": rng.uniform(5, 200, n),
            "user_avg_price": np.full(n, 40.0),
            "days_since_last_visit": np.full(n, 3),
            "rating": rng.uniform(1, 5, n),
            "on_sale": rng.integers(0, 2, n),
        }
    )


def test_true_probability_is_the_truths_on_the_rows_in_the_context_at_a_position():
    rows, truth = _rows(20), TruthParams()
    expected = purchase_probability(
        {
            **{c: rows[c].to_numpy() for c in ROW_COLUMNS},
            **{name: np.full(20, value) for name, value in CONTEXT.items()},
            "position": np.full(20, 3),
        },
        truth,
    )
    np.testing.assert_allclose(true_probability(rows, CONTEXT, truth, position=3), expected)
    # the position lowers every row's odds alike: the order of the pool does not change
    at_one = true_probability(rows, CONTEXT, truth)
    assert (at_one > expected).all()
    assert list(np.argsort(at_one)) == list(np.argsort(expected))


def test_a_row_without_a_feature_is_refused_naming_the_column():
    rows = _rows(3)
    rows.loc[1, "price"] = np.nan
    with pytest.raises(ValueError, match=r"\['price'\]"):
        true_probability(rows, CONTEXT, TruthParams())
    with pytest.raises(ValueError, match="rating"):
        true_probability(rows.drop(columns="rating"), CONTEXT, TruthParams())


def test_the_best_list_scores_one_the_worst_less_and_the_order_matters():
    pool = [f"p{i}" for i in range(6)]
    gains = np.array([0.9, 0.1, 0.5, 0.05, 0.7, 0.2])
    best = [pool[i] for i in np.argsort(-gains)]
    assert expected_ndcg(best[:3], pool, gains, 3) == pytest.approx(1.0)
    worst = best[::-1][:3]
    low = expected_ndcg(worst, pool, gains, 3)
    ideal = 0.9 + 0.7 / np.log2(3) + 0.5 / 2
    assert low == pytest.approx((0.05 + 0.1 / np.log2(3) + 0.2 / 2) / ideal)
    swapped = [best[1], best[0], best[2]]
    assert low < expected_ndcg(swapped, pool, gains, 3) < 1.0


def test_a_served_product_outside_the_pool_or_a_repeated_pool_is_an_error():
    with pytest.raises(ValueError, match="not in the pool"):
        expected_ndcg(["p9"], ["p1", "p2"], np.array([0.1, 0.2]), 1)
    with pytest.raises(ValueError, match="repeats"):
        expected_ndcg(["p1"], ["p1", "p1"], np.array([0.1, 0.2]), 1)
    with pytest.raises(ValueError, match="1 served products for k=2"):
        expected_ndcg(["p1"], ["p1", "p2", "p3"], np.array([0.1, 0.2, 0.3]), 2)
