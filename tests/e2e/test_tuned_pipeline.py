"""The local pipeline with the KatibTuner step on tiny data: a few local trials, then the Trainer
must train with the best trial's values (read back from the Trainer's own run record)."""

import json
import shutil
from pathlib import Path

import pytest
from e2e_data import config_for

from components.trainer import METRICS_FILE
from components.tuning.component import HYPERPARAMETERS_FILE, read_report
from pipelines.local_runner import run_local
from pipelines.metadata import latest_run, open_store
from pipelines.summary import render

# One xdist worker runs every test built on the session's first pipeline run (tests/conftest.py).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("first_run")]


@pytest.fixture(scope="module")
def tuned_run(workspace, first_run):
    """first_run's ML Metadata, copied: ExampleGen to Transform come from the cache, so only the
    tuner, Trainer, Evaluator and Pusher run (and first_run's model is the blessed baseline)."""
    root = workspace / "tuned"
    root.mkdir()
    shutil.copy(Path(first_run.metadata_path), root / "metadata.sqlite")
    config = config_for(
        workspace,
        f"output_root={root}",
        "data.span=2",
        "tuning.enabled=true",
        "tuning.max_trials=3",
        "tuning.parallel_trials=2",
        "tuning.trial_train_steps=40",
        # Every trial suggested by TPE, so the best one's values differ from the config's.
        "tuning.start_from_config=false",
    )
    summary = run_local(config)[0]
    return config, summary, latest_run(open_store(config.metadata_path), config.name)


def test_upstream_steps_come_from_the_cache(tuned_run):
    _, summary, _ = tuned_run
    assert summary.stages["Transform"] == "CACHED"
    assert summary.stages["KatibTuner"] == "COMPLETE"


def test_the_trainer_trains_with_the_best_trials_values(tuned_run):
    config, summary, nodes = tuned_run
    report = read_report(nodes["KatibTuner"].outputs["tuning_report"][-1].uri)
    assert len(report.trials) == 3 and all(t.status == "Succeeded" for t in report.trials)
    assert report.best.objective == max(t.objective for t in report.trials)
    assert all(len(t.reports) >= 2 for t in report.trials)  # one objective per epoch
    # The artifact the Trainer consumed ...
    artifact = Path(nodes["KatibTuner"].outputs["best_hyperparameters"][-1].uri)
    assert (
        json.loads((artifact / HYPERPARAMETERS_FILE).read_text())["values"]["dropout"]
        == (report.best.values["dropout"])
    )
    # ... and what the Trainer recorded training with.
    run_dir = Path(nodes["Trainer"].outputs["model_run"][-1].uri)
    trained = json.loads((run_dir / METRICS_FILE).read_text())["hparams"]
    assert {name: trained[name] for name in report.best.values} == report.best.values
    assert trained["dropout"] != config.training.dropout  # not the config's value
    assert trained["train_steps"] == config.training.train_steps  # steps stay the Trainer's
    text = render(summary)
    print(text)
    assert f"best {report.best.name}: held-out auc" in text
    assert "previous blessed model on the same rows" in text
