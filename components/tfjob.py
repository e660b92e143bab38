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
from dataclasses import dataclass, field
from typing import Any

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"


class TFJobError(RuntimeError):
    """The TFJob failed, timed out or could not be created; the message names it."""


@dataclass(frozen=True)
class TFJobSettings:
    """What the Trainer step needs to launch workers (from the pipeline config, via custom_config)."""

    image: str
    namespace: str
    workers: int = 2
    cpu: float | None = None
    memory_gb: float | None = None
    accelerator_type: str | None = None
    accelerator_count: int = 0
    pvc_name: str | None = None
    mount_path: str = "/mnt/shop"
    service_account: str | None = None
    timeout_s: int = 6 * 3600
    poll_s: float = 15.0
    delete_when_done: bool = True
    env: dict[str, str] = field(default_factory=lambda: {"TF_USE_LEGACY_KERAS": "1"})
    # variable -> {"name": Secret, "key": its key}: the object store's keys (config.object_store)
    secret_env: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TFJobSettings:
        return cls(**values)


def pod_spec(
    settings: TFJobSettings, container_name: str, command: list[str], args: list[str]
) -> dict[str, Any]:
    """One container running the image with the step's resources, env and the shared volume
    (TFJob workers here; Katib trial pods in components.tuning.experiment)."""
    limits: dict[str, str] = {}
    if settings.cpu:
        limits["cpu"] = str(settings.cpu)
    if settings.memory_gb:
        limits["memory"] = f"{settings.memory_gb}G"
    if settings.accelerator_type:
        limits[settings.accelerator_type] = str(settings.accelerator_count)
    container: dict[str, Any] = {
        "name": container_name,
        "image": settings.image,
        "command": list(command),
        "args": list(args),
        "env": [{"name": k, "value": v} for k, v in sorted(settings.env.items())]
        + [
            {"name": k, "valueFrom": {"secretKeyRef": dict(ref)}}
            for k, ref in sorted(settings.secret_env.items())
        ],
        "resources": {"requests": dict(limits), "limits": dict(limits)} if limits else {},
    }
    spec: dict[str, Any] = {"containers": [container]}
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.pvc_name:
        container["volumeMounts"] = [{"name": "store", "mountPath": settings.mount_path}]
        spec["volumes"] = [
            {"name": "store", "persistentVolumeClaim": {"claimName": settings.pvc_name}}
        ]
    return spec


def tfjob_manifest(name: str, settings: TFJobSettings, worker_args: list[str]) -> dict[str, Any]:
    """A TFJob with `workers` identical Worker replicas (worker 0 is the chief that exports)."""
    # "tensorflow" is the container name the Training Operator looks for.
    spec = pod_spec(
        settings, "tensorflow", ["python", "-m", "components.train_worker"], worker_args
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TFJob",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "shop-ranking"},
        },
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": settings.workers,
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
    settings: TFJobSettings,
    *,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Creates the job with a kubernetes CustomObjectsApi, waits for its end, deletes it if set.

    Returns the finished job; raises TFJobError on failure, timeout or an API error."""
    from kubernetes.client.exceptions import ApiException

    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    where = f"TFJob {namespace}/{name}"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as err:
        raise TFJobError(f"{where}: create failed: HTTP {err.status} {err.reason}") from err
    log(f"{where}: created, {settings.workers} workers")
    deadline = clock() + settings.timeout_s
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
                raise TFJobError(f"{where} did not finish within {settings.timeout_s}s")
            sleep(settings.poll_s)
    finally:
        if settings.delete_when_done:
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as err:
                log(f"{where}: delete failed (HTTP {err.status}); remove it by hand")


def job_name(model_run_dir: str) -> str:
    """A DNS-1123 name unique per Trainer execution, derived from its output path."""
    import hashlib

    digest = hashlib.sha256(model_run_dir.encode()).hexdigest()[:10]
    return f"shop-ranking-train-{digest}"
