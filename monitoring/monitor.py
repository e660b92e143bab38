"""One check of one window: read, compare, report, decide, retrain.

Everything a check produces goes to `<output_root>/monitoring/<model>/windows/<window end>/`
(report.json, report.html, the window's statistics.pb), the newest report is copied to
`latest.json` / `latest.html`, the metrics to `metrics.prom`, and the trigger's state to
`trigger_state.json`. The previous window for the drift comparison is the newest judged window
in that history that ended by this one's start, so a scheduled monitor needs no other memory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2

from contract import layout
from contract.schema_tool import load_schema
from monitoring import checks, report, trigger
from monitoring.metrics import write_metrics
from monitoring.retrain import RetrainOutcome, retrain
from monitoring.traffic import (
    Window,
    arrived_outcomes,
    log_files,
    read_outcome_feed,
    read_window,
    settled_outcomes,
)
from serving import versions
from settings import PipelineConfig

WINDOWS_DIR = "windows"
REPORT, STATS = "report.json", "statistics.pb"

Retrainer = Callable[[PipelineConfig, str, Callable[[str], None]], RetrainOutcome]


@dataclass(frozen=True)
class CheckResult:
    report: dict[str, Any]
    verdict: trigger.Verdict
    retrain: RetrainOutcome | None
    report_dir: str

    @property
    def exit_code(self) -> int:
        """0: nothing crossed; 1: an alert (a threshold crossed in this window or confirmed)."""
        return 1 if self.verdict.alert else 0


def training_statistics(
    config: PipelineConfig, version: str | None
) -> statistics_pb2.DatasetFeatureStatisticsList | None:
    if version is None:
        return None
    path = versions.join(config.serving_dir, version, layout.TRAINING_STATISTICS)
    return tfdv.load_stats_binary(path) if versions.exists(path) else None


def previous_window(directory: str, window: Window) -> tuple[dict[str, Any], str] | None:
    """(report, folder) of the newest judged window that ended by `window.start`."""
    root = os.path.join(directory, WINDOWS_DIR)
    if not os.path.isdir(root):
        return None
    for name in sorted(os.listdir(root), reverse=True):
        path = os.path.join(root, name, REPORT)
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            earlier = json.load(handle)
        if earlier["window"]["end"] <= window.start + 1e-6 and earlier["judged"]:
            return earlier, os.path.join(root, name)
    return None


def history(directory: str) -> list[dict[str, Any]]:
    """Every window report, oldest first (the report's trend plots)."""
    root = os.path.join(directory, WINDOWS_DIR)
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name, REPORT)
        if os.path.exists(path):
            with open(path) as handle:
                out.append(json.load(handle))
    return out


def serving_version(traffic: pd.DataFrame) -> tuple[str | None, dict[str, int]]:
    """The version that answered most of the window, and the count per version."""
    if traffic.empty:
        return None, {}
    counts = traffic["version"].value_counts()
    return str(counts.index[0]), {str(k): int(v) for k, v in counts.items()}


def check(
    config: PipelineConfig,
    window: Window,
    *,
    outcomes_as_of: float | None = None,
    trigger_retrain: bool = True,
    retrainer: Retrainer | None = None,
    echo: Callable[[str], None] = print,
) -> CheckResult:
    """Checks `window` of the request log; with trigger_retrain, a confirmed crossing starts a
    retrain (the retrainer, by default monitoring.retrain's) and the trigger's state is saved."""
    settings = config.monitoring
    directory = config.monitoring_dir
    files = log_files(config.request_log_dir, config.serving.model_name)
    traffic = read_window(files, window)  # no files: an empty window, reported as such
    judged = len(traffic) >= settings.min_window_rows
    version, versions = serving_version(traffic)
    schema = load_schema()
    previous = previous_window(directory, window)
    train_stats = training_statistics(config, version)
    window_stats = previous_stats = None
    shifts: list[checks.FeatureShift] = []
    problems: list[str] = []
    if len(traffic):
        window_stats = checks.window_statistics(traffic, checks.serving_features(schema))
        if previous:
            previous_stats = tfdv.load_stats_binary(os.path.join(previous[1], STATS))
        shifts, problems = checks.compare(window_stats, schema, train_stats, previous_stats)
    scores = traffic["score"].to_numpy(dtype=np.float64) if len(traffic) else np.array([])
    predictions = checks.predictions(
        scores, previous[0]["predictions"]["histogram"] if previous else None
    )
    as_of = outcomes_as_of if outcomes_as_of is not None else time.time()
    feed = read_outcome_feed(config.outcomes_dir) if os.path.isdir(config.outcomes_dir) else None
    labelled = arrived_outcomes(traffic, feed, as_of) if feed is not None else pd.DataFrame()
    quality = checks.live_quality(
        labelled, len(traffic), settings.min_labelled, settings.min_positives
    )
    settled = settled_outcomes(traffic, feed, as_of) if feed is not None else pd.DataFrame()
    rate = checks.outcome_rate(settled, len(traffic), train_stats, settings.min_labelled)
    ranking = checks.live_ranking(settled, config.evaluation.ndcg_k, settings.min_positives)
    window_signals = trigger.signals(
        shifts, quality, predictions["shift_vs_previous"], settings, outcome_rate=rate
    )
    state = trigger.TriggerState.load(directory)
    verdict, state = trigger.decide(
        state, judged=judged, window_signals=window_signals, version=version, now=window.end,
        config=settings,
    )  # fmt: skip
    outcome = None
    if verdict.fire and not trigger_retrain:
        verdict = replace(verdict, fire=False, note=verdict.note + " (--no-retrain: not started)")
    if verdict.fire:
        echo(f"monitor: {verdict.note}: {'; '.join(window_signals)}")
        outcome = (retrainer or retrain)(config, os.path.join(directory, "retrains"), echo)
        state.fired.append(
            {
                "at": window.end,
                "window": window.name,
                "signals": window_signals,
                **outcome.to_dict(),
            }
        )
        echo(f"monitor: retrain {outcome.status}: {outcome.detail.splitlines()[0]}")
    notes = []
    if not files:
        notes.append(
            f"{config.request_log_dir}: no request log of model {config.serving.model_name!r} "
            "yet (the server writes it with serving.log_requests=true)"
        )
    if train_stats is None and version is not None:
        notes.append(
            f"version {version} carries no {layout.TRAINING_STATISTICS}: skew and the training "
            "outcome rate not checked"
        )
    if previous is None:
        notes.append("no earlier judged window: drift not checked")
    if feed is None:
        notes.append(f"{config.outcomes_dir}: no outcome feed: live quality not measured")
    body = report.build(
        config=config, window=window, traffic_rows=len(traffic), judged=judged,
        version=version, versions=versions, shifts=shifts, problems=problems,
        predictions=predictions, quality=quality, verdict=verdict, retrain=outcome,
        previous=previous[0]["window"] if previous else None, outcomes_as_of=as_of,
        notes=notes, trigger_state=state, outcome_rate=rate, ranking=ranking,
    )  # fmt: skip
    folder = os.path.join(directory, WINDOWS_DIR, window.name)
    os.makedirs(folder, exist_ok=True)
    # Every file by write-then-rename (contract/layout.py): a dashboard reading latest.* or the
    # next check reading this window never sees half a file.
    if window_stats is not None:
        layout.write_bytes(os.path.join(folder, STATS), window_stats.SerializeToString())
    report.write(folder, body)
    html = report.render_html(
        body, history(directory), training=train_stats, window=window_stats, previous=previous_stats
    )
    layout.write_text(os.path.join(folder, "report.html"), html)
    for name in (REPORT, "report.html"):
        with open(os.path.join(folder, name), "rb") as handle:
            layout.write_bytes(
                os.path.join(directory, f"latest{os.path.splitext(name)[1]}"), handle.read()
            )
    if trigger_retrain:
        state.save(directory)
    write_metrics(body, state, os.path.join(directory, "metrics.prom"), settings.pushgateway)
    return CheckResult(body, verdict, outcome, folder)
