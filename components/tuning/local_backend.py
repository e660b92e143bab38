"""Local tuning backend: Katib's search run on this machine.

Trials are `python -m components.tuning.trial` subprocesses, `parallel_trials` at a time, with the
Experiment's exact arguments; suggestions come from the library Katib's service uses for the
algorithm (suggestions.py); metrics are read from each trial's output with Katib's filter and
medianstop is applied as Katib does (metrics.py). A failed trial is recorded and the search goes
on; more than max_failed_trials failures, or the whole search running past timeout_s, fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.tuning.experiment import ADDITIONAL_METRICS, TRIAL_MODULE
from components.tuning.metrics import median_stop_rule, parse_metrics, should_stop
from components.tuning.report import (
    EARLY_STOPPED,
    FAILED,
    KILLED,
    RUNNING,
    SUCCEEDED,
    TrialRecord,
    TuningError,
    TuningReport,
)
from components.tuning.search_space import parameter_specs, start_assignment, typed_assignments
from components.tuning.suggestions import Assignment, make_suggester
from settings import TrainingConfig, TuningConfig


@dataclass
class _Running:
    record: TrialRecord
    process: subprocess.Popen
    log_path: Path
    started: float
    checked_early_stop: bool = False


def run_local_search(
    tuning: TuningConfig,
    training: TrainingConfig,
    fixed_args: list[str],
    workdir: str | Path,
    *,
    experiment: str = "local",
    log: Callable[[str], None] = print,
    python: str = sys.executable,
    poll_s: float = 1.0,
    trial_module: str = TRIAL_MODULE,
) -> TuningReport:
    """Runs the search and returns the report with `best` set; trial logs stay in workdir."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    specs = parameter_specs(tuning)
    suggester = make_suggester(
        tuning.algorithm, specs, tuning.algorithm_settings, tuning.seed, tuning.parallel_trials
    )
    report = TuningReport(
        backend="local",
        algorithm=tuning.algorithm,
        objective_metric=tuning.objective_metric,
        experiment=experiment,
        parameters=[_spec_json(s) for s in specs],
    )
    pending_start = start_assignment(tuning, training) if tuning.start_from_config else None
    if tuning.start_from_config and pending_start is None:
        log("tuning: training's values lie outside the search space; no start trial")
    env = _trial_env(tuning.parallel_trials)
    metrics = [tuning.objective_metric, *ADDITIONAL_METRICS]
    running: list[_Running] = []
    launched = failed = 0
    goal_reached = False
    started = time.monotonic()

    def finish(trial: _Running, status: str, message: str = "") -> None:
        nonlocal failed
        record = trial.record
        record.status, record.message = status, message
        record.seconds = round(time.monotonic() - trial.started, 1)
        record.objective = record.reports[-1] if record.reports else None  # strategy: latest
        if status in (SUCCEEDED, EARLY_STOPPED) and record.objective is None:
            record.status, record.message = FAILED, "no objective reported (metrics unavailable)"
        if record.status == FAILED:
            failed += 1
        suggester.tell(record.assignments, record.objective if record.counts else None)
        best = max((t.objective for t in report.trials if t.counts), default=float("nan"))
        shown = f"{record.objective:.4f}" if record.objective is not None else "-"
        done = sum(t.status != RUNNING for t in report.trials)
        log(
            f"tuning: {record.name} {record.status} {tuning.objective_metric}={shown} in "
            f"{record.seconds:.0f}s; best {best:.4f}; {done}/{tuning.max_trials} done"
            + (f" ({record.message})" if record.message else "")
        )

    try:
        while True:
            stop_launching = goal_reached or failed >= tuning.max_failed_trials
            while (
                not stop_launching
                and launched < tuning.max_trials
                and len(running) < tuning.parallel_trials
            ):
                launched += 1
                is_start = pending_start is not None
                assignment: Assignment = pending_start if is_start else suggester.ask()
                pending_start = None
                running.append(
                    _launch(
                        f"trial-{launched}", assignment, is_start, fixed_args, workdir,
                        python, trial_module, env,
                    )
                )  # fmt: skip
                report.trials.append(running[-1].record)
                log(
                    f"tuning: trial-{launched}/{tuning.max_trials} started"
                    + (" (training's values)" if is_start else "")
                    + ": "
                    + " ".join(f"{k}={v}" for k, v in assignment.items())
                )
            if not running:
                break
            time.sleep(poll_s)
            if time.monotonic() - started > tuning.timeout_s:
                raise TuningError(
                    f"tuning.timeout_s={tuning.timeout_s}s passed with {len(running)} trial(s) "
                    "still running"
                )
            rule = None
            if tuning.early_stopping == "medianstop":
                rule = median_stop_rule(
                    [t.reports for t in report.trials if t.status == SUCCEEDED],
                    tuning.early_stopping_min_trials,
                    tuning.early_stopping_start_step,
                )
            for trial in list(running):
                trial.record.reports = parse_metrics(_read(trial.log_path), metrics)[
                    tuning.objective_metric
                ]
                code = trial.process.poll()
                if code is not None:
                    running.remove(trial)
                    if code == 0:
                        finish(trial, SUCCEEDED)
                    else:
                        finish(trial, FAILED, f"exit code {code}; {_tail(trial.log_path)}")
                elif time.monotonic() - trial.started > tuning.trial_timeout_s:
                    _stop(trial.process)
                    running.remove(trial)
                    finish(
                        trial, FAILED, f"ran past tuning.trial_timeout_s={tuning.trial_timeout_s}s"
                    )
                elif (
                    not trial.checked_early_stop
                    and len(trial.record.reports) >= tuning.early_stopping_start_step
                ):
                    trial.checked_early_stop = True
                    if should_stop(trial.record.reports, rule, tuning.early_stopping_start_step):
                        _stop(trial.process)
                        running.remove(trial)
                        finish(trial, EARLY_STOPPED, f"medianstop: below {rule:.4f}")
            if tuning.goal is not None and any(
                t.counts and t.objective >= tuning.goal for t in report.trials
            ):
                goal_reached = True
                for trial in running:
                    _stop(trial.process)
                    trial.record.status = KILLED
                    trial.record.message = f"goal {tuning.goal} reached"
                running.clear()
    finally:
        for trial in running:
            _stop(trial.process)
            trial.record.status, trial.record.message = KILLED, "search stopped"
        report.seconds = round(time.monotonic() - started, 1)
    if failed >= tuning.max_failed_trials:
        raise TuningError(
            f"{failed} trials failed (tuning.max_failed_trials={tuning.max_failed_trials}); "
            f"first: {next(t for t in report.trials if t.status == FAILED).message}; logs in {workdir}"
        )
    report.pick_best()
    return report


def _launch(name, assignment, is_start, fixed_args, workdir, python, module, env) -> _Running:
    log_path = workdir / f"{name}.log"
    args = [*fixed_args, *(f"--{k}={v}" for k, v in assignment.items())]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [python, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    record = TrialRecord(
        name=name,
        assignments=dict(assignment),
        values=typed_assignments(assignment),
        status=RUNNING,
        start_point=is_start,
    )
    return _Running(record, process, log_path, time.monotonic())


def _trial_env(parallel: int) -> dict[str, str]:
    """Parallel trials share the cores instead of each starting a thread per core."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    return {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
    }


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _tail(path: Path, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in _read(path)[-lines:])


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spec_json(spec) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(spec)
