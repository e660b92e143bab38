"""The served traffic of one window, and the outcomes that have arrived for it.

The server appends one JSON line per prediction (serving/request_log.py); in a cluster every pod
writes its own file, so a window is read from every `<model>*.jsonl` under the log folder.
Outcomes come from the shop's delayed feed (simulator/outcomes.py): an outcome counts only once
it has arrived, i.e. when the prediction's time plus its delay is not after `as_of`. Purchases
arrive first, so the outcome *rate* is read from settled impressions only: those whose
attribution window has closed by `as_of`, when every outcome, bought or not, is known.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd

import contract
from simulator.outcomes import ATTRIBUTION_WINDOW_S

ID_COLUMN = "impression_id"


@dataclass(frozen=True)
class Window:
    """[start, end) in epoch seconds."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError(f"window end {self.end} must be after its start {self.start}")

    @property
    def name(self) -> str:
        """A folder name that sorts by time: the window's end, UTC."""
        return datetime.fromtimestamp(self.end, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")

    def describe(self) -> str:
        fmt = "%Y-%m-%d %H:%M:%S"
        start = datetime.fromtimestamp(self.start, timezone.utc).strftime(fmt)
        end = datetime.fromtimestamp(self.end, timezone.utc).strftime(fmt)
        return f"{start} .. {end} UTC ({(self.end - self.start) / 60:.1f} min)"


def log_files(log_dir: str, model_name: str) -> list[str]:
    return sorted(glob.glob(os.path.join(log_dir, f"{model_name}*.jsonl")))


def read_window(files: list[str], window: Window) -> pd.DataFrame:
    """Predictions logged in the window: ts, id, version, variant, score and one column per
    feature. A half-written last line (the server is still appending) is skipped."""
    rows = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith("\n"):
                    continue
                try:
                    record = json.loads(line)
                    ts = float(record["ts"])
                except (ValueError, KeyError, TypeError) as err:
                    raise ValueError(f"{path}:{number}: not a prediction log line ({err})") from err
                if window.start <= ts < window.end:
                    rows.append(
                        {
                            **record["features"],
                            "ts": ts,
                            "id": record.get("id"),
                            "version": str(record.get("version")),
                            "variant": record.get("variant"),
                            "score": float(record["score"]),
                        }
                    )
    return pd.DataFrame(rows)


def read_outcome_feed(outcomes_dir: str) -> pd.DataFrame:
    """Every outcome file under the folder (impression_id, purchased, delay_s)."""
    from simulator.outcomes import read_outcomes

    files = sorted(glob.glob(os.path.join(outcomes_dir, "*.csv")))
    if not files:
        return pd.DataFrame(columns=[ID_COLUMN, contract.REQUEST_ID, contract.LABEL, "delay_s"])
    return pd.concat([read_outcomes(path) for path in files], ignore_index=True)


def arrived_outcomes(traffic: pd.DataFrame, feed: pd.DataFrame, as_of: float) -> pd.DataFrame:
    """The window's predictions that have an outcome by `as_of`: score, purchased (0/1)."""
    if traffic.empty or feed.empty or "id" not in traffic:
        return pd.DataFrame(columns=["score", contract.LABEL])
    joined = traffic[["id", "ts", "score"]].merge(
        feed, left_on="id", right_on=ID_COLUMN, how="inner"
    )
    joined = joined[joined["ts"] + joined["delay_s"] <= as_of]
    return joined[["score", contract.LABEL]].reset_index(drop=True)


def settled_outcomes(traffic: pd.DataFrame, feed: pd.DataFrame, as_of: float) -> pd.DataFrame:
    """The window's predictions whose attribution window has closed by `as_of`: purchased (0/1),
    score and request_id (the list it was shown in). Unlike arrived_outcomes, not biased towards
    purchases (which arrive within hours): every row of a settled list has its outcome."""
    columns = [contract.LABEL, "score", contract.REQUEST_ID]
    if traffic.empty or feed.empty or "id" not in traffic:
        return pd.DataFrame(columns=columns)
    settled = traffic[traffic["ts"] + ATTRIBUTION_WINDOW_S <= as_of]
    joined = settled[["id", "score"]].merge(feed, left_on="id", right_on=ID_COLUMN, how="inner")
    if contract.REQUEST_ID not in joined:  # a feed written before requests were recorded
        joined[contract.REQUEST_ID] = None
    return joined[columns].reset_index(drop=True)
