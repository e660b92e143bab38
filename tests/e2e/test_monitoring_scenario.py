"""The closed loop on small data: a model trained on day 1 serves a normal day (no alarm) and two
drifted days; the monitor names the drifted features, the trigger retrains once, Pusher pushes
the blessed model, the server swaps to it, and it ranks the next drifted day better than the
first model ranked the one before (live AUC from the delayed outcomes)."""

from __future__ import annotations

import os

import pytest
from e2e_data import SEED, config_for

from components import validation as V
from monitoring.scenario import ScenarioSettings, render, run_scenario
from pipelines.metadata import latest_run, open_store

pytestmark = pytest.mark.xdist_group("monitoring")


def test_drift_is_detected_the_model_retrained_once_and_live_auc_improves(tmp_path):
    workspace = tmp_path / "scenario"
    # The small run's model (60 steps on 3,200 rows; eval AUC about 0.73) gets quality limits to
    # match, as SMALL_RUN's evaluation.min_auc does: here drift must start the retrain.
    config = config_for(
        workspace, "monitoring.min_live_auc=0.6", "monitoring.max_calibration_error=0.5"
    )
    settings = ScenarioSettings(rows=4000, drift=0.8, seed=SEED, windows_per_day=2)
    result = run_scenario(config, str(workspace), settings)
    print("\n".join(render(result)))  # the before/after table in the test log

    normal, first_drifted, second_drifted = result.days
    assert normal.span_drift == 0 and first_drifted.span_drift > 0 and second_drifted.span_drift > 0
    # no false alarm on traffic from the training distribution
    assert all(not w["drifted_features"] and not w["signals"] for w in normal.windows), (
        normal.windows
    )
    # the drifted day: every window names the features the simulator moved
    for window in first_drifted.windows:
        assert {"device", "referrer"} <= set(window["drifted_features"]), window
    # one crossing, one retrain, on the newest span, blessed and pushed
    assert len(result.retrains) == 1, result.retrains
    retrain = result.retrains[0]
    assert retrain["day"] == 3 and retrain["span"] == 3 and retrain["status"] == "pushed"
    assert second_drifted.version == retrain["versions_after"][-1] != first_drifted.version
    # in that run the pipeline's own gate reported the drift against span 2 and did not block
    nodes = latest_run(open_store(config.metadata_path), config.name)
    anomalies = nodes["DriftValidator"].outputs["anomalies"][0]
    found = V.findings(V.load_anomalies_at(os.path.join(anomalies.uri, "Split-train")), "train")
    assert {"device", "referrer"} <= {f.feature for f in found} and all(f.is_drift for f in found)
    # the retrained model ranks drifted traffic it never saw better than the first model did
    assert result.auc_before is not None and result.auc_after is not None
    assert result.auc_after > result.auc_before, (result.auc_before, result.auc_after)
