"""The compiled KFP v2 package as data: read/write it and check what open-source KFP can run.

A package is one YAML document (the bare PipelineSpec the KFP UI and client take), optionally
followed by a platform document (kfp-kubernetes' `platforms.kubernetes`, e.g. PVC mounts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PipelineSpec = dict[str, Any]

# TFX components whose result depends on files outside the pipeline's artifacts (the span).
EXTERNAL_INPUT_TASKS = ("CsvExampleGen", "BaselineExampleGen")


# Pipeline roots the KFP v2 backend accepts (backend/src/v2/objectstore: gs://, s3://, minio://)
# and that TFX's file I/O can write: minio:// is KFP's own name for its bucket, which TensorFlow
# cannot open, so point s3:// at the MinIO endpoint instead (object_store.endpoint).
PIPELINE_ROOT_SCHEMES = ("gs://", "s3://")


class PipelineRootError(ValueError):
    """A pipeline root the KFP backend or TFX would refuse; the message names the setting."""


def check_pipeline_root(root: str, setting: str = "output_root") -> str:
    """Returns `root` when a KFP v2 run can use it, else raises naming `setting`.

    The KFP backend never reads the spec's defaultPipelineRoot: a run's root is its
    runtimeConfig.pipelineRoot (what `submit` sends), else the kfp-launcher ConfigMap's
    defaultPipelineRoot, else minio://mlpipeline/v2/artifacts. A plain path is refused there
    ("unrecognized pipeline root format"), and minio:// is one TFX cannot write."""
    if root.startswith(PIPELINE_ROOT_SCHEMES):
        bucket = root.split("://", 1)[1].split("/", 1)[0]
        if bucket:
            return root
    raise PipelineRootError(
        f"pipeline root {root!r} (from {setting}): Kubeflow Pipelines v2 runs need an object "
        f"store root, one of {', '.join(s + '<bucket>/...' for s in PIPELINE_ROOT_SCHEMES)}; a "
        "filesystem path is refused by the KFP backend and minio:// cannot be written by TFX "
        "(use s3:// with object_store.endpoint set to the MinIO service)"
    )


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


def executor_label(spec: PipelineSpec, task_name: str) -> str:
    """The deploymentSpec executor label of a root-DAG task."""
    component = spec["components"][spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]]
    return component["executorLabel"]


def executor_of(spec: PipelineSpec, task_name: str) -> dict[str, Any]:
    """The deploymentSpec executor a root-DAG task runs."""
    return spec["deploymentSpec"]["executors"][executor_label(spec, task_name)]


@dataclass(frozen=True)
class CompiledStep:
    """One task of the root DAG, as the KFP UI's graph and its task panel show it."""

    name: str
    after: tuple[str, ...]  # upstream tasks (dependentTasks), sorted
    image: str
    command: tuple[str, ...]
    executor_class: str | None  # TFX's --executor_class_path: the code the step runs
    resources: dict[str, float]  # cpuRequest, memoryLimit, ... as compiled; {} = the cluster's
    cached: bool  # KFP may reuse an earlier run's outputs (cachingOptions.enableCache)


def compiled_steps(spec: PipelineSpec) -> list[CompiledStep]:
    """The root DAG's tasks in an order that runs every task after its upstream ones."""
    tasks = spec["root"]["dag"]["tasks"]
    steps: dict[str, CompiledStep] = {}
    for name, task in tasks.items():
        container = executor_of(spec, name).get("container", {})
        args = list(container.get("args", []))
        flag = "--executor_class_path"
        steps[name] = CompiledStep(
            name=name,
            after=tuple(sorted(task.get("dependentTasks", []))),
            image=container.get("image", ""),
            command=tuple(container.get("command", [])),
            executor_class=args[args.index(flag) + 1] if flag in args[:-1] else None,
            resources=dict(container.get("resources", {})),
            cached=bool(task.get("cachingOptions", {}).get("enableCache")),
        )
    ordered: list[CompiledStep] = []
    done: set[str] = set()
    while len(ordered) < len(steps):
        ready = sorted(n for n, s in steps.items() if n not in done and set(s.after) <= done)
        if not ready:
            raise ValueError(f"the DAG has a cycle among {sorted(set(steps) - done)}")
        ordered += [steps[n] for n in ready]
        done.update(ready)
    return ordered


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


def set_executor_env(spec: PipelineSpec, env: dict[str, str]) -> None:
    """Plain environment variables on every executor's container (PipelineContainerSpec.env)."""
    if not env:
        return
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container")
        if container is not None:
            given = {e["name"]: e["value"] for e in container.get("env", [])}
            container["env"] = [
                {"name": k, "value": v} for k, v in sorted({**given, **env}.items())
            ]


def kubernetes_platform_spec(
    spec: PipelineSpec,
    *,
    pvc_name: str | None = None,
    mount_path: str | None = None,
    secret_env: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """kfp-kubernetes platform document for every executor: one existing PVC mounted, and/or
    environment variables from a Secret (`{"secretName": ..., "keyToEnv": [{"secretKey",
    "envVar"}]}`, kfp-kubernetes' use_secret_as_env). None when there is neither."""
    if not pvc_name and not secret_env:
        return None
    per_executor: dict[str, Any] = {}
    if pvc_name:
        per_executor["pvcMount"] = [{"constant": pvc_name, "mountPath": mount_path}]
    if secret_env:
        per_executor["secretAsEnv"] = [secret_env]
    executors = {label: dict(per_executor) for label in spec["deploymentSpec"]["executors"]}
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
