"""Two workers under MultiWorkerMirroredStrategy on this machine (loopback, one TF_CONFIG each,
the entry point a TFJob's pods run) against one worker, on the local run's transformed span."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.local_workers import run_local_workers

# Its own xdist group: it only reads first_run's Transform output, so the other worker repeats
# that run (about 2.5 min) and the first_run group, the suite's long pole, gets shorter.
pytestmark = pytest.mark.xdist_group("distributed")

# Same global batch (2 x 32 = 64) and steps for both; eval_steps covers the whole eval split. The
# two workers see the same global batches as the one (DATA sharding of the same shuffled stream),
# so the figures agree to about 1e-4 here; with dropout=0 they are identical.
HPARAMS = {"train_steps": 60, "eval_steps": 50, "batch_size": 64}


def worker_args(transform, out: Path, hparams: dict, strategy: str) -> list[str]:
    graph = transform["transform_graph"][0].uri
    examples = transform["transformed_examples"][0].uri
    return [
        "--transform-output", graph,
        "--train-files", f"{examples}/Split-train/*",
        "--eval-files", f"{examples}/Split-eval/*",
        "--serving-model-dir", str(out / "model"),
        "--model-run-dir", str(out / "run"),
        "--hparams", json.dumps(hparams),
        "--distribution", json.dumps({"strategy": strategy}),
    ]  # fmt: skip


def test_two_workers_match_one_worker(first_run_outputs, tmp_path):
    _, nodes = first_run_outputs
    transform = nodes["Transform"].outputs
    # A fresh process for the single worker too: in this process TensorFlow has already created
    # ops (the local run), which shifts the op-level seeds and so the initial weights.
    subprocess.run(
        [sys.executable, "-m", "components.train_worker"]
        + worker_args(transform, tmp_path / "one", HPARAMS, "default"),
        check=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
    )
    one = json.loads((tmp_path / "one" / "run" / "training_metrics.json").read_text())

    two_workers = {**HPARAMS, "batch_size": 32}  # per replica
    run_local_workers(2, worker_args(transform, tmp_path / "two", two_workers, "multi_worker"))
    two = json.loads((tmp_path / "two" / "run" / "training_metrics.json").read_text())
    assert (two["strategy"], two["replicas"]) == ("multi_worker", 2)
    assert (tmp_path / "two" / "model" / "saved_model.pb").exists()  # written by the chief only
    print(f"eval AUC: one worker {one['eval']['auc']:.4f}, two workers {two['eval']['auc']:.4f}")
    assert two["eval"]["auc"] == pytest.approx(one["eval"]["auc"], abs=0.01)
