"""Multi-worker training on Kubeflow: the Trainer step runs a TFJob and waits for it.

With `distribution.strategy: multi_worker` in Kubeflow mode, run_fn does not train in the Trainer's
pod: it creates a TFJob (Kubeflow Training Operator, kubeflow.org/v1) whose workers run the same
entry point as local multi-worker runs (`python -m components.train_worker`, TF_CONFIG set by the
operator), waits for the job, and the chief's model, written to the Trainer's output, becomes the
Trainer's Model artifact. The step fails, naming the job and its condition, if the job fails or
does not finish in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from settings import KubeflowConfig, ObjectStoreConfig, PipelineConfig, StepResources

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
# The step whose resources (kubeflow.resources.<step>) every pod that trains outside it gets:
# the TFJob's workers here, the Katib trials (components.tuning.experiment). They do its work.
TRAINING_STEP = "Trainer"


class TFJobError(RuntimeError):
    """The TFJob failed, timed out or could not be created; the message names it."""


def pod_sections_json(config: PipelineConfig) -> dict[str, Any]:
    """What a step that launches training pods (the Trainer's TFJob, the KatibTuner's trials)
    carries in its parameters: the kubeflow section (image, namespace, volume, the training
    step's resources) and the object store the pods reach, as their models' JSON (null when no
    root is on s3://). pod_sections() reads it back on the step's side."""
    store = config.pod_object_store()
    return {
        "kubeflow": config.kubeflow.model_dump(mode="json"),
        "object_store": store.model_dump(mode="json") if store is not None else None,
    }


def pod_sections(values: dict[str, Any]) -> tuple[KubeflowConfig, ObjectStoreConfig | None]:
    """pod_sections_json()'s two sections, validated again."""
    store = values.get("object_store")
    return (
        KubeflowConfig.model_validate(values["kubeflow"]),
        ObjectStoreConfig.model_validate(store) if store is not None else None,
    )


def pod_spec(
    kubeflow: KubeflowConfig,
    object_store: ObjectStoreConfig | None,
    container_name: str,
    command: list[str],
    args: list[str],
) -> dict[str, Any]:
    """One container running kubeflow.image with the training step's resources, the shared
    volume and, with an object store, its S3 settings and the keys from its Secret (TFJob
    workers here; Katib trial pods in components.tuning.experiment)."""
    resources = kubeflow.resources.get(TRAINING_STEP) or StepResources()
    limits: dict[str, str] = {}
    if resources.cpu:
        limits["cpu"] = str(resources.cpu)
    if resources.memory_gb:
        limits["memory"] = f"{resources.memory_gb}G"
    if resources.accelerator_type:
        limits[resources.accelerator_type] = str(resources.accelerator_count)
    env = {"TF_USE_LEGACY_KERAS": "1", **(object_store.environment() if object_store else {})}
    secret = object_store.credentials_secret if object_store else None
    secret_env = (
        {
            variable: {"name": secret, "key": key}
            for variable, key in object_store.key_variables().items()
        }
        if secret
        else {}
    )
    container: dict[str, Any] = {
        "name": container_name,
        "image": kubeflow.image,
        "command": list(command),
        "args": list(args),
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())]
        + [
            {"name": k, "valueFrom": {"secretKeyRef": dict(ref)}}
            for k, ref in sorted(secret_env.items())
        ],
        "resources": {"requests": dict(limits), "limits": dict(limits)} if limits else {},
    }
    spec: dict[str, Any] = {"containers": [container]}
    if kubeflow.pvc_name:
        container["volumeMounts"] = [{"name": "store", "mountPath": kubeflow.pvc_mount_path}]
        spec["volumes"] = [
            {"name": "store", "persistentVolumeClaim": {"claimName": kubeflow.pvc_name}}
        ]
    return spec


def tfjob_manifest(
    name: str,
    kubeflow: KubeflowConfig,
    object_store: ObjectStoreConfig | None,
    workers: int,
    worker_args: list[str],
) -> dict[str, Any]:
    """A TFJob in kubeflow.namespace with `workers` identical Worker replicas (worker 0 is the
    chief that exports), each running components.train_worker with `worker_args`."""
    # "tensorflow" is the container name the Training Operator looks for.
    spec = pod_spec(
        kubeflow,
        object_store,
        "tensorflow",
        ["python", "-m", "components.train_worker"],
        worker_args,
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TFJob",
        "metadata": {
            "name": name,
            "namespace": kubeflow.namespace,
            "labels": {"app.kubernetes.io/part-of": "shop-ranking"},
        },
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "OnFailure",  # with BackupAndRestore: resume, not restart
                    "template": {"spec": spec},
                }
            },
        },
    }


def job_state(job: dict[str, Any]) -> tuple[str | None, str]:
    """(Succeeded | Failed | None while running, the newest condition's message)."""
    conditions = job.get("status", {}).get("conditions") or []
    for condition in reversed(conditions):
        if condition.get("status") == "True" and condition.get("type") in ("Succeeded", "Failed"):
            return condition["type"], condition.get("message", "")
    latest = conditions[-1] if conditions else {}
    return None, latest.get("message", "")


def run_tfjob(
    api: Any,
    manifest: dict[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 15.0,
    delete_when_done: bool = True,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Creates the job with a kubernetes CustomObjectsApi, waits up to timeout_s for its end
    (distribution.job_timeout_s), polling every poll_s, and deletes it unless told not to.

    Returns the finished job; raises TFJobError on failure, timeout or an API error."""
    from kubernetes.client.exceptions import ApiException

    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    where = f"TFJob {namespace}/{name}"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as err:
        raise TFJobError(f"{where}: create failed: HTTP {err.status} {err.reason}") from err
    workers = manifest["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    log(f"{where}: created, {workers} workers")
    deadline = clock() + timeout_s
    try:
        while True:
            try:
                job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as err:
                raise TFJobError(f"{where}: status failed: HTTP {err.status} {err.reason}") from err
            state, message = job_state(job)
            if state == "Succeeded":
                log(f"{where}: succeeded")
                return job
            if state == "Failed":
                raise TFJobError(f"{where} failed: {message or 'no message'}")
            if clock() > deadline:
                raise TFJobError(f"{where} did not finish within {timeout_s}s")
            sleep(poll_s)
    finally:
        if delete_when_done:
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as err:
                log(f"{where}: delete failed (HTTP {err.status}); remove it by hand")


def job_name(model_run_dir: str) -> str:
    """A DNS-1123 name unique per Trainer execution, derived from its output path."""
    import hashlib

    digest = hashlib.sha256(model_run_dir.encode()).hexdigest()[:10]
    return f"shop-ranking-train-{digest}"
