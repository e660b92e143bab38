"""The feature store against a real Redis, on a hand-made lake whose point-in-time answers are
known: feature changes during the day, an impression exactly at a feature update's time, one
before its user's first profile, two impressions of one user at one instant (the rows Feast's
Dask offline store would collapse, feast#6787). Feast lives in .venv-features (numpy 2), so the
checks run there as subprocesses: `shop-features skew` and a small probe script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from repo_paths import REPO_ROOT

import contract
from contract.events import AFFINITY_FIELDS, EPOCH_S
from features.services import Redis

FEATURES_PYTHON = REPO_ROOT / ".venv-features" / "bin" / "python"
SPAN = 1

pytestmark = pytest.mark.skipif(
    not FEATURES_PYTHON.exists(), reason=f"{FEATURES_PYTHON} missing: run `make features-env`"
)


def at(seconds: float) -> float:
    """An event time (epoch seconds) `seconds` into span 1."""
    return EPOCH_S + seconds


def affinities(books: float) -> dict[str, float]:
    rest = round((1.0 - books) / (len(AFFINITY_FIELDS) - 1), 4)
    return {f: (books if f == "affinity_books" else rest) for f in AFFINITY_FIELDS}


# Feature events (as the consumer logs them): u1 changes at 7200.5, p1 goes on sale at 4000.123457.
USERS = [
    {"user_id": "u1", "event_time": at(3600.25), "user_avg_price": 20.0, "days_since_last_visit": 3, **affinities(0.5)},
    {"user_id": "u1", "event_time": at(7200.5), "user_avg_price": 25.0, "days_since_last_visit": 0, **affinities(0.6)},
    {"user_id": "u2", "event_time": at(5000.0), "user_avg_price": 40.0, "days_since_last_visit": 12, **affinities(0.1)},
]  # fmt: skip
PRODUCT = {"brand": "books_brand_1", "rating": 4.2, "popularity": 3.5}
PRODUCTS = [
    {"product_id": "p1", "event_time": at(0.0), "category": "books", "price": 10.0, "on_sale": 0, **PRODUCT},
    {"product_id": "p2", "event_time": at(0.0), "category": "toys", "brand": "toys_brand_0", "price": 20.0, "on_sale": 0, "rating": 3.1, "popularity": 1.0},
    {"product_id": "p1", "event_time": at(4000.123457), "category": "books", "price": 8.0, "on_sale": 1, **PRODUCT},
]  # fmt: skip
CONTEXT = {"device": "mobile", "referrer": "search", "country": "DE", "position": 1}
# impression_id -> (user, product, event time, the features it must get)
IMPRESSIONS = {
    "i1": ("u1", "p1", at(3700.0), {"user_avg_price": 20.0, "price": 10.0, "on_sale": 0}),
    "i2": ("u1", "p1", at(4000.123457), {"user_avg_price": 20.0, "price": 8.0, "on_sale": 1}),
    "i3": ("u1", "p2", at(7200.5), {"user_avg_price": 25.0, "price": 20.0, "on_sale": 0}),
    "i4": ("u2", "p2", at(4500.0), {"user_avg_price": None, "price": 20.0, "on_sale": 0}),
    "i5": ("u2", "p1", at(6000.0), {"user_avg_price": 40.0, "price": 8.0, "on_sale": 1}),
    "i6": ("u1", "p1", at(7200.5), {"user_avg_price": 25.0, "price": 8.0, "on_sale": 1}),
}


def event_timestamps(seconds: pd.Series) -> pd.Series:
    """features.store.event_timestamps (which this environment cannot import: Feast)."""
    micros = np.round(seconds.to_numpy(dtype=float) * 1e6).astype("int64")
    return pd.Series(pd.to_datetime(micros, unit="us", utc=True), index=seconds.index)


def feature_frame(events: list[dict]) -> pd.DataFrame:
    """Profile events as the consumer's feature-log rows (features/consumer.py profile_frame)."""
    frame = pd.DataFrame(events)
    frame["event_timestamp"] = event_timestamps(frame.pop("event_time"))
    return frame


def training_rows() -> pd.DataFrame:
    """The correct sealed span, computed by hand from the events above."""
    users = {u["user_id"]: u for u in USERS}
    products = {p["product_id"]: p for p in PRODUCTS}
    rows = []
    for impression_id, (user, product, when, _) in IMPRESSIONS.items():
        u = max((e for e in USERS if e["user_id"] == user and e["event_time"] <= when),
                key=lambda e: e["event_time"], default=None)  # fmt: skip
        p = max((e for e in PRODUCTS if e["product_id"] == product and e["event_time"] <= when),
                key=lambda e: e["event_time"])  # fmt: skip
        assert users[user] and products[product]
        rows.append(
            {
                "impression_id": impression_id,
                "request_id": f"r-{impression_id}",  # one page per impression here
                "user_id": user,
                "product_id": product,
                **{k: p[k] for k in ("category", "brand", "price", "on_sale", "rating")},
                "user_avg_price": u and u["user_avg_price"],
                "user_category_affinity": u and u[f"affinity_{p['category']}"],
                "days_since_last_visit": u and u["days_since_last_visit"],
                "hour": int((when - EPOCH_S) // 3600),
                **CONTEXT,
                contract.LABEL: 0,
            }
        )
    return pd.DataFrame(rows)[list(contract.COLUMNS)].astype({"days_since_last_visit": "Int64"})


@pytest.fixture(scope="module")
def redis():
    with Redis(REPO_ROOT / "outputs" / "services" / "redis-feature-store") as server:
        yield server


@pytest.fixture
def lake(tmp_path):
    """The hand-made lake: feature logs in two batch files each (plus a writer's temporary file,
    which readers must skip), the staged impressions and the sealed span."""
    root = tmp_path / "lake"
    for view, events in (("user_profile", USERS), ("product_catalog", PRODUCTS)):
        folder = root / "features" / view
        folder.mkdir(parents=True)
        frame = feature_frame(events)
        # Parquet 2.6 keeps nanoseconds (pyarrow 10, this environment's, writes 2.4 by default).
        frame.iloc[:2].to_parquet(folder / "c1-000001.parquet", index=False, version="2.6")
        frame.iloc[2:].to_parquet(folder / "c1-000002.parquet", index=False, version="2.6")
        (folder / ".c1-000003.parquet.1a2b3c4d.partial").write_bytes(b"half a parquet file")
    staged = root / "_stream" / f"span-{SPAN}" / "impression"
    staged.mkdir(parents=True)
    pd.DataFrame(
        [
            {"event_time": when, "impression_id": i, "request_id": f"r-{i}", "user_id": u,
             "product_id": p,
             "hour": int((when - EPOCH_S) // 3600), **CONTEXT}
            for i, (u, p, when, _) in IMPRESSIONS.items()
        ]
    ).to_parquet(staged / "c1-000001.parquet", index=False)  # fmt: skip
    (root / f"span-{SPAN}").mkdir()
    training_rows().to_csv(root / f"span-{SPAN}" / "impressions.csv", index=False)
    return root


def overrides(lake: Path, redis: Redis) -> list[str]:
    return [
        f"data.root={lake}",
        f"output_root={lake.parent / 'outputs'}",
        f"stream.redis={redis.address}",
    ]


def features_python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(FEATURES_PYTHON), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


PROBE = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from features import store as fs
    from settings import load_config

    config = load_config("local", json.loads(sys.argv[1]))
    store = fs.open_store(config)
    logs = json.loads(sys.argv[2])
    # The live store as the consumer fills it, the newest batch first: older writes must not win.
    for view, events in reversed(list(logs.items())):
        for event in reversed(events):
            frame = pd.DataFrame([event])
            frame["event_timestamp"] = fs.event_timestamps(frame.pop("event_time"))
            fs.write_online(store, view, frame)
    entity = pd.DataFrame(json.loads(sys.argv[3]))
    entity["event_timestamp"] = fs.event_timestamps(entity.pop("event_time"))
    arrow = fs.training_features(store, entity, timestamps=True)
    feast = fs.training_features(store, entity, engine="feast")
    same = arrow.drop(columns=[c for c in arrow if c.endswith("__event_timestamp")]).equals(feast)
    online = fs.online_features(store, ["u1", "u2", "nobody"], ["p1", "p1", "p2"], timestamps=True)
    out = {
        "training": json.loads(arrow.to_json(orient="records", date_unit="ns")),
        "engines_agree": bool(same),
        "online": json.loads(online.to_json(orient="records", date_unit="s")),
        "online_dtypes": {c: str(t) for c, t in online.dtypes.items()},
    }
    print(json.dumps(out))
    """
)


def test_point_in_time_join_and_online_reads(lake, redis):
    """training_features: the newest event at or before each impression (exact times included),
    nulls before the first, one row per impression in the input's order, the same answer from
    Feast's own offline join; write_online keeps the newest event whatever the write order."""
    redis.command("FLUSHDB")
    impressions = [{"impression_id": i, "user_id": u, "product_id": p, "event_time": t}
                   for i, (u, p, t, _) in reversed(IMPRESSIONS.items())]  # fmt: skip
    logs = {"user_profile": USERS, "product_catalog": PRODUCTS}
    done = features_python(
        "-c", PROBE, json.dumps(overrides(lake, redis)), json.dumps(logs), json.dumps(impressions)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = result["training"]
    assert [r["impression_id"] for r in rows] == [i["impression_id"] for i in impressions]
    for row in rows:
        expected = IMPRESSIONS[row["impression_id"]][3]
        assert {k: row[k] for k in expected} == expected, row["impression_id"]
        for view in ("user_profile", "product_catalog"):
            used = row[f"{view}__event_timestamp"]
            assert used is None or used <= pd.Timestamp(row["event_timestamp"]).value
    by_id = {r["impression_id"]: r for r in rows}
    assert by_id["i4"]["days_since_last_visit"] is None  # before u2's first profile
    assert by_id["i3"]["user_category_affinity"] == affinities(0.6)["affinity_toys"]
    assert by_id["i6"]["user_category_affinity"] == 0.6  # i3 and i6: one user, one instant
    assert result["engines_agree"]
    u1, u2, nobody = result["online"]
    assert (u1["user_avg_price"], u1["price"], u1["on_sale"]) == (25.0, 8.0, 1)
    assert u1["user_profile__event_timestamp"] == int(at(7200.5))  # whole seconds from Feast
    assert (u2["user_avg_price"], u2["user_category_affinity"]) == (40.0, 0.1)
    assert nobody["user_avg_price"] is None and nobody["price"] == 20.0
    assert result["online_dtypes"]["days_since_last_visit"] == "Int64"


def skew(lake: Path, redis: Redis, *extra: str) -> tuple[int, dict]:
    sets = [f"--set={o}" for o in overrides(lake, redis)]
    done = features_python(
        "-m", "features.cli", "skew", *sets, f"--span={SPAN}", "--checkpoints=10", *extra
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def fill_live_store(lake: Path, redis: Redis, skip: int | None = None) -> None:
    """The live store (db 0) as the consumer leaves it, optionally missing PRODUCTS[skip]."""
    script = textwrap.dedent(
        """
        import json, sys
        import pandas as pd
        from features import store as fs
        from settings import load_config
        store = fs.open_store(load_config("local", json.loads(sys.argv[1])))
        for view, events in json.loads(sys.argv[2]).items():
            frame = pd.DataFrame(events)
            frame["event_timestamp"] = fs.event_timestamps(frame.pop("event_time"))
            fs.write_online(store, view, frame)
        """
    )
    products = [p for i, p in enumerate(PRODUCTS) if i != skip]
    logs = {"user_profile": USERS, "product_catalog": products}
    done = features_python("-c", script, json.dumps(overrides(lake, redis)), json.dumps(logs))
    assert done.returncode == 0, done.stderr[-3000:]


def test_skew_check_passes_on_a_consistent_span(lake, redis):
    redis.command("FLUSHALL")
    fill_live_store(lake, redis)
    code, report = skew(lake, redis)
    assert code == 0 and report["ok"], json.dumps(report, indent=1)
    assert report["rows"] == len(IMPRESSIONS)
    assert report["checkpoints"]["count"] == len(IMPRESSIONS)  # fewer rows than checkpoints: all
    assert report["no_future"] == {
        "future": 0,
        "without_feature": {"user_profile": 1, "product_catalog": 0},
        "examples": [],
    }
    assert report["live"]["entities"] == {"user_profile": 2, "product_catalog": 2}
    assert "db1:" not in str(redis.command("INFO", "keyspace"))  # the scratch db is left empty


def test_skew_check_reports_a_skewed_training_row(lake, redis):
    """A training row with the price from before p1's sale (the bug a join on the wrong side of
    the boundary makes) and a live store that missed p1's sale event: both named."""
    redis.command("FLUSHALL")
    fill_live_store(lake, redis, skip=2)
    rows = training_rows()
    rows.loc[rows["impression_id"] == "i5", "price"] = 10.0
    rows.to_csv(lake / f"span-{SPAN}" / "impressions.csv", index=False)
    code, report = skew(lake, redis)
    assert code == 1 and not report["ok"]
    expected = {"impression_id": "i5", "column": "price", "training": 10.0, "store": 8.0}
    assert report["point_in_time"]["examples"] == [expected]
    assert report["checkpoints"]["examples"] == [expected]
    assert report["feast_offline"]["examples"] == [expected]
    assert report["live"]["by_column"] == {
        "price": 1,
        "on_sale": 1,
        "product_catalog__event_timestamp": 1,
    }
    assert {e["product_id"] for e in report["live"]["examples"]} == {"p1"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
