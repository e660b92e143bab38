"""Small generated data and the settings every e2e run shares (local runner and KFP harness)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

import contract
from components.signatures import OUTPUT_KEY, RAW_SIGNATURE
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
    "evaluation.min_slice_auc=null",
]


def config_for(workspace: Path, *extra: str, env: str = "local") -> PipelineConfig:
    return load_config(
        env,
        [f"data.root={workspace / 'data'}", f"output_root={workspace / 'outputs'}", *SMALL_RUN]
        + list(extra),
    )


def serving_versions(config: PipelineConfig) -> list[str]:
    return sorted(os.listdir(config.serving_dir)) if os.path.isdir(config.serving_dir) else []


def score_raw_span(model_dir: str, span_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of a pushed model called through its raw-feature signature."""
    model = tf.saved_model.load(model_dir)
    rows = pd.read_csv(span_dir / "impressions.csv")
    features = rows.drop(columns=[contract.LABEL, "impression_id"])
    spec = model.signatures[RAW_SIGNATURE].structured_input_signature[1]
    scores = model.signatures[RAW_SIGNATURE](
        **{name: tf.constant(features[name].to_numpy(), dtype=spec[name].dtype) for name in spec}
    )[OUTPUT_KEY].numpy()
    return rows[contract.LABEL].to_numpy(), scores
