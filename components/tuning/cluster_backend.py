"""Cluster tuning backend: a Katib Experiment created, watched and read with the Katib SDK.

The KatibTuner step creates the Experiment in the pipeline's namespace (its service account
needs the Role in manifests/katib/rbac.yaml), polls it until Succeeded, Failed or
tuning.timeout_s, reads status.currentOptimalTrial (string values, typed with the declared
types) and every Trial for the report, and deletes the Experiment when tuning.cleanup says so.
A failed Experiment is left in place for `kubectl describe`; a timed-out one is deleted, which
stops its trials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubeflow.katib import KatibClient
from kubeflow.katib import models as katib

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
from components.tuning.search_space import typed_assignments
from settings import TuningConfig


def katib_client(client_configuration: Any | None = None) -> KatibClient:
    """In a pod: the service account; elsewhere: the kube config (or an explicit one)."""
    return KatibClient(client_configuration=client_configuration)


def _condition(experiment: katib.V1beta1Experiment, kind: str):
    for condition in (experiment.status and experiment.status.conditions) or []:
        if condition.type == kind and condition.status == "True":
            return condition
    return None


def _cause(err: BaseException) -> str:
    """The SDK wraps the Kubernetes ApiException; its status and reason are the useful part."""
    inner = err.__cause__ or err.__context__
    if inner is not None and hasattr(inner, "status"):
        return f"{err} (HTTP {inner.status} {getattr(inner, 'reason', '')})".strip()
    return str(err)


def run_cluster_search(
    tuning: TuningConfig,
    experiment: katib.V1beta1Experiment,
    client: KatibClient,
    *,
    log: Callable[[str], None] = print,
    poll_s: float = 15.0,
) -> TuningReport:
    """Creates `experiment`, waits for it and returns the report with `best` set."""
    name, namespace = experiment.metadata.name, experiment.metadata.namespace
    where = f"Katib Experiment {namespace}/{name}"
    try:
        client.create_experiment(experiment, namespace=namespace)
    except (RuntimeError, TimeoutError) as err:
        raise TuningError(
            f"could not create {where}: {_cause(err)}. Is Katib installed, and may this "
            "service account create experiments.kubeflow.org (manifests/katib/rbac.yaml)?"
        ) from err
    log(f"tuning: created {where} ({tuning.algorithm}, {tuning.max_trials} trials)")
    started = time.monotonic()
    delete = tuning.cleanup
    try:
        while True:
            current = _get(client, name, namespace, where)
            failed = _condition(current, "Failed")
            if failed is not None:
                delete = False  # kept for `kubectl describe experiment`
                raise TuningError(
                    f"{where} failed: {failed.reason}: {failed.message}; trials: "
                    f"{_counts(current)}. It is left in place: kubectl -n {namespace} describe "
                    f"experiment {name}"
                )
            if _condition(current, "Succeeded") is not None:
                break
            if time.monotonic() - started > tuning.timeout_s:
                delete = True  # stops its trials
                raise TuningError(
                    f"{where} did not finish within tuning.timeout_s={tuning.timeout_s}s "
                    f"(trials: {_counts(current)}); it is deleted"
                )
            log(f"tuning: {where} running; trials: {_counts(current)}")
            time.sleep(poll_s)
        report = _report(tuning, current, _trials(client, name, namespace, where))
        log(f"tuning: {where} succeeded; trials: {_counts(current)}")
        return report
    finally:
        if delete:
            try:
                client.delete_experiment(name, namespace=namespace)
                log(f"tuning: deleted {where}")
            except (RuntimeError, TimeoutError) as err:
                log(f"tuning: could not delete {where}: {_cause(err)}")


def _get(client: KatibClient, name: str, namespace: str, where: str) -> katib.V1beta1Experiment:
    try:
        return client.get_experiment(name, namespace=namespace)
    except (RuntimeError, TimeoutError) as err:
        raise TuningError(f"could not read {where}: {_cause(err)}") from err


def _trials(client: KatibClient, name: str, namespace: str, where: str) -> list:
    try:
        return client.list_trials(name, namespace=namespace)
    except (RuntimeError, TimeoutError) as err:
        raise TuningError(f"could not list the trials of {where}: {_cause(err)}") from err


def _counts(experiment: katib.V1beta1Experiment) -> str:
    status = experiment.status
    if status is None:
        return "none yet"
    return (
        f"{status.trials_succeeded or 0} succeeded, {status.trials_running or 0} running, "
        f"{status.trials_failed or 0} failed, {status.trials_early_stopped or 0} early-stopped"
    )


def _trial_status(trial: katib.V1beta1Trial) -> tuple[str, str]:
    for condition in reversed((trial.status and trial.status.conditions) or []):
        if condition.status != "True":
            continue
        kind = {
            "Succeeded": SUCCEEDED,
            "EarlyStopped": EARLY_STOPPED,
            "Failed": FAILED,
            "MetricsUnavailable": FAILED,
            "Killed": KILLED,
        }.get(condition.type)
        if kind:
            return kind, condition.message or ""
    return RUNNING, ""


def _latest(metrics, name: str) -> float | None:
    for metric in metrics or []:
        if metric.name == name and metric.latest not in (None, "", "unavailable"):
            return float(metric.latest)
    return None


def _report(
    tuning: TuningConfig, experiment: katib.V1beta1Experiment, trials: list
) -> TuningReport:
    from kubernetes.client import ApiClient

    report = TuningReport(
        backend="cluster",
        algorithm=tuning.algorithm,
        objective_metric=tuning.objective_metric,
        experiment=f"{experiment.metadata.namespace}/{experiment.metadata.name}",
        parameters=ApiClient().sanitize_for_serialization(experiment.spec.parameters),
    )
    for trial in sorted(trials, key=lambda t: str(t.metadata.creation_timestamp or "")):
        status, message = _trial_status(trial)
        assignments = {a.name: a.value for a in trial.spec.parameter_assignments or []}
        observation = trial.status.observation if trial.status else None
        report.trials.append(
            TrialRecord(
                name=trial.metadata.name,
                assignments=assignments,
                values=typed_assignments(assignments),
                status=status,
                objective=_latest(observation and observation.metrics, tuning.objective_metric),
                message=message,
            )
        )
    optimal = experiment.status.current_optimal_trial if experiment.status else None
    if optimal is None or not optimal.parameter_assignments:
        raise TuningError(
            f"Katib Experiment {report.experiment} succeeded without an optimal trial "
            "(no trial reported auc=<value> on stdout?)"
        )
    assignments = {a.name: a.value for a in optimal.parameter_assignments}
    objective = _latest(
        optimal.observation and optimal.observation.metrics, tuning.objective_metric
    )
    best = next((t for t in report.trials if t.name == optimal.best_trial_name), None)
    report.best = best or TrialRecord(
        name=optimal.best_trial_name or "optimal",
        assignments=assignments,
        values=typed_assignments(assignments),
        status=SUCCEEDED,
        objective=objective,
    )
    # Katib's optimal trial is the answer, whatever the trial list shows.
    report.best.assignments, report.best.values = assignments, typed_assignments(assignments)
    return report
