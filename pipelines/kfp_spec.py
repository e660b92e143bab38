"""The compiled KFP v2 package as data: read/write it and check what open-source KFP can run.

A package is one YAML document (the bare PipelineSpec the KFP UI and client take), optionally
followed by a platform document (kfp-kubernetes' `platforms.kubernetes`, e.g. PVC mounts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PipelineSpec = dict[str, Any]

# TFX components whose result depends on files outside the pipeline's artifacts (the span).
EXTERNAL_INPUT_TASKS = ("CsvExampleGen", "BaselineExampleGen")


class UnsupportedSpecError(ValueError):
    """The spec uses something open-source KFP v2 does not run; the message names task and feature."""


def read_package(path: str | Path) -> tuple[PipelineSpec, dict[str, Any] | None]:
    """Returns (pipeline spec, platform spec or None)."""
    documents = [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]
    if not documents or "root" not in documents[0]:
        raise ValueError(f"{path}: not a KFP pipeline package (no `root` in the first document)")
    return documents[0], (documents[1] if len(documents) > 1 else None)


def write_package(
    path: str | Path, spec: PipelineSpec, platform: dict[str, Any] | None, header: str = ""
) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    documents = [spec] + ([platform] if platform else [])
    with open(path, "w") as handle:
        handle.write(header)
        yaml.safe_dump_all(documents, handle, sort_keys=True)


def executor_of(spec: PipelineSpec, task_name: str) -> dict[str, Any]:
    """The deploymentSpec executor a root-DAG task runs."""
    component = spec["components"][spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]


def unsupported_features(spec: PipelineSpec) -> list[str]:
    """What the open-source KFP v2 backend would not execute, one line per task and feature.

    Resolver executors: its compiler has "resolver not implemented yet". Lifecycle hooks
    (pre_cache_check, TFX's ExampleGen driver): only Vertex AI runs them; KFP ignores them
    silently, so the step would run without its driver. Nested DAGs and exit handlers are not
    used by this pipeline and are refused so that the local harness never pretends to run them.
    """
    problems = []
    tasks = spec["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            problems.append(f"{name}: nested DAG (not used here; the harness cannot run it)")
            continue
        executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]
        if "resolver" in executor:
            problems.append(f"{name}: resolver node (open-source KFP: not implemented)")
        if "importer" in executor:
            problems.append(f"{name}: importer node (not used here; the harness cannot run it)")
        container = executor.get("container", {})
        if "lifecycle" in container:
            problems.append(
                f"{name}: container lifecycle hook {sorted(container['lifecycle'])} "
                "(runs only on Vertex AI Pipelines)"
            )
        if task.get("triggerPolicy"):
            problems.append(f"{name}: trigger policy (exit handler/condition) not used here")
    return problems


def check_runs_on_open_source_kfp(spec: PipelineSpec) -> None:
    problems = unsupported_features(spec)
    if problems:
        raise UnsupportedSpecError(
            "the compiled pipeline uses what open-source KFP v2 does not run:\n  "
            + "\n  ".join(problems)
        )


def pvc_platform_spec(spec: PipelineSpec, pvc_name: str, mount_path: str) -> dict[str, Any]:
    """kfp-kubernetes platform document mounting one existing PVC into every executor."""
    executors = {
        label: {"pvcMount": [{"constant": pvc_name, "mountPath": mount_path}]}
        for label in spec["deploymentSpec"]["executors"]
    }
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
