"""Small generated data and the settings every e2e run shares (local runner and KFP harness)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import contract
from components.signatures import score_raw_rows
from contract import layout
from settings import PipelineConfig, load_config

ROWS = 4000
SEED = 7
# ~2 epochs of the 3,200 train rows (more overfits the hashed ids); ~150-row device slices are
# too noisy for a per-slice bar.
SMALL_RUN = [
    "training.train_steps=60",
    "training.eval_steps=5",
    "training.batch_size=128",
    "evaluation.min_auc=0.6",
    "evaluation.min_ndcg=0.5",  # ~50 eval pages with a purchase: NDCG@10 moves by ~0.04
    "evaluation.min_slice_auc=null",
]


def config_for(workspace: Path, *extra: str, env: str = "local") -> PipelineConfig:
    return load_config(
        env,
        [f"data.root={workspace / 'data'}", f"output_root={workspace / 'outputs'}", *SMALL_RUN]
        + list(extra),
    )


def serving_versions(config: PipelineConfig) -> list[str]:
    return layout.local_versions(config.serving_dir)


def score_raw_span(model_dir: str, span_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of a pushed model called through its raw-feature signature."""
    rows = pd.read_csv(span_dir / "impressions.csv")
    return rows[contract.LABEL].to_numpy(), score_raw_rows(model_dir, rows)
