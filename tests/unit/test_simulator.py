import json

import numpy as np
import pandas as pd
import pytest

import contract
from simulator.cli import main as sim_main
from simulator.generate import (
    SimulationOptions,
    build_shop,
    generate_span,
    read_manifest,
    write_dataset,
)
from simulator.truth import TruthParams, bayes_auc, purchase_probability


def test_same_seed_same_rows_other_seed_other_rows():
    a, _ = generate_span(SimulationOptions(rows_per_span=2000, seed=1), 1)
    b, _ = generate_span(SimulationOptions(rows_per_span=2000, seed=1), 1)
    c, _ = generate_span(SimulationOptions(rows_per_span=2000, seed=2), 1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_same_shop_keeps_users_and_products_whatever_the_traffic():
    """More traffic from a run's options is the same shop (the notebooks' served days): without
    pinning, the shop's size follows rows_per_span and the prices differ from the training data."""
    trained = SimulationOptions(rows_per_span=4000, seed=3)
    more = trained.same_shop(rows_per_span=16_000, spans=3)
    assert (more.rows_per_span, more.spans, more.seed) == (16_000, 3, 3)
    assert (more.n_users, more.n_products) == (trained.n_users, trained.n_products)
    assert np.array_equal(build_shop(more).product_price, build_shop(trained).product_price)
    unpinned = SimulationOptions(rows_per_span=16_000, seed=3)
    assert unpinned.n_products != trained.n_products


def test_shop_rows_plays_another_volume_of_the_same_shop_and_rejects_a_bad_one(tmp_path, capsys):
    """`--shop-rows N` is same_shop from the CLI: a 3,000-row day of the 20,000-row shop's users
    and products (notebook 08 streams days to the model 02 trained)."""
    from simulator.cli import parse_stream_args, shop_options

    base = ["--broker", "amqp://x", "--out", str(tmp_path), "--rows", "3000"]
    day = shop_options(parse_stream_args([*base, "--shop-rows", "20000", "--seed", "5"]))
    trained = SimulationOptions(rows_per_span=20_000, seed=5)
    assert day.rows_per_span == 3000
    assert (day.n_users, day.n_products) == (trained.n_users, trained.n_products)
    assert shop_options(parse_stream_args(base)).n_products == 100  # its own, smaller shop
    assert sim_main(["--out", str(tmp_path / "bad"), "--rows", "3000", "--shop-rows", "5"]) == 2
    assert "--shop-rows: rows_per_span must be >= 10, got 5" in capsys.readouterr().err


def test_columns_domains_and_label_statistics():
    frame, report = generate_span(SimulationOptions(rows_per_span=50_000), 1)
    assert tuple(frame.columns) == contract.COLUMNS
    assert set(frame["device"]) == set(contract.DEVICES)
    assert set(frame["referrer"]) == set(contract.REFERRERS)
    assert set(frame["category"]) <= set(contract.CATEGORIES)
    assert set(frame["brand"]) <= set(contract.BRANDS)
    assert frame["hour"].between(*contract.HOURS).all()
    assert frame["position"].between(*contract.POSITIONS).all()
    assert frame["rating"].between(*contract.RATING).all()
    assert (frame["price"] > 0).all() and frame["user_category_affinity"].between(0, 1).all()
    assert frame["impression_id"].is_unique
    # A realistic purchase rate and a ceiling with real signal, well short of perfect.
    assert 0.04 < report.purchase_rate < 0.12
    assert 0.74 < report.bayes_auc < 0.85


def test_ground_truth_has_the_documented_effects():
    frame, _ = generate_span(SimulationOptions(rows_per_span=20_000), 1)
    p = purchase_probability(frame, TruthParams())
    high = frame["user_category_affinity"] > frame["user_category_affinity"].quantile(0.9)
    low = frame["user_category_affinity"] <= frame["user_category_affinity"].quantile(0.1)
    assert p[high.to_numpy()].mean() > 2 * p[low.to_numpy()].mean()
    # Observed purchase rates follow the truth (calibrated labels).
    assert abs(frame["purchased"].mean() - p.mean()) < 0.01
    # Random scores sit near 0.5; the truth's AUC is the ceiling.
    rng = np.random.default_rng(0)
    assert abs(bayes_auc({**frame}, frame["purchased"].to_numpy(), TruthParams()) - 0.5) > 0.2
    from sklearn.metrics import roc_auc_score

    assert abs(roc_auc_score(frame["purchased"], rng.random(len(frame))) - 0.5) < 0.05


def test_drift_moves_traffic_and_truth():
    options = SimulationOptions(rows_per_span=20_000, spans=2, drift=0.6, drift_from_span=2)
    shop = build_shop(options)
    before, report_before = generate_span(options, 1, shop)
    after, report_after = generate_span(options, 2, shop)
    assert report_before.drift == 0.0 and report_after.drift == 0.6
    mobile = lambda f: (f["device"] == "mobile").mean()  # noqa: E731
    assert mobile(after) - mobile(before) > 0.15
    assert after["price"].median() > 1.15 * before["price"].median()
    assert report_after.truth["price_above_usual"] < report_before.truth["price_above_usual"]


def test_corrupt_rows_break_the_export_in_every_way():
    options = SimulationOptions(rows_per_span=3000, spans=1, corrupt_fraction=0.01)
    frame, report = generate_span(options, 1)
    assert report.corrupt_rows == 30
    as_text = frame.astype(str)
    assert (as_text == "").any(axis=None)  # missing fields
    assert (as_text["price"] == "twelve").any()  # wrong type
    out_of_domain = (
        (as_text["device"] == "smart_fridge")
        | (as_text["hour"] == "27")
        | (as_text["rating"] == "9.5")
    )
    assert out_of_domain.any()


def test_label_shift_moves_the_purchase_rate_and_nothing_else():
    """A prior shift: the same rows (same seed), every purchase's odds times the factor."""
    plain, before = generate_span(SimulationOptions(rows_per_span=5000, spans=2), 2)
    shifted, after = generate_span(
        SimulationOptions(rows_per_span=5000, spans=2, label_shift=5.0, label_shift_spans=(2,)), 2
    )
    features = [c for c in contract.COLUMNS if c != contract.LABEL]
    pd.testing.assert_frame_equal(plain[features], shifted[features])
    assert after.label_shift == 5.0 and before.label_shift == 1.0
    assert 2.5 < after.purchase_rate / before.purchase_rate < 5.0
    assert after.truth["intercept"] == pytest.approx(before.truth["intercept"] + np.log(5.0))
    # only the named span shifts; by default the last one does
    assert SimulationOptions(spans=3, label_shift=5.0).label_shift_for(3) == 5.0
    assert SimulationOptions(spans=3, label_shift=5.0).label_shift_for(2) == 1.0


def test_write_dataset_spans_manifest_and_single_span_append(tmp_path):
    reports = write_dataset(SimulationOptions(rows_per_span=500, spans=2), tmp_path)
    assert [r.span for r in reports] == [1, 2]
    assert (tmp_path / "span-1" / "impressions.csv").exists()
    assert not list(tmp_path.rglob("*.partial"))
    write_dataset(
        SimulationOptions(rows_per_span=500, spans=3, drift=0.5, drift_from_span=3),
        tmp_path,
        only_spans=[3],
    )
    manifest = read_manifest(tmp_path)
    assert sorted(manifest["spans"]) == ["1", "2", "3"]
    assert manifest["spans"]["3"]["drift"] == 0.5 and manifest["spans"]["1"]["drift"] == 0.0
    json.dumps(manifest)  # plain JSON


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rows_per_span": 5}, "rows_per_span"),
        ({"drift": 2.0}, "drift"),
        ({"corrupt_fraction": 0.9}, "corrupt_fraction"),
        ({"label_shift": 0.0}, "label_shift"),
    ],
)
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SimulationOptions(**kwargs)


def test_cli_reports_bayes_auc_and_rejects_bad_options(tmp_path, capsys):
    assert sim_main(["--out", str(tmp_path), "--rows", "400", "--spans", "1"]) == 0
    assert "Bayes-optimal AUC" in capsys.readouterr().out
    assert sim_main(["--out", str(tmp_path), "--drift", "3"]) == 2
    assert "drift" in capsys.readouterr().err
