"""The monitor's figures in Prometheus' format, for the dashboard and its alert rules.

Written as a text file (node_exporter's textfile collector reads it) after every check, and
pushed to a Pushgateway when monitoring.pushgateway is set: the monitor is a short-lived job
(a CronJob), which is what the Pushgateway is for.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

JOB = "shop-monitor"


def registry_for(report: dict[str, Any], state: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    model = report["model"]

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"shop_monitor_{name}", doc, ("model", *labels), registry=registry)

    gauge("window_end_timestamp_seconds", "End of the checked window").labels(model).set(
        report["window"]["end"]
    )
    gauge("window_predictions", "Predictions logged in the window").labels(model).set(
        report["traffic_rows"]
    )
    distance = gauge(
        "feature_distance", "Skew/drift distance per feature", ("feature", "comparison")
    )
    threshold = gauge("feature_threshold", "The schema's threshold", ("feature", "comparison"))
    for shift in report["shifts"]:
        distance.labels(model, shift["feature"], shift["comparison"]).set(shift["value"])
        threshold.labels(model, shift["feature"], shift["comparison"]).set(shift["threshold"])
    crossed = gauge("features_crossed", "Features past their threshold", ("comparison",))
    for comparison in ("skew", "drift"):
        crossed.labels(model, comparison).set(
            len(
                {
                    s["feature"]
                    for s in report["shifts"]
                    if s["comparison"] == comparison and s["crossed"]
                }
            )
        )
    predictions = report["predictions"]
    if predictions["mean"] is not None:
        gauge("prediction_mean", "Mean score in the window").labels(model).set(predictions["mean"])
    if predictions["shift_vs_previous"] is not None:
        gauge("prediction_shift", "JS distance of scores vs the previous window").labels(model).set(
            predictions["shift_vs_previous"]
        )
    ranking = report.get("ranking") or {}
    if ranking.get("ndcg") is not None:
        gauge("live_ndcg", "NDCG@k of settled served lists", ("k",)).labels(
            model, str(ranking["k"])
        ).set(ranking["ndcg"])
    quality = report["quality"]
    gauge("labelled_predictions", "Predictions whose outcome arrived").labels(model).set(
        quality["labelled"]
    )
    for key, doc in (("auc", "Live AUC"), ("calibration", "Mean score / purchase rate")):
        if quality.get(key) is not None:
            gauge(f"live_{key}", doc).labels(model).set(quality[key])
    rates = report.get("outcome_rate") or {}
    for key, name, doc in (
        ("rate", "outcome_rate", "Purchase rate of the window's settled impressions"),
        ("training_rate", "training_outcome_rate", "The label's rate in the training statistics"),
        ("ratio", "outcome_rate_ratio", "Outcome rate / training rate"),
    ):
        if rates.get(key) is not None:
            gauge(name, doc).labels(model).set(rates[key])
    gauge("alert", "1 when a threshold is crossed").labels(model).set(int(report["alert"]))
    gauge("retrains", "Retrains the trigger started").labels(model).set(len(state.fired))
    return registry


def write_metrics(report: dict[str, Any], state: Any, path: str, pushgateway: str | None) -> None:
    registry = registry_for(report, state)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_to_textfile(path, registry)  # writes a temporary file, then renames
    if pushgateway:
        push_to_gateway(
            pushgateway, job=JOB, registry=registry, grouping_key={"model": report["model"]}
        )
