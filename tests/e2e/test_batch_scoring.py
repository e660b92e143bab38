"""Batch inference (pipelines/batch_scoring.py) with the first run's pushed model: the Beam job's
scores of span 2 equal an in-process call of the same SavedModel's serving_raw signature, every
row comes out once, and bad inputs fail before (or while) the job runs with a clear message."""

import glob
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from e2e_data import config_for

from components.pusher import newest_version
from components.signatures import OUTPUT_KEY, RAW_SIGNATURE
from pipelines.batch_scoring import VERSION_COLUMN, BatchScoringError, score_span

# With the distributed-training test: both only read first_run's outputs (see that module).
pytestmark = pytest.mark.xdist_group("distributed")


def reference_scores(model_dir: str, rows: pd.DataFrame) -> np.ndarray:
    """The SavedModel's serving_raw signature called here, on all rows at once."""
    signature = tf.saved_model.load(model_dir).signatures[RAW_SIGNATURE]
    spec = signature.structured_input_signature[1]
    inputs = {n: tf.constant(rows[n].to_numpy(), dtype=spec[n].dtype) for n in spec}
    return signature(**inputs)[OUTPUT_KEY].numpy()


def small_span(source: str, root, span: int, rows: int = 20) -> pd.DataFrame:
    """The first rows of a span's CSV, as strings (written back unchanged)."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False).head(rows)
    (root / f"span-{span}").mkdir(parents=True)
    return frame


def test_span_scores_equal_the_signature_called_in_process(first_run, workspace):
    config = config_for(workspace)
    version = newest_version(config.serving_dir)
    model_dir = f"{config.serving_dir}/{version}"
    inputs = sorted(glob.glob(str(workspace / "data" / "span-2" / "*.csv")))

    summary = score_span(config, span=2)

    raw = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in inputs])
    out_dir = f"{config.output_root}/predictions/{config.serving.model_name}/span-2"
    shards = sorted(glob.glob(f"{out_dir}/predictions-*-of-*.csv"))
    assert shards and sorted(glob.glob(summary["output_pattern"])) == shards
    scored = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in shards])

    # Every input row exactly once, its columns unchanged, then the two added ones.
    assert list(scored.columns) == [*raw.columns, OUTPUT_KEY, VERSION_COLUMN]
    assert scored["impression_id"].is_unique and len(scored) == len(raw)
    assert set(scored["impression_id"]) == set(raw["impression_id"])
    scored = scored.set_index("impression_id").loc[raw["impression_id"]].reset_index()
    pd.testing.assert_frame_equal(scored[raw.columns], raw.reset_index(drop=True))
    assert set(scored[VERSION_COLUMN]) == {version}

    expected = reference_scores(model_dir, pd.concat([pd.read_csv(p) for p in inputs]))
    np.testing.assert_allclose(scored[OUTPUT_KEY].astype(float), expected, rtol=0, atol=1e-6)

    written = json.loads(open(f"{out_dir}/summary.json").read())
    assert written == summary
    assert summary["rows"] == len(raw)
    assert (summary["span"], summary["model_version"]) == (2, version)
    assert summary["input_files"] == [os.path.abspath(p) for p in inputs]
    assert summary["output_pattern"] == f"{out_dir}/predictions-*-of-*.csv"
    assert summary["mean_score"] == pytest.approx(float(expected.mean()), abs=1e-6)


def test_no_pushed_model_names_the_directory(tmp_path):
    config = config_for(tmp_path)
    with pytest.raises(
        BatchScoringError, match=f"no pushed model under {re.escape(config.serving_dir)}"
    ):
        score_span(config, span=2)


def test_missing_span_names_the_path(first_run, workspace):
    config = config_for(workspace)
    with pytest.raises(BatchScoringError, match=re.escape(f"{workspace / 'data'}/span-9/*.csv")):
        score_span(config, span=9)


def test_missing_column_names_the_file_and_the_column(first_run, workspace, tmp_path):
    config = config_for(workspace, f"data.root={tmp_path / 'data'}")
    frame = small_span(workspace / "data" / "span-2" / "impressions.csv", tmp_path / "data", 5)
    path = tmp_path / "data" / "span-5" / "part.csv"
    frame.drop(columns=["price"]).to_csv(path, index=False)
    with pytest.raises(BatchScoringError, match=f"{re.escape(str(path))}: .*no column 'price'"):
        score_span(config, span=5)
    assert not os.path.exists(f"{config.output_root}/predictions/shop-ranking/span-5")


def test_unparsable_value_names_the_file_column_and_value(first_run, workspace, tmp_path):
    """...and a failed rescoring leaves the span's earlier predictions as they were."""
    config = config_for(tmp_path)  # a model of its own under tmp_path
    version = os.path.basename(first_run.pushed_destination)
    shutil.copytree(first_run.pushed_destination, f"{config.serving_dir}/{version}")
    frame = small_span(workspace / "data" / "span-2" / "impressions.csv", tmp_path / "data", 3)
    path = tmp_path / "data" / "span-3" / "part.csv"
    frame.to_csv(path, index=False)
    earlier = score_span(config, span=3)
    out_dir = f"{config.output_root}/predictions/{config.serving.model_name}/span-3"
    before = {p: open(p).read() for p in glob.glob(f"{out_dir}/*")}
    frame.loc[7, "hour"] = "noon"
    frame.to_csv(path, index=False)
    with pytest.raises(
        BatchScoringError, match=f"{re.escape(str(path))}: column 'hour' holds 'noon'"
    ):
        score_span(config, span=3)
    assert {p: open(p).read() for p in glob.glob(f"{out_dir}/*")} == before
    assert earlier["rows"] == len(frame)
    assert not os.path.exists(f"{out_dir}.partial")  # no shards, summary or Beam temp folders
