"""The compiled Kubeflow package, executed task by task by tests/kfp_harness.py (a local stand-in
for the open-source KFP v2 backend: it launches each step's exact command and args with the
ExecutorInput KFP's launcher would build). It must reach a pushed model that scores raw examples
like the local runner's model on the same data."""

import json
from pathlib import Path

import numpy as np
import pytest
from e2e_data import config_for, score_raw_span, serving_versions
from kfp_harness import LocalKfpHarness, image_environment
from sklearn.metrics import roc_auc_score

from components.trainer import METRICS_FILE
from components.tuning.component import read_report
from pipelines.config import REPO_ROOT
from pipelines.kubeflow_runner import compile_package
from pipelines.summary import tfma_metrics

# One xdist worker runs every test built on the session's first pipeline run (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("first_run")


@pytest.fixture(scope="module")
def harness_run(workspace, first_run):
    kfp_root = workspace / "kfp"
    config = config_for(
        workspace,
        f"output_root={kfp_root / 'outputs'}",
        "kubeflow.pvc_name=null",  # paths are local; the harness does not emulate volumes
        # One process per step here already; multi_processing (the pod default) only adds
        # worker start-up at this size.
        "beam.direct_running_mode=in_memory",
        "beam.direct_num_workers=1",
        # The KatibTuner step runs, with the local backend (no Katib here) and one trial: the
        # config's own values, so the model stays comparable with the local runner's.
        "tuning.backend=local",
        "tuning.max_trials=1",
        "tuning.parallel_trials=1",
        "tuning.trial_train_steps=20",
        env="kubeflow",
    )
    package = compile_package(config, str(kfp_root / "pipeline.yaml"))
    harness = LocalKfpHarness(
        package,
        env=image_environment(REPO_ROOT / "Dockerfile"),
        log_dir=kfp_root / "logs",
    )
    # span is a run parameter: 2 = the span first_run trained on (0 would mean the newest).
    return config, harness.run({"span": 2, "train_args": '{"num_steps": 60}'})


def test_every_task_of_the_compiled_spec_runs_and_the_model_is_pushed(harness_run):
    config, run = harness_run
    assert set(run.tasks) >= {
        "CsvExampleGen",
        "BaselineExampleGen",
        "DriftValidator",
        "ValidationGate",
        "Transform",
        "KatibTuner",
        "Trainer",
        "Evaluator",
        "Pusher",
    }
    assert len(serving_versions(config)) == 1
    # The tuner ran its one trial and the Trainer trained with what its HyperParameters said.
    report = read_report(run.artifact_uri("KatibTuner", "tuning_report"))
    assert [t.status for t in report.trials] == ["Succeeded"] and report.trials[0].start_point
    trained = json.loads(
        (Path(run.artifact_uri("Trainer", "model_run")) / METRICS_FILE).read_text()
    )["hparams"]
    assert {k: trained[k] for k in report.best.values} == report.best.values
    examples = run.tasks["CsvExampleGen"].outputs["examples"][0]
    # Resolved in the step and reported on the artifact, as TFX's driver does.
    assert examples["metadata"]["custom:span"] == 2
    assert examples["metadata"]["input_fingerprint"].startswith("split:single_split")
    baseline = run.tasks["BaselineExampleGen"].outputs["examples"][0]
    assert baseline["metadata"]["custom:span"] == 1
    blessing = run.tasks["Evaluator"].outputs["blessing"][0]["metadata"]
    assert blessing["blessed"] == 1


def test_pushed_model_matches_the_local_runners_model(harness_run, first_run, workspace):
    config, run = harness_run
    metrics, _ = tfma_metrics(run.artifact_uri("Evaluator", "evaluation"))
    print(
        f"eval AUC: compiled spec {metrics['auc']:.4f}, local runner {first_run.metrics['auc']:.4f}"
    )
    assert abs(metrics["auc"] - first_run.metrics["auc"]) < 0.01
    pushed = str(Path(config.serving_dir) / serving_versions(config)[0])
    labels, scores = score_raw_span(pushed, workspace / "data" / "span-2")
    assert np.all((scores > 0) & (scores < 1))
    local_labels, local_scores = score_raw_span(
        first_run.pushed_destination, workspace / "data" / "span-2"
    )
    assert roc_auc_score(labels, scores) == pytest.approx(
        roc_auc_score(local_labels, local_scores), abs=0.01
    )
