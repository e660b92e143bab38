"""The whole loop on this machine: train, serve, drift, detect, retrain, push, measure.

Day 1's span trains the first model. The server starts on it and logs every prediction. Each
following day the shop's traffic (that day's span, `windows_per_day` windows of it) goes
through the server, and the monitor checks every window as the CronJob would, with the outcome
feed read as of one attribution window later (the scenario fast-forwards the clock, so the
day's outcomes have arrived). Day 2 is a normal day: no alarm. Days 3 and 4 drift (traffic and
concept): the monitor sees skew against the training statistics and drift against the previous
window; once `confirm_windows` windows agree, the trigger runs the pipeline on the newest span,
Evaluator compares the new model with the serving one on that day's data, Pusher pushes it only
if blessed, and the server swaps to it. The live AUC of the old model on day 3 and of the new one
on day 4 (both drifted, neither in its training data) is the loop's result.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from contract import layout
from monitoring.checks import live_quality
from monitoring.monitor import CheckResult, check
from monitoring.report import summary_lines
from monitoring.retrain import retrain_local
from monitoring.traffic import Window, arrived_outcomes, log_files, read_outcome_feed, read_window
from serving.contract import Contract
from serving.loadgen import run_load, span_instances
from serving.process import running_server
from serving.versions import newest_version_dir
from settings import PipelineConfig
from simulator.generate import SimulationOptions, read_manifest, write_dataset
from simulator.outcomes import ATTRIBUTION_WINDOW_S

MARKER = ".shop-scenario"
DRIFT_FROM_DAY = 3
DAYS = 4


@dataclass(frozen=True)
class ScenarioSettings:
    rows: int = 20_000  # impressions per day (span)
    drift: float = 0.8
    seed: int = 42
    windows_per_day: int = 2
    instances_per_request: int = 10  # one ranking request scores a page of products
    concurrency: int = 4


@dataclass
class DayResult:
    day: int
    span_drift: float
    bayes_auc: float
    version: str | None
    predictions: int
    live_auc: float | None
    calibration: float | None
    windows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ScenarioResult:
    days: list[DayResult]
    retrains: list[dict[str, Any]]
    auc_before: float | None  # the first model on the first drifted day
    auc_after: float | None  # the retrained model on the next drifted day
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare_workspace(workspace: str) -> None:
    """A fresh workspace; only one this scenario created before is ever deleted."""
    path = Path(workspace)
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise FileExistsError(
                f"{workspace} exists and is not a scenario workspace (no {MARKER}): "
                "choose another --workspace"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("created by shop-monitor scenario; deleted by its next run\n")


def _replay(
    url: str, config: PipelineConfig, span: int, rows: list, settings: ScenarioSettings
) -> int:
    batch = settings.instances_per_request
    bodies = [{"instances": rows[i : i + batch]} for i in range(0, len(rows), batch)]
    target = f"{url}/v1/models/{config.serving.model_name}:predict"
    result = asyncio.run(run_load(target, bodies, len(bodies), settings.concurrency))
    failed = [s for s in result.statuses if s != 200]
    if failed:
        raise RuntimeError(
            f"span {span}: {len(failed)} of {len(bodies)} requests failed: {result.errors[:3]}"
        )
    return len(rows)


def _wait_for_version(
    url: str, config: PipelineConfig, version: str, probe: dict, timeout_s: float = 180
) -> None:
    """The server polls the serving folder; wait until it answers with `version`."""
    deadline = time.monotonic() + timeout_s
    target = f"{url}/v1/models/{config.serving.model_name}:predict"
    while time.monotonic() < deadline:
        response = httpx.post(target, json={"instances": [probe]}, timeout=10)
        if response.headers.get("x-model-version") == version:
            return
        time.sleep(1)
    raise TimeoutError(f"the server did not switch to version {version} within {timeout_s:.0f} s")


def _day_quality(config: PipelineConfig, windows: list[Window]) -> dict[str, Any]:
    """Live quality of a whole day's windows pooled (more outcomes, a steadier AUC)."""
    files = log_files(config.request_log_dir, config.serving.model_name)
    traffic = read_window(files, Window(windows[0].start, windows[-1].end))
    labelled = arrived_outcomes(
        traffic, read_outcome_feed(config.outcomes_dir), windows[-1].end + ATTRIBUTION_WINDOW_S
    )
    return live_quality(
        labelled, len(traffic), config.monitoring.min_labelled, config.monitoring.min_positives
    )


def run_scenario(
    config: PipelineConfig,
    workspace: str,
    settings: ScenarioSettings = ScenarioSettings(),
    echo: Callable[[str], None] = print,
) -> ScenarioResult:
    """Plays the loop in `workspace` (deleted first if a previous scenario made it). `config`
    must point data.root and output_root into the workspace (the CLI does)."""
    started = time.perf_counter()
    prepare_workspace(workspace)
    options = SimulationOptions(
        rows_per_span=settings.rows, spans=DAYS, seed=settings.seed, drift=settings.drift,
        drift_from_span=DRIFT_FROM_DAY,
    )  # fmt: skip
    echo(
        f"scenario: {settings.rows:,} impressions a day, drift {settings.drift} from day {DRIFT_FROM_DAY}; workspace {workspace}"
    )
    write_dataset(options, config.data.root, only_spans=[1, 2])
    echo("day 1: training the first model on span 1")
    first = retrain_local(config, os.path.join(config.monitoring_dir, "retrains"), echo, span=1)
    if first.status != "pushed":
        raise RuntimeError(f"the first model was not pushed ({first.status}): {first.detail}")
    days: list[DayResult] = []
    retrains: list[dict[str, Any]] = []
    log_dir = Path(config.monitoring_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with running_server(config, config.serving_dir, log_dir / "server.log") as url:
        echo(
            f"serving version {first.versions_after[-1]} at {url}; request log {config.request_log_path}"
        )
        for day in range(2, DAYS + 1):
            if day > 2:
                write_dataset(options, config.data.root, only_spans=[day])
            contract = Contract.load(newest_version_dir(config.serving_dir))
            rows = span_instances(
                os.path.join(config.data.root, f"span-{day}"), contract, settings.rows
            )
            manifest = read_manifest(config.data.root)["spans"][str(day)]
            echo(
                f"day {day}: span {day} traffic (drift {manifest['drift']}, Bayes-optimal AUC {manifest['bayes_auc']:.4f})"
            )
            windows: list[Window] = []
            results: list[CheckResult] = []
            chunks = np.array_split(np.arange(len(rows)), settings.windows_per_day)
            for chunk in chunks:
                start = time.time()
                _replay(url, config, day, [rows[i] for i in chunk], settings)
                window = Window(start, time.time() + 1e-3)
                windows.append(window)
                result = check(
                    config, window, outcomes_as_of=window.end + ATTRIBUTION_WINDOW_S, echo=echo
                )
                results.append(result)
                for line in summary_lines(result.report):
                    echo("  " + line)
                if result.retrain:
                    retrains.append({"day": day, **result.retrain.to_dict()})
                    if result.retrain.status == "pushed":
                        new = result.retrain.versions_after[-1]
                        _wait_for_version(url, config, new, rows[0])
                        echo(f"  the server now answers with version {new}")
            quality = _day_quality(config, windows)
            days.append(
                DayResult(
                    day=day, span_drift=manifest["drift"], bayes_auc=manifest["bayes_auc"],
                    version=results[0].report["version"], predictions=sum(r.report["traffic_rows"] for r in results),
                    live_auc=quality["auc"], calibration=quality["calibration"],
                    windows=[{"window": r.report["window"]["name"], "version": r.report["version"],
                              "drifted_features": r.report["drifted_features"], "signals": r.report["signals"],
                              "note": r.report["verdict"]["note"], "report": r.report_dir} for r in results],
                )
            )  # fmt: skip
    drifted = [d for d in days if d.span_drift > 0]
    result = ScenarioResult(
        days=days,
        retrains=retrains,
        auc_before=drifted[0].live_auc if drifted else None,
        auc_after=drifted[-1].live_auc if len(drifted) > 1 else None,
        seconds=time.perf_counter() - started,
    )
    path = layout.write_json(
        os.path.join(config.monitoring_dir, "scenario.json"), result.to_dict(), indent=2
    )
    for line in render(result):
        echo(line)
    echo(f"scenario written to {path}; window reports under {config.monitoring_dir}/windows/")
    return result


def render(result: ScenarioResult) -> list[str]:
    lines = [
        "",
        f"{'day':>3} {'drift':>5} {'version':>11} {'predictions':>11} {'live AUC':>8} {'Bayes AUC':>9} {'calib.':>6}  monitor",
    ]
    for d in result.days:
        auc = f"{d.live_auc:.4f}" if d.live_auc is not None else "n/a"
        calibration = f"{d.calibration:.2f}" if d.calibration is not None else "n/a"
        notes = " | ".join(
            (", ".join(w["drifted_features"]) or "clean") + f": {w['note']}" for w in d.windows
        )
        lines.append(
            f"{d.day:>3} {d.span_drift:>5.2f} {d.version or '-':>11} {d.predictions:>11,} {auc:>8} {d.bayes_auc:>9.4f} {calibration:>6}  {notes}"
        )
    for r in result.retrains:
        lines.append(
            f"retrain on day {r['day']} (span {r['span']}): {r['status']} in {r['seconds']:.0f} s: {r['detail'].splitlines()[0]}"
        )
    if result.auc_before is not None and result.auc_after is not None:
        lines.append(
            f"live AUC on drifted traffic: before retraining {result.auc_before:.4f} (first model, day {DRIFT_FROM_DAY}), "
            f"after {result.auc_after:.4f} (retrained model, day {DAYS}): {result.auc_after - result.auc_before:+.4f}"
        )
    lines.append(f"scenario took {result.seconds:.0f} s")
    return lines
