"""The whole local pipeline on small generated data, in the order a shop lives through it:
a first run pushes a model; a rerun hits the cache; a drifted day stops the run when drift blocks;
an emptied newest day stops the run and only an explicit rollback serves an older span's model;
a corrupt day stops at the gate and the pushed model stays. (A drifted day that trains and pushes
by default: tests/e2e/test_monitoring_scenario.py.) Tests run in file order and share runs; the
last two (a label shift, another dataset's file) use data roots of their own and stop at the gate.
"""

import json
import os
import shutil

import numpy as np
import pytest
from e2e_data import ROWS, SEED, SMALL_RUN, config_for, score_raw_span, serving_versions
from sklearn.metrics import roc_auc_score

import contract
from components import pusher as P
from components import validation as V
from pipelines.cli import main as pipeline_cli
from pipelines.local_runner import run_local
from pipelines.metadata import latest_run, open_store
from pipelines.summary import render
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


def test_an_emptied_newest_span_stops_and_only_an_explicit_rollback_serves_an_older_one(
    first_run, workspace, capsys
):
    """Issue 18's silent rollback: a model trained on span 3 serves, then span-3/ is emptied.
    The run stops naming the folder (it used to train on span 2 from the cache and push it); a
    run on span 2 that the Evaluator blesses is not pushed; `shop-pipeline rollback --to-span 2`
    pushes it, and the summary says so. In an output root of its own (first_run's ML Metadata
    copied, so span 2's stages come from the cache): the session's serving folder stays as is."""
    root = workspace / "rollback"
    root.mkdir()
    shutil.copy(first_run.metadata_path, root / "metadata.sqlite")
    data = workspace / "data"
    overrides = [f"data.root={data}", f"output_root={root}", *SMALL_RUN]
    lenient = "evaluation.max_auc_drop=1.0"  # whichever span's model, the Evaluator blesses it
    config = config_for(workspace, f"output_root={root}", lenient)
    newer = run_local(config)[0]  # the newest span: the drifted span 3 (drift reported only)
    assert (newer.span, newer.pushed, newer.trained_on_span) == (3, True, 3), newer
    served = serving_versions(config)
    [span_3_version] = served

    def cli(*argv: str) -> tuple[int, str, str]:
        code = pipeline_cli([*argv, *(a for o in overrides for a in ("--set", o))])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    aside = root / "span-3-impressions.csv"
    shutil.move(data / "span-3" / "impressions.csv", aside)  # span-3/ is there, and empty
    try:
        code, _, err = cli("run", "--set", lenient)
        assert code == 2, err
        assert f"the newest span folder {data}/span-3 has no file matching" in err, err
        assert serving_versions(config) == served

        older = run_local(config_for(workspace, f"output_root={root}", lenient, "data.span=2"))[0]
        assert older.model_uri == first_run.model_uri and older.blessed, older
        assert (older.pushed, older.trained_on_span, older.serving_span) == (False, 2, 3), older
        assert "not pushed: trained on span 2, older than pushed span 3" in render(older)
        assert serving_versions(config) == served

        code, out, err = cli("rollback", "--to-span", "2")
        assert code == 0, out + err
        assert "rolled back to span 2 (newest pushed was span 3)" in out, out
    finally:
        shutil.move(aside, data / "span-3" / "impressions.csv")
    summary = json.loads((root / "run_summary.json").read_text())
    assert (summary["trained_on_span"], summary["rolled_back_from_span"]) == (2, 3), summary
    *kept, rolled_back = serving_versions(config)
    assert kept == served
    version_dir = os.path.join(config.serving_dir, rolled_back)
    with open(os.path.join(version_dir, P.PUSH_RECORD)) as handle:
        assert json.load(handle) == {
            "span": 2,
            "rolled_back_from": {"version": span_3_version, "span": 3},
        }
    with open(os.path.join(version_dir, P.SOURCE_FILE)) as handle:
        assert handle.read() == first_run.model_uri  # span 2's model, from the cache


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


def test_a_label_shifted_span_is_reported_as_label_drift(tmp_path):
    """Span 2 buys ~4x as often as span 1 (the simulator's prior shift; no feature moves): the
    DriftValidator names the label with both rates (here drift blocks, so the run stops there)."""
    write_dataset(
        SimulationOptions(rows_per_span=ROWS, spans=2, seed=SEED, label_shift=5.0),
        tmp_path / "data",
    )
    config = config_for(tmp_path, "validation.block_on_drift=true")
    with pytest.raises(V.DataValidationError) as stopped:
        run_local(config)
    message = str(stopped.value)
    assert message.splitlines()[0].startswith(
        f"Data validation gate: 2 anomalies in feature(s) {contract.LABEL};"
    ), message
    assert (
        f"[train] {contract.LABEL} (drift: COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH): " in message
    )
    assert "label rate (share of purchased = 1) 0.2" in message, message


def test_another_datasets_file_names_the_columns_first(tmp_path, capsys):
    """TFX's own Chicago taxi CSV (shipped in the tfx wheel) put in a span folder after a shop
    span: ExampleGen stops before any Beam work, naming the file, the column the train/eval
    split needs (request_id) and the file's own columns. (The gate's column check, which names
    every missing and unexpected column, is the unit tier's: test_schema_and_validation.)"""
    import tfx

    write_dataset(SimulationOptions(rows_per_span=ROWS, spans=1, seed=SEED), tmp_path / "data")
    taxi = os.path.join(
        os.path.dirname(tfx.__file__), "examples", "chicago_taxi_pipeline", "data", "simple"
    )
    (tmp_path / "data" / "span-2").mkdir()
    shutil.copy(os.path.join(taxi, "data.csv"), tmp_path / "data" / "span-2" / "data.csv")
    with open(tmp_path / "data" / "span-2" / "data.csv") as handle:
        taxi_columns = sorted(handle.readline().strip().split(","))
    config = config_for(tmp_path)
    exit_code = pipeline_cli(
        ["run", "--set", f"data.root={config.data.root}", "--set", f"output_root={config.output_root}"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert exit_code == 1
    stopped = next(line for line in out.splitlines() if "STOPPED: " in line)
    assert f"span-2/data.csv: no '{contract.REQUEST_ID}' column" in stopped, out
    assert str(taxi_columns) in stopped, out
