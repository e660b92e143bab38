"""The training/serving skew check: for a sealed span, the features the online store would have
served at each impression's time equal the training row's, and no training feature comes from
the future.

Four checks, one report (`skew_check`, or `shop-features skew --span N` printing JSON):
- point_in_time: every row of span-N/impressions.csv against the store's point-in-time join of
  the lake's feature logs (training_features) at the impression's time (from the staged
  impression events, _stream/span-N/impression/).
- no_future: the feature event each row used is at or before the impression's time.
- checkpoints: K impressions spread over the day (seeded), in time order. The feature logs are
  materialized by Feast into a fresh online store (a scratch registry and another Redis
  database, flushed first: the live store is not touched) up to each checkpoint's time; what
  Feast's Redis returns then for its user and product must equal the training row.
- live: the live online store (database 0) holds the newest logged event of a sample of the
  span's users and products (run it after the stream has been consumed).
A mismatch names the check, the column and the impression_id (or entity). The report also
holds `feast_offline`, Feast's own offline join (engine="feast") on the checkpoints, as a second
opinion that does not decide `ok`: Feast 0.67's Dask join is itself wrong at times (it returned
an older value than the newest event for 5 of 100k synthetic rows; see features/store.py).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

import contract
from contract.events import DAY_S, span_start
from features import store as fstore
from features.lake import Lake
from settings import PipelineConfig

EXAMPLES = 20  # mismatches listed per check (all are counted)


def skew_check(
    config: PipelineConfig,
    span: int,
    *,
    checkpoints: int = 20,
    seed: int = 0,
    live_sample: int = 100,
    redis_db: int = 1,
) -> dict[str, Any]:
    """The report of the four checks for sealed span `span`; report["ok"] when all pass."""
    if redis_db == 0:
        raise ValueError("skew_check: redis_db 0 is the live store; the check flushes redis_db")
    started = time.monotonic()
    seconds: dict[str, float] = {}
    rows = _training_rows(config, span)
    scratch_root = _scratch_root(config)
    with tempfile.TemporaryDirectory(prefix="skew-", dir=scratch_root) as scratch:
        fresh = fstore.open_store(
            config, registry_path=os.path.join(scratch, "registry.db"), redis_db=redis_db
        )
        _flush(config.stream.redis, redis_db)
        tick = time.monotonic()
        joined = fstore.training_features(
            fresh, rows[["impression_id", "user_id", "product_id", "event_timestamp"]],
            timestamps=True,
        )  # fmt: skip
        seconds["point_in_time"] = time.monotonic() - tick
        report: dict[str, Any] = {
            "span": span,
            "rows": len(rows),
            "point_in_time": _compared(rows, joined, "impression_id"),
            "no_future": _no_future(rows, joined),
        }
        tick = time.monotonic()
        chosen = _checkpoints(rows, span, checkpoints, seed)
        report["checkpoints"] = _online_at(fresh, rows, chosen)
        report["feast_offline"] = _compared(
            chosen,
            fstore.training_features(
                fresh, chosen[["impression_id", "user_id", "product_id", "event_timestamp"]],
                engine="feast",
            ),
            "impression_id",
        )  # fmt: skip
        seconds["checkpoints"] = time.monotonic() - tick
        _flush(config.stream.redis, redis_db)
    if live_sample > 0:
        tick = time.monotonic()
        report["live"] = _live(fstore.open_store(config), rows, live_sample, seed)
        seconds["live"] = time.monotonic() - tick
    report["ok"] = _all_passed(report)
    report["seconds"] = {
        k: round(v, 2) for k, v in {**seconds, "total": time.monotonic() - started}.items()
    }
    return report


def _training_rows(config: PipelineConfig, span: int) -> pd.DataFrame:
    """The sealed rows with their impression times (from the staged impression events)."""
    lake = Lake(config.data.root)
    path = lake.span_file(span)
    if not path.exists():
        raise FileNotFoundError(f"span {span} is not sealed: {path} does not exist")
    rows = pd.read_csv(path)
    missing = [c for c in contract.COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {missing}")
    staged, _ = lake.staged(span, "impression")
    if staged.empty:
        raise FileNotFoundError(
            f"span {span}: no staged impressions under {lake.staging(span, 'impression')} "
            "(the impressions' times come from there)"
        )
    times = staged[["impression_id", "event_time"]]
    rows = rows.merge(times, on="impression_id", how="left", validate="one_to_one")
    untimed = rows.loc[rows["event_time"].isna(), "impression_id"].tolist()
    if untimed:
        raise ValueError(
            f"span {span}: {len(untimed)} sealed rows have no staged impression, e.g. {untimed[:5]}"
        )
    rows["event_timestamp"] = fstore.event_timestamps(rows["event_time"])
    return rows.sort_values(["event_timestamp", "impression_id"], kind="stable").reset_index(
        drop=True
    )


def _scratch_root(config: PipelineConfig) -> str | None:
    if "://" in config.output_root:
        return None
    root = os.path.join(config.output_root, "features")
    os.makedirs(root, exist_ok=True)
    return root


def _flush(address: str, db: int) -> None:
    import redis

    host, port = address.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), db=db)
    try:
        client.flushdb()
    finally:
        client.close()


def _differs(expected: pd.Series, got: pd.Series) -> np.ndarray:
    """Where two columns disagree: null vs value, numbers beyond 1e-9, strings unequal."""
    expected, got = expected.reset_index(drop=True), got.reset_index(drop=True)
    missing_e, missing_g = expected.isna().to_numpy(), got.isna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(expected) and pd.api.types.is_numeric_dtype(got)
    if numeric:
        e = expected.to_numpy(dtype=float, na_value=np.nan)
        g = got.to_numpy(dtype=float, na_value=np.nan)
        unequal = ~np.isclose(e, g, rtol=0.0, atol=1e-9, equal_nan=True)
    else:
        unequal = expected.astype(str).to_numpy() != got.astype(str).to_numpy()
    return (unequal & ~(missing_e & missing_g)) | (missing_e != missing_g)


def _plain(value: Any) -> Any:
    """A value for JSON (numpy scalars, NaN/NA as None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _compared(
    expected: pd.DataFrame,
    got: pd.DataFrame,
    id_column: str,
    columns: Sequence[str] = fstore.MODEL_FEATURES,
) -> dict[str, Any]:
    """Column by column, row by row (same order): the mismatches with the training value."""
    mismatches: list[dict[str, Any]] = []
    by_column: dict[str, int] = {}
    ids = expected[id_column].reset_index(drop=True)
    for column in columns:
        bad = np.flatnonzero(_differs(expected[column], got[column]))
        if len(bad):
            by_column[column] = len(bad)
        for i in bad[: EXAMPLES - len(mismatches)] if len(mismatches) < EXAMPLES else []:
            mismatches.append(
                {
                    id_column: ids[i],
                    "column": column,
                    "training": _plain(expected[column].iloc[i]),
                    "store": _plain(got[column].iloc[i]),
                }
            )
    return {
        "rows": len(expected),
        "mismatches": sum(by_column.values()),
        "by_column": by_column,
        "examples": mismatches,
    }


def _no_future(rows: pd.DataFrame, joined: pd.DataFrame) -> dict[str, Any]:
    """The feature events the point-in-time join used are at or before the impression."""
    report: dict[str, Any] = {"future": 0, "without_feature": {}, "examples": []}
    when = rows["event_timestamp"].reset_index(drop=True)
    for view in fstore.VIEW_FEATURES:
        stamp = joined[f"{view}__{fstore.TIMESTAMP}"].reset_index(drop=True)
        future = np.flatnonzero((stamp > when).to_numpy(dtype=bool, na_value=False))
        report["future"] += len(future)
        report["without_feature"][view] = int(stamp.isna().sum())
        for i in future[:EXAMPLES]:
            report["examples"].append(
                {
                    "impression_id": rows["impression_id"].iloc[i],
                    "view": view,
                    "impression_time": when[i].isoformat(),
                    "feature_time": stamp[i].isoformat(),
                }
            )
    return report


def _checkpoints(rows: pd.DataFrame, span: int, count: int, seed: int) -> pd.DataFrame:
    """One impression drawn (seeded) from each of `count` equal slices of the span's day; every
    row when there are no more rows than checkpoints."""
    if count <= 0:
        return rows.iloc[:0]
    if len(rows) <= count:
        return rows
    rng = np.random.default_rng(seed)
    seconds = (rows["event_time"] - span_start(span)).to_numpy()
    slices = np.clip((seconds / DAY_S * count).astype(int), 0, count - 1)
    picked = [rng.choice(np.flatnonzero(slices == s)) for s in range(count) if (slices == s).any()]
    return rows.iloc[sorted(picked)].reset_index(drop=True)


def _online_at(store, rows: pd.DataFrame, chosen: pd.DataFrame) -> dict[str, Any]:
    """Materializes up to each checkpoint's time (incrementally, in time order) and compares
    what Redis returns with the training row, and the event it came from with the offline one."""
    served: list[pd.DataFrame] = []
    previous = fstore.EPOCH
    for _, row in chosen.iterrows():
        moment = row["event_timestamp"]  # a pandas Timestamp: nanoseconds kept for the bound
        fstore.materialize(store, end=moment, start=previous)
        previous = moment
        served.append(
            fstore.online_features(store, [row["user_id"]], [row["product_id"]], timestamps=True)
        )
    if not served:
        return {"count": 0, "impressions": [], **_compared(chosen, chosen, "impression_id")}
    online = pd.concat(served, ignore_index=True)
    report = {
        "count": len(chosen),
        "impressions": chosen["impression_id"].tolist(),
        **_compared(chosen, online, "impression_id"),
    }
    return report


def _live(store, rows: pd.DataFrame, sample: int, seed: int) -> dict[str, Any]:
    """A sample of the span's users and products: live Redis against the newest logged event."""
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"mismatches": 0, "by_column": {}, "examples": [], "entities": {}}
    for view, key in fstore.JOIN_KEYS.items():
        ids = np.sort(rows[key].dropna().unique())
        ids = [str(i) for i in rng.choice(ids, size=min(sample, len(ids)), replace=False)]
        report["entities"][view] = len(ids)
        if not ids:
            continue
        log = fstore.read_feature_log(store, view, keys=ids)
        newest = log.groupby(key, sort=False).tail(1).set_index(key).reindex(ids).reset_index()
        other = "product_id" if key == "user_id" else "user_id"
        pairs = {key: ids, other: [rows[other].iloc[0]] * len(ids)}
        online = fstore.online_features(
            store, pairs["user_id"], pairs["product_id"], timestamps=True
        )
        columns = list(fstore.VIEW_FEATURES[view])
        compared = _compared(newest, online, key, columns)
        stamp = f"{view}__{fstore.TIMESTAMP}"
        # Feast's online response carries whole seconds.
        late = _differs(_seconds(newest[fstore.TIMESTAMP]), _seconds(online[stamp]))
        if late.any():
            compared["mismatches"] += int(late.sum())
            compared["by_column"][stamp] = int(late.sum())
        report["mismatches"] += compared["mismatches"]
        report["by_column"].update(compared["by_column"])
        report["examples"] += compared["examples"][: EXAMPLES - len(report["examples"])]
    return report


def _seconds(stamps: pd.Series) -> pd.Series:
    return (pd.to_datetime(stamps, utc=True) - fstore.EPOCH) // pd.Timedelta(seconds=1)


def _all_passed(report: dict[str, Any]) -> bool:
    return (
        report["point_in_time"]["mismatches"] == 0
        and report["no_future"]["future"] == 0
        and report["checkpoints"]["mismatches"] == 0
        and report.get("live", {"mismatches": 0})["mismatches"] == 0
    )
