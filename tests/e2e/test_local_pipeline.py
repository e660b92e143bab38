"""The whole local pipeline on small generated data, in the order a shop lives through it:
a first run pushes a model; a rerun hits the cache; a drifted day stops the run when drift blocks;
a corrupt day stops at the gate and the pushed model stays. (A drifted day that trains and pushes
by default: tests/e2e/test_monitoring_scenario.py.) Tests run in file order and share runs.
"""

import os

import numpy as np
import pytest
from e2e_data import ROWS, SEED, config_for, score_raw_span, serving_versions
from sklearn.metrics import roc_auc_score

from components import validation as V
from pipelines.cli import main as pipeline_cli
from pipelines.local_runner import run_local
from pipelines.metadata import latest_run, open_store
from simulator.generate import SimulationOptions, write_dataset

# One xdist worker runs every test built on the session's first pipeline run (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("first_run")


def test_first_run_blesses_and_pushes_a_model_near_the_bayes_ceiling(first_run, workspace):
    assert first_run.span == 2
    assert set(first_run.stages.values()) == {"COMPLETE"}, first_run.stages
    assert {
        "DriftValidator",
        "ValidationGate",
        "Transform",
        "Trainer",
        "Evaluator",
        "Pusher",
    } <= set(first_run.stages)
    assert first_run.blessed and first_run.pushed
    assert os.path.exists(os.path.join(first_run.pushed_destination, "saved_model.pb"))
    # ~800 eval rows: a loose bound here; the default dataset's figure is in README.
    assert first_run.auc_gap < 0.06, (first_run.metrics, first_run.bayes_auc)
    assert {"device:mobile", "device:desktop", "device:tablet"} <= set(first_run.metrics_by_slice)
    for metric in ("auc", "binary_crossentropy", "calibration", "example_count"):
        assert metric in first_run.metrics


def test_pushed_model_scores_raw_examples(first_run, workspace):
    labels, scores = score_raw_span(first_run.pushed_destination, workspace / "data" / "span-2")
    assert scores.shape == labels.shape and np.all((scores > 0) & (scores < 1))
    assert roc_auc_score(labels, scores) > 0.7


def test_rerun_on_unchanged_data_hits_the_cache(first_run, workspace):
    config = config_for(workspace)
    versions = serving_versions(config)
    summary, _ = run_local(config)
    for stage in ("CsvExampleGen", "StatisticsGen", "ExampleValidator", "Transform", "Trainer"):
        assert summary.stages[stage] == "CACHED", summary.stages
    assert summary.model_uri == first_run.model_uri
    # The Evaluator re-checks the same model against itself (now the blessed baseline); the Pusher
    # sees that model already serving and writes no duplicate version.
    assert summary.pushed and summary.pushed_destination == first_run.pushed_destination
    assert serving_versions(config) == versions


def test_drift_blocks_when_configured(first_run, workspace, capsys):
    """A drifted day stops the run when drift blocks. (By default drift is reported and the run
    trains on: tests/e2e/test_monitoring_scenario.py retrains on a drifted span and pushes.)"""
    write_dataset(
        SimulationOptions(rows_per_span=ROWS, spans=3, seed=SEED, drift=0.7, drift_from_span=3),
        workspace / "data",
        only_spans=[3],
    )
    config = config_for(workspace, "validation.block_on_drift=true")
    before = serving_versions(config)
    with pytest.raises(V.DataValidationError, match=r"device.*drift"):
        run_local(config)
    assert serving_versions(config) == before


def test_corrupt_span_stops_at_the_gate_and_keeps_the_pushed_model(workspace, capsys):
    write_dataset(
        SimulationOptions(
            rows_per_span=ROWS, spans=4, seed=SEED, corrupt_fraction=0.01, corrupt_spans=(4,)
        ),
        workspace / "data",
        only_spans=[4],
    )
    config = config_for(workspace)
    before = {
        v: os.path.getmtime(os.path.join(config.serving_dir, v, "saved_model.pb"))
        for v in serving_versions(config)
    }
    assert before
    exit_code = pipeline_cli(
        [
            "run",
            "--set",
            f"data.root={config.data.root}",
            "--set",
            f"output_root={config.output_root}",
            "--set",
            "training.train_steps=60",
            "--set",
            "training.batch_size=128",
            "--set",
            "evaluation.min_auc=0.6",
            "--set",
            "evaluation.min_slice_auc=null",
        ]
    )
    out = capsys.readouterr().out
    assert exit_code == 1
    assert "Data validation gate" in out and "price" in out and "device" in out, out
    after = {
        v: os.path.getmtime(os.path.join(config.serving_dir, v, "saved_model.pb"))
        for v in serving_versions(config)
    }
    assert after == before
    nodes = latest_run(open_store(config.metadata_path), config.name)
    assert nodes["ValidationGate"].state == "FAILED"
    assert "Transform" not in nodes and "Pusher" not in nodes
