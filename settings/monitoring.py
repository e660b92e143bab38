"""The monitor's section: drift on the request log and the retraining trigger (monitoring/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from settings.section import Section


class MonitoringConfig(Section):
    """The drift monitor on the request log and the retraining trigger (monitoring/)."""

    window_minutes: float = Field(
        60, gt=0, description="each check reads this much of the request log, ending now"
    )
    min_window_rows: int = Field(
        500, ge=1, description="fewer predictions than this: the window is reported, not judged"
    )
    retrain_on_drifted_features: int = Field(
        1,
        ge=1,
        description="retrain when this many features cross the schema's skew or drift thresholds",
    )
    min_live_auc: float | None = Field(
        0.70, ge=0, le=1, description="retrain when the live AUC of labelled traffic falls below"
    )
    max_calibration_error: float | None = Field(
        0.30, gt=0, description="retrain when |mean score / purchase rate - 1| exceeds this"
    )
    max_prediction_shift: float | None = Field(
        None,
        gt=0,
        description="Jensen-Shannon distance of the score histogram vs the previous window; "
        "None = reported only",
    )
    min_labelled: int = Field(
        300, ge=1, description="outcomes needed before live AUC and calibration count"
    )
    min_positives: int = Field(10, ge=1, description="purchases needed for a live AUC")
    max_outcome_rate_ratio: float | None = Field(
        2.0,
        gt=1,
        description="retrain when the purchase rate of the window's settled impressions (min_labelled "
        "of them) is more than this many times the serving model's training rate, or less than "
        "1/this; None = reported only",
    )
    retrain: Literal["off", "local", "kubeflow"] = Field(
        "local", description="what a crossing starts: shop-pipeline run here, or a KFP run"
    )
    confirm_windows: int = Field(
        2, ge=1, description="judged windows in a row with a signal before a crossing counts"
    )
    retrain_cooldown_hours: float | None = Field(
        24,
        gt=0,
        description="no two retrains closer than this; a crossing that persists (retrain failed "
        "or not blessed) retrains again after it. None = once per crossing, ever",
    )
    outcomes_dir: str | None = Field(
        None, description="the delayed outcome feed (CSV per span); None = <data.root>/outcomes"
    )
    root: str | None = Field(
        None,
        description="request logs and the monitor's history, local files (on Kubeflow the PVC); "
        "None = output_root",
    )
    pushgateway: str | None = Field(
        None, description="push the monitor's metrics to this Prometheus Pushgateway"
    )
    schedule: str = Field(
        "15 * * * *", description="the monitor CronJob's schedule (manifests/monitoring)"
    )
