"""What a fired trigger starts: the pipeline on the newest span, here or on Kubeflow.

Locally it runs `shop-pipeline run` as a child process (the same command a person would type,
with the monitor's resolved config) and reads the result off the serving folder: a new version
folder means Evaluator blessed the model and Pusher pushed it; anything else (the gate stopped
the run, Evaluator did not bless, the process failed) leaves the serving model as it was, which
is checked, not assumed. On Kubeflow it submits a run of the compiled package through the KFP
client with the newest span as the run's `span` parameter; Pusher in that run pushes only a
blessed model, so a submitted run is all the monitor can report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from pipelines.spans import SpanError, available_spans, select_spans
from serving.versions import numbered_versions
from settings import PipelineConfig

# What `shop-pipeline run` prints for people (stage progress, the gate, the summary); TF's and
# Keras' logging stays in the retrain's log file.
ECHOED = ("[", "  ", "Pipeline ", "shop-pipeline", "Data validation", "Reported", "summary written")


@dataclass(frozen=True)
class RetrainOutcome:
    status: str  # "pushed" | "not_pushed" | "failed" | "submitted"
    span: int | None
    detail: str
    versions_before: list[str]
    versions_after: list[str]
    log_path: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def newest_span(config: PipelineConfig) -> int | None:
    """The span a retrain trains on: the newest folder, which must be complete (an empty or
    partial one is a SpanError naming it, never a silent retrain on the span before); None when
    there is no span at all."""
    if not available_spans(config.data):
        return None
    return select_spans(config.data.model_copy(update={"span": None})).current


def _tail(path: str, lines: int = 15) -> str:
    with open(path, errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])


def retrain_local(
    config: PipelineConfig,
    log_dir: str,
    echo: Callable[[str], None] = print,
    span: int | None = None,
) -> RetrainOutcome:
    """`shop-pipeline run` on `span` (default: the newest when the run starts) with this config;
    its output is echoed line by line (the stages' progress) and kept in
    log_dir/retrain-<time>.log."""
    span = span or newest_span(config)
    before = numbered_versions(config.serving_dir)
    os.makedirs(log_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    config_path = os.path.join(log_dir, f"retrain-{stamp}.yaml")
    resolved = config.model_dump(mode="json")
    resolved["data"]["span"] = span
    with open(config_path, "w") as handle:
        yaml.safe_dump(resolved, handle, sort_keys=False)
    log_path = os.path.join(log_dir, f"retrain-{stamp}.log")
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--config", config_path]
    echo(f"pipeline run: {' '.join(cmd)} (span {span}; log {log_path})")
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # progress as it happens
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith(ECHOED):  # the run's stage progress and its summary
                echo("  | " + line.rstrip())
        rc = proc.wait()
    seconds = time.perf_counter() - started
    after = numbered_versions(config.serving_dir)
    new = [v for v in after if v not in before]
    if rc != 0:
        status = "failed"
        detail = f"shop-pipeline run exited {rc}; serving versions unchanged: {after == before}.\n{_tail(log_path)}"
    elif new:
        status, detail = "pushed", f"Evaluator blessed the model; Pusher pushed version {new[-1]}"
    else:
        status, detail = (
            "not_pushed",
            "the run finished but pushed nothing (not blessed): the serving model stays",
        )
    return RetrainOutcome(status, span, detail, before, after, log_path, seconds)


def retrain_kubeflow(
    config: PipelineConfig, echo: Callable[[str], None] = print, client_factory=None
) -> RetrainOutcome:
    """A run of the compiled package through the KFP client, on the newest span."""
    from pipelines.submit import submit

    if not config.kubeflow.host:
        raise ValueError("monitoring.retrain=kubeflow needs kubeflow.host (the KFP API endpoint)")
    span = newest_span(config)
    before = numbered_versions(config.serving_dir)
    kwargs = {"client_factory": client_factory} if client_factory else {}
    result = submit(
        config.kubeflow.package_path,
        config.kubeflow.host,
        pipeline_name=config.name,
        experiment=config.kubeflow.experiment,
        namespace=config.kubeflow.namespace,
        parameters={"span": span} if span else None,
        run_name=f"{config.name}-retrain-span-{span}-{time.strftime('%Y%m%d-%H%M%S')}",
        pipeline_root=config.pipeline_root,
        **kwargs,
    )
    echo(f"retrain: submitted run {result.run_id} on span {span}: {result.url}")
    return RetrainOutcome(
        "submitted", span, f"KFP run {result.run_id} ({result.url})", before, before
    )


def retrain(
    config: PipelineConfig, log_dir: str, echo: Callable[[str], None] = print
) -> RetrainOutcome:
    """monitoring.retrain's kind; a submission the KFP API refuses is a failed retrain (recorded
    in the report and the trigger's state), not a crashed check."""
    try:
        if config.monitoring.retrain == "kubeflow":
            from pipelines.submit import SubmitError

            try:
                return retrain_kubeflow(config, echo)
            except (SubmitError, ValueError, OSError) as err:
                if isinstance(err, SpanError):
                    raise
                versions = numbered_versions(config.serving_dir)
                return RetrainOutcome("failed", newest_span(config), str(err), versions, versions)
        return retrain_local(config, log_dir, echo)
    except SpanError as err:  # the newest span is incomplete: nothing runs, nothing is pushed
        versions = numbered_versions(config.serving_dir)
        return RetrainOutcome("failed", None, str(err), versions, versions)
