"""Delayed outcomes: what the shop learns about each impression, and when.

A purchase is logged some time after the impression (exponential delay, mean
`PURCHASE_DELAY_MEAN_S`); that an impression led to no purchase is only known once its attribution
window (`ATTRIBUTION_WINDOW_S`) has closed. So a monitor looking at the last hour of traffic sees
a few purchases and almost no confirmed non-purchases: live quality needs outcomes that have
*arrived*, which is what `delay_s` lets it compute (arrived when served_at + delay_s <= now).

The feed lives beside the spans, `<root>/outcomes/span-N.csv` (impression_id, request_id,
purchased, delay_s), outside the `span-N/` folders the pipeline reads; request_id groups the
outcomes into the lists they were shown in (live NDCG@k).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import contract

OUTCOMES_DIR = "outcomes"
ATTRIBUTION_WINDOW_S = 24 * 3600
PURCHASE_DELAY_MEAN_S = 2 * 3600
COLUMNS = ("impression_id", contract.REQUEST_ID, contract.LABEL, "delay_s")


def outcomes_path(root: str | Path, span: int) -> Path:
    return Path(root) / OUTCOMES_DIR / f"span-{span}.csv"


def delayed_outcomes(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """One row per impression with a valid label; rows whose label a corrupt export broke are
    left out (the shop never learns their outcome)."""
    labels = pd.to_numeric(frame[contract.LABEL], errors="coerce")
    valid = labels.notna().to_numpy() & frame["impression_id"].astype(str).ne("").to_numpy()
    purchased = labels.to_numpy()[valid].astype(np.int64)
    delay = np.where(
        purchased == 1,
        np.minimum(
            rng.exponential(PURCHASE_DELAY_MEAN_S, size=len(purchased)), ATTRIBUTION_WINDOW_S
        ),
        ATTRIBUTION_WINDOW_S,
    )
    return pd.DataFrame(
        {
            "impression_id": frame["impression_id"].to_numpy()[valid],
            contract.REQUEST_ID: frame[contract.REQUEST_ID].to_numpy()[valid],
            contract.LABEL: purchased,
            "delay_s": np.round(delay).astype(np.int64),
        }
    )


def write_outcomes(root: str | Path, span: int, frame: pd.DataFrame, seed: int) -> Path:
    """Writes the span's outcome feed (temporary file, then rename)."""
    target = outcomes_path(root, span)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    delayed_outcomes(frame, np.random.default_rng([seed, span, 1])).to_csv(partial, index=False)
    partial.replace(target)
    return target


def read_outcomes(path: str | Path) -> pd.DataFrame:
    """The feed as a frame; a missing file or column is named."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no outcome feed (generate the span with shop-sim)")
    frame = pd.read_csv(path, dtype={"impression_id": str, contract.REQUEST_ID: str})
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return frame
