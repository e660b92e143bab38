"""The shop's event stream as the simulator plays it (simulator/stream.py), without a broker: the
events keep the contract, and a point-in-time join of them gives exactly the rows the lake must
seal."""

import numpy as np
import pandas as pd
import pytest

import contract
from contract.events import (
    AFFINITY_FIELDS,
    ATTRIBUTION_WINDOW_S,
    DAY_S,
    encode_event,
    parse_event,
    span_of,
    span_start,
    validate_event,
)
from simulator.cli import main as sim_main
from simulator.generate import SimulationOptions, build_shop, truth_of_span
from simulator.stream import (
    MAX_SHOWN,
    TYPE_ORDER,
    PublishError,
    _Confirmed,
    day_events,
    publish,
    write_stream_manifest,
)
from simulator.truth import purchase_probability

OPTIONS = SimulationOptions(rows_per_span=3000, spans=2, seed=5)


@pytest.fixture(scope="module")
def day():
    return day_events(OPTIONS, 2)


def frame_of(events, kind):
    frame = pd.DataFrame([e for e in events if e["type"] == kind])
    return frame.drop(columns=["type", "schema_version"])


def test_same_seed_same_events_other_seed_or_span_other_events(day):
    again = day_events(OPTIONS, 2)
    assert again.events == day.events
    pd.testing.assert_frame_equal(again.rows, day.rows)
    other_seed = day_events(SimulationOptions(rows_per_span=3000, spans=2, seed=6), 2)
    assert other_seed.events != day.events
    assert day_events(OPTIONS, 1).events != day.events


def test_every_event_keeps_the_contract_and_the_order(day):
    for event in day.events:
        assert validate_event(event) == event  # already typed as the consumer will read it
    assert parse_event(encode_event(day.events[0])) == day.events[0]
    keys = [(e["event_time"], TYPE_ORDER[e["type"]]) for e in day.events]
    assert keys == sorted(keys)
    assert day.events[0]["event_time"] == span_start(2)
    seal = day.events[-1]
    assert seal["type"] == "seal" and [e["type"] for e in day.events].count("seal") == 1
    assert seal["event_time"] == span_start(3) + ATTRIBUTION_WINDOW_S
    for event in day.events:
        if event["type"] in ("user", "product", "impression"):
            assert span_of(event["event_time"]) == 2, event


def test_counts_match_the_seal_and_the_rows(day):
    seal = day.events[-1]
    impressions = frame_of(day.events, "impression")
    purchases = frame_of(day.events, "purchase")
    assert seal["span"] == 2
    assert seal["impressions"] == len(impressions) == len(day.rows) == OPTIONS.rows_per_span
    assert seal["purchases"] == len(purchases) == day.rows[contract.LABEL].sum()
    assert impressions["impression_id"].is_unique and purchases["impression_id"].is_unique
    assert set(purchases["impression_id"]) <= set(impressions["impression_id"])
    assert set(impressions["impression_id"]) == {f"s2-{i}" for i in range(len(impressions))}
    assert day.counts == pd.Series([e["type"] for e in day.events]).value_counts().to_dict()
    # every product in the day's opening snapshot
    products = frame_of(day.events, "product")
    opening = products[products["event_time"] == span_start(2)]
    assert sorted(opening["product_id"]) == sorted(f"p{p}" for p in range(OPTIONS.n_products))


def test_rows_are_the_point_in_time_join_of_the_events(day):
    """An independent join: the latest user and product event at or before each impression."""
    users = frame_of(day.events, "user").sort_values("event_time", kind="stable")
    products = frame_of(day.events, "product").sort_values("event_time", kind="stable")
    impressions = frame_of(day.events, "impression").sort_values("event_time", kind="stable")
    joined = pd.merge_asof(impressions, users, on="event_time", by="user_id")
    joined = pd.merge_asof(joined, products, on="event_time", by="product_id")
    affinity = joined[list(AFFINITY_FIELDS)].to_numpy()
    column = joined["category"].map({c: i for i, c in enumerate(contract.CATEGORIES)})
    joined["user_category_affinity"] = affinity[np.arange(len(joined)), column.to_numpy()]
    bought = set(frame_of(day.events, "purchase")["impression_id"])
    joined[contract.LABEL] = joined["impression_id"].isin(bought).astype(np.int64)
    expected = joined[list(contract.COLUMNS)].sort_values("impression_id", ignore_index=True)
    assert tuple(day.rows.columns) == contract.COLUMNS
    pd.testing.assert_frame_equal(day.rows, expected, check_dtype=False)


def test_visits_come_before_their_impressions_and_hours_are_utc(day):
    impressions = frame_of(day.events, "impression")
    seconds = impressions["event_time"] - span_start(2)
    assert (impressions["hour"] == seconds // 3600).all()
    users = frame_of(day.events, "user")
    joined = pd.merge_asof(
        impressions.sort_values("event_time"),
        users.sort_values("event_time").rename(columns={"event_time": "visit_time"}),
        left_on="event_time",
        right_on="visit_time",
        by="user_id",
    )
    delay = joined["event_time"] - joined["visit_time"]
    assert delay.between(1, MAX_SHOWN).all()  # strictly after the visit's own user event
    # a visit shows distinct positions
    assert not joined.duplicated(["user_id", "visit_time", "position"]).any()


def test_no_purchase_outside_the_attribution_window(day):
    impressions = frame_of(day.events, "impression").set_index("impression_id")["event_time"]
    purchases = frame_of(day.events, "purchase")
    delay = purchases["event_time"].to_numpy() - impressions[purchases["impression_id"]].to_numpy()
    assert (delay > 0).all() and (delay < ATTRIBUTION_WINDOW_S).all()
    assert purchases["event_time"].max() < day.events[-1]["event_time"]


def test_labels_follow_the_truth_and_the_ceiling_is_reported():
    day = day_events(SimulationOptions(rows_per_span=20_000, spans=1, seed=3), 1)
    truth = truth_of(day)
    rate = day.rows[contract.LABEL].mean()
    assert 0.04 < rate < 0.12 and day.report.purchase_rate == pytest.approx(rate)
    assert abs(rate - purchase_probability(day.rows, truth).mean()) < 0.01
    assert 0.74 < day.report.bayes_auc < 0.85
    assert day.report.rows == 20_000 and day.report.corrupt_rows == 0


def truth_of(day):
    from simulator.truth import TruthParams

    return TruthParams.from_dict(day.report.truth)


def test_sales_flip_during_the_day_and_cover_a_fifth_of_it():
    options = SimulationOptions(rows_per_span=500, spans=1, seed=9, products=2000)
    products = frame_of(day_events(options, 1).events, "product")
    start = span_start(1)
    flips = products[products["event_time"] > start]
    per_product = flips.groupby("product_id").size().reindex(products["product_id"].unique())
    assert 2.5 < per_product.fillna(0).mean() < 6  # a few times a day
    assert not products.duplicated(["product_id", "event_time"]).any()
    # share of product-time on sale, from the status timeline
    products = products.sort_values(["product_id", "event_time"])
    until = products.groupby("product_id")["event_time"].shift(-1).fillna(start + DAY_S)
    on_sale_time = ((until - products["event_time"]) * products["on_sale"]).sum()
    assert 0.17 < on_sale_time / (DAY_S * options.n_products) < 0.23
    # the price follows the sale
    shop = build_shop(options)
    index = products["product_id"].str[1:].astype(int).to_numpy()
    base = shop.product_price[index] * np.where(products["on_sale"] == 1, 0.8, 1.0)
    np.testing.assert_allclose(products["price"], np.round(base, 2))


def test_drift_moves_traffic_prices_and_truth():
    options = SimulationOptions(rows_per_span=20_000, spans=2, drift=0.6, drift_from_span=2)
    shop = build_shop(options)
    before, after = day_events(options, 1, shop), day_events(options, 2, shop)
    assert before.report.drift == 0.0 and after.report.drift == 0.6
    mobile = lambda d: (d.rows["device"] == "mobile").mean()  # noqa: E731
    assert mobile(after) - mobile(before) > 0.15
    # the same product costs more (the days' product mixes differ: popularity is heavy-tailed)
    price = lambda d: d.rows.groupby("product_id")["price"].median()  # noqa: E731
    assert (price(after) / price(before)).dropna().median() > 1.15
    assert after.report.truth["affinity"] < before.report.truth["affinity"]


def test_corrupt_rows_are_refused():
    with pytest.raises(ValueError, match="corrupt_fraction"):
        day_events(SimulationOptions(rows_per_span=100, spans=1, corrupt_fraction=0.1), 1)


def test_manifest_gives_the_truth_of_a_stream_span(tmp_path):
    days = [day_events(OPTIONS, span) for span in (1, 2)]
    write_stream_manifest(tmp_path, OPTIONS, [days[0].report])
    write_stream_manifest(tmp_path, OPTIONS, [days[1].report])  # one span at a time, as the CLI
    assert truth_of_span(tmp_path, 2).to_dict() == days[1].report.truth
    assert days[0].report.path == str(tmp_path / "span-1" / "impressions.csv")


def test_confirm_tracking_handles_single_multiple_and_out_of_order_acks():
    confirmed = _Confirmed()
    confirmed.ack(2, multiple=False)
    assert confirmed.count == 1
    confirmed.ack(1, multiple=False)
    confirmed.ack(5, multiple=False)
    assert (confirmed.below, confirmed.count) == (3, 3)
    confirmed.ack(4, multiple=True)
    assert (confirmed.below, confirmed.count) == (6, 5)
    confirmed.ack(10, multiple=True)
    assert (confirmed.count, confirmed.singles) == (10, set())


def test_publish_checks_its_arguments_and_names_an_unreachable_broker():
    assert publish([], "amqp://guest:guest@127.0.0.1:1/%2F", "shop.events") == 0
    with pytest.raises(ValueError, match="rate"):
        publish([{"type": "seal"}], "amqp://127.0.0.1:1/%2F", "x", rate=0)
    day = day_events(SimulationOptions(rows_per_span=200, spans=1), 1)
    with pytest.raises(PublishError, match=r"cannot connect.*0 of \d+ events.*guest:\*\*\*@"):
        publish(day.events, "amqp://guest:secret@127.0.0.1:1/%2F", "shop.events")


def test_stream_cli_rejects_bad_options_and_the_batch_cli_is_unchanged(tmp_path, capsys):
    url = "amqp://guest:guest@127.0.0.1:1/%2F"
    assert sim_main(["stream", "--broker", url, "--out", str(tmp_path), "--rows", "5"]) == 2
    assert "rows_per_span" in capsys.readouterr().err
    assert sim_main(["stream", "--broker", url, "--out", str(tmp_path), "--rate", "0"]) == 2
    assert "rate" in capsys.readouterr().err
    # an unreachable broker: the truth is written, the publish fails with the reason
    assert sim_main(["stream", "--broker", url, "--out", str(tmp_path), "--rows", "50"]) == 1
    assert "cannot connect" in capsys.readouterr().err
    assert truth_of_span(tmp_path, 1)
    assert sim_main(["--out", str(tmp_path / "batch"), "--rows", "100", "--spans", "1"]) == 0
    assert (tmp_path / "batch" / "span-1" / "impressions.csv").exists()
