"""KServe InferenceServices (serving.kserve.io/v1beta1) for the pushed model, built from the config.

Two predictors read the same pushed versions (Pusher's numbered folders under serving_dir):

- "custom" (`<model_name>`): our image (serving/, `python -m serving.server`), V1 and V2 (Open
  Inference Protocol) with request validation. With a model version it serves exactly that
  version, so a canary really compares two versions. With serving.log_requests and a PVC, every
  pod appends its predictions to its own file in request_log_dir on the PVC, which the monitor
  CronJob (manifests/monitoring/, `shop-monitor check`) reads.
- "tensorflow" (`<model_name>-tfserving`): KServe's TensorFlow runtime (TF Serving), V1 REST and
  gRPC v1 only; it always serves the newest version under storageUri.

Plain dicts, no kserve import: the kserve SDK needs protobuf >= 4.25, which TFX 1.16 forbids here.
serving/validate_manifests.py checks the files against kserve 0.15's models in .venv-serving.
Written by `shop-pipeline kserve-manifest` (manifests/kserve/) and by Pusher for each version it
pushes (config.kserve_manifest_dir).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from settings import (
    SERVER_FLAG_FIELDS,
    ConfigError,
    PipelineConfig,
    ServingConfig,
    number_text,
    server_flags,
)

API_VERSION, KIND = "serving.kserve.io/v1beta1", "InferenceService"
PREDICTORS = ("custom", "tensorflow")
FILES = {
    "custom": "inferenceservice-custom.yaml",
    "tensorflow": "inferenceservice-tensorflow.yaml",
}
KUSTOMIZATION = "kustomization.yaml"
TF_SERVING_SUFFIX = "-tfserving"

# KServe's storage initializer puts storageUri (or a custom container's STORAGE_URI) here. A
# pvc:// folder is mounted here with enableDirectPvcVolumeMount (later pushes show up in running
# pods); without it the initializer links the entries it finds at pod start (kserve.storage).
MODEL_MOUNT = "/mnt/models"
CONTAINER_NAME = "kserve-container"  # the container KServe reads STORAGE_URI/PROTOCOL from
HTTP_PORT = 8080  # Knative's default user port; KServe routes here
SERVER_COMMAND = ["python", "-m", "serving.server"]
TF_RUNTIME = "kserve-tensorflow-serving"  # the ClusterServingRuntime KServe installs
# The request log: the custom predictor mounts the store (kubeflow.pvc_name) read-write under this
# volume name (not KServe's own "kserve-pvc-source", the read-only storageUri mount) and names
# its log file after its pod, so pods of all revisions append to files of their own.
STORE_VOLUME = "store"
POD_NAME_ENV = "POD_NAME"
# Knative tags the newest and the previous rolled-out revision: status.components.predictor lists
# their own URLs (latest-..., prev-...), so each side of a canary can be called directly.
TAG_ROUTING = {"serving.kserve.io/enable-tag-routing": "true"}


class KServeManifestError(ValueError):
    """The config cannot give a valid InferenceService; the message names the fields."""


@dataclass(frozen=True)
class KServeSettings:
    """What the manifests need: serving's KServe fields and the resolved storage URI. JSON-able,
    so Pusher gets it through custom_config and needs no config file."""

    model_name: str
    namespace: str
    image: str
    tf_serving_version: str
    storage_uri: str
    canary_traffic_percent: int
    min_replicas: int
    max_replicas: int
    scale_metric: str
    scale_target: int
    cpu: float
    memory_gb: float
    max_instances: int
    batch_max_size: int
    batch_timeout_ms: float
    reload_interval_s: float
    part_of: str
    # serving/http_guard.py's limits; config's defaults, so a custom_config written before loads
    max_string_length: int = ServingConfig.model_fields["max_string_length"].default
    max_concurrency: int = ServingConfig.model_fields["max_concurrency"].default
    retry_after_s: int = ServingConfig.model_fields["retry_after_s"].default
    # The request log (serving.log_requests): request_log_dir is the config's request_log_dir,
    # set only where the pod sees it: on the PVC (pvc_name) mounted at pvc_mount_path. Defaults,
    # so a custom_config written before these fields still loads (from_dict).
    log_requests: bool = False
    request_log_dir: str | None = None
    pvc_name: str | None = None
    pvc_mount_path: str | None = None
    service_account: str | None = None

    @classmethod
    def from_config(cls, config: PipelineConfig) -> KServeSettings:
        serving = config.serving
        settings = cls(
            **serving.model_dump(
                include={
                    "model_name",
                    "namespace",
                    "image",
                    "tf_serving_version",
                    "canary_traffic_percent",
                    "min_replicas",
                    "max_replicas",
                    "scale_metric",
                    "scale_target",
                    "cpu",
                    "memory_gb",
                    "service_account",
                    *SERVER_FLAG_FIELDS,
                }
            ),
            storage_uri=storage_uri(config),
            part_of=config.name,
            **request_log_settings(config),
        )
        if len(name_of(settings, "tensorflow")) > 63:
            raise KServeManifestError(
                f"serving.model_name {serving.model_name!r}: with {TF_SERVING_SUFFIX!r} it is "
                "longer than a Kubernetes name may be (63)"
            )
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> KServeSettings:
        return cls(**values)


def storage_uri(config: PipelineConfig) -> str:
    """Where KServe reads the pushed versions: serving.storage_uri, else serving_dir itself when it
    is an object store (gs://, s3://), else pvc://<kubeflow.pvc_name>/<serving_dir under the
    mount>."""
    if config.serving.storage_uri:
        return config.serving.storage_uri
    serving_dir = config.serving_dir
    if "://" in serving_dir:
        return serving_dir
    kubeflow = config.kubeflow
    if not kubeflow.pvc_name:
        raise KServeManifestError(
            "no storage URI for KServe: set serving.storage_uri (pvc://<claim>/<path>, gs://...), "
            f"or kubeflow.pvc_name with output_root under kubeflow.pvc_mount_path "
            f"(serving_dir is {serving_dir!r}, kubeflow.pvc_name is null)"
        )
    path, mount = PurePosixPath(serving_dir), PurePosixPath(kubeflow.pvc_mount_path)
    if not (path.is_absolute() and path.is_relative_to(mount) and path != mount):
        raise KServeManifestError(
            f"no storage URI for KServe: serving_dir {serving_dir!r} (from output_root "
            f"{config.output_root!r}) is not under kubeflow.pvc_mount_path "
            f"{kubeflow.pvc_mount_path!r}; move output_root there or set serving.storage_uri"
        )
    return f"pvc://{kubeflow.pvc_name}/{path.relative_to(mount)}"


def request_log_settings(config: PipelineConfig) -> dict[str, Any]:
    """KServeSettings' request log fields. The predictor logs only with serving.log_requests, a
    PVC (kubeflow.pvc_name) and request_log_dir under kubeflow.pvc_mount_path (settings/conf/kubeflow.yaml:
    /mnt/shop/outputs/serving_logs): the same path in the predictor pod as in the monitor's. Else
    (no PVC, output_root in an object store or outside the mount) the InferenceService writes no
    request log."""
    kubeflow = config.kubeflow
    log_dir = PurePosixPath(config.request_log_dir)
    on_the_pvc = (
        kubeflow.pvc_name is not None
        and "://" not in config.request_log_dir
        and log_dir.is_absolute()
        and log_dir.is_relative_to(kubeflow.pvc_mount_path)
        and log_dir != PurePosixPath(kubeflow.pvc_mount_path)
    )
    if not (config.serving.log_requests and on_the_pvc):
        return {"log_requests": False}
    return {
        "log_requests": True,
        "request_log_dir": str(log_dir),
        "pvc_name": kubeflow.pvc_name,
        "pvc_mount_path": kubeflow.pvc_mount_path,
    }


def logs_requests(settings: KServeSettings) -> bool:
    return bool(
        settings.log_requests
        and settings.request_log_dir
        and settings.pvc_name
        and settings.pvc_mount_path
    )


def request_log_arg(settings: KServeSettings) -> str:
    """--request-log with one file per pod: Kubernetes expands $(POD_NAME) in args from the
    container's env (the downward API's metadata.name), and the monitor reads every
    `<model_name>*.jsonl` in request_log_dir."""
    path = f"{settings.request_log_dir}/{settings.model_name}-$({POD_NAME_ENV}).jsonl"
    return f"--request-log={path}"


def pusher_custom_config(config: PipelineConfig) -> dict[str, Any] | None:
    """Pusher's custom_config (create_pipeline): where to write the InferenceServices of each
    version it pushes (kserve_manifest_dir, on the PVC on Kubeflow) and the settings. None where
    nothing could give KServe the model (a local run: no serving.storage_uri, no PVC, a local
    output_root): then Pusher writes none. Other problems are config errors."""
    if not (config.serving.storage_uri or config.kubeflow.pvc_name or "://" in config.serving_dir):
        return None
    try:
        settings = KServeSettings.from_config(config)
    except KServeManifestError as err:  # e.g. output_root outside the PVC's mount
        raise ConfigError(str(err)) from err
    directory = config.kserve_manifest_dir
    return {
        "kserve": {
            # absolute, as TFX records every local path
            "manifest_dir": directory if "://" in directory else os.path.abspath(directory),
            "settings": settings.to_dict(),
        }
    }


def name_of(settings: KServeSettings, predictor: str) -> str:
    return settings.model_name + (TF_SERVING_SUFFIX if predictor == "tensorflow" else "")


def _resources(settings: KServeSettings) -> dict[str, dict[str, str]]:
    memory = f"{number_text(settings.memory_gb)}G"
    return {
        "requests": {"cpu": number_text(settings.cpu), "memory": memory},
        "limits": {"cpu": number_text(2 * settings.cpu), "memory": memory},
    }


def inference_service(
    settings: KServeSettings,
    predictor: str,
    model_version: int | None = None,
    previous_version: int | None = None,
) -> dict[str, Any]:
    """One InferenceService. model_version pins the custom predictor to that pushed version;
    previous_version (the version serving until now) makes the update a canary:
    canaryTrafficPercent of the traffic goes to the new revision, the rest stays on the last
    rolled-out one (KServe Serverless mode only)."""
    if predictor not in PREDICTORS:
        raise KServeManifestError(f"predictor {predictor!r}: one of {PREDICTORS}")
    for flag, value in (("model_version", model_version), ("previous_version", previous_version)):
        if value is not None and value < 0:
            raise KServeManifestError(f"{flag} {value}: a version folder number is >= 0")
    if previous_version is not None and model_version is None:
        raise KServeManifestError("previous_version (a canary) needs the new model_version")
    if previous_version is not None and previous_version == model_version:
        previous_version = None  # nothing to compare: an ordinary rollout
    spec: dict[str, Any] = {
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "scaleMetric": settings.scale_metric,
        "scaleTarget": settings.scale_target,
    }
    if settings.service_account:
        # KServe's storage initializer reads an s3:// storageUri with the keys and endpoint of
        # the Secret this ServiceAccount lists (manifests/kfp/object-store-access.yaml).
        spec["serviceAccountName"] = settings.service_account
    if previous_version is not None:
        # custom: the new revision runs --model-version=<new>, the last rolled-out one keeps the
        # old version, so the split really compares two models. tensorflow: TF Serving loads the
        # newest version under storageUri in every revision; the split only canaries a change of
        # the spec itself (runtimeVersion, resources), never two model versions.
        spec["canaryTrafficPercent"] = settings.canary_traffic_percent
    if predictor == "tensorflow":
        spec["model"] = {
            # The runtime's container name wins (KServe merges this spec into it); written
            # because the SDK's model defaults it to "" and the round trip must be exact.
            "name": CONTAINER_NAME,
            "modelFormat": {"name": "tensorflow", "version": "2"},
            "runtime": TF_RUNTIME,
            # The runtime's default image is old; runtimeVersion is TF Serving's image tag.
            "runtimeVersion": settings.tf_serving_version,
            "protocolVersion": "v1",  # TF Serving speaks V1 REST and gRPC v1 only
            "storageUri": settings.storage_uri,  # numbered version folders: TF Serving's layout
            "resources": _resources(settings),
        }
    else:
        args = [
            f"--model-dir={MODEL_MOUNT}",
            f"--model-name={settings.model_name}",
            f"--http-port={HTTP_PORT}",
            # the server's flags mirror config's serving section (serving/server.py)
            *server_flags(asdict(settings)),
        ]
        if model_version is not None:
            args.append(f"--model-version={model_version}")
        env: list[dict[str, Any]] = [
            # kserve 0.15's v1beta1 has no storageUri for a custom container: KServe takes
            # STORAGE_URI from kserve-container's env (CustomPredictor.GetStorageUri) and its
            # storage initializer fills /mnt/models from it.
            {"name": "STORAGE_URI", "value": settings.storage_uri},
            # protocolVersion exists only on predictor.model (a ServingRuntime); for a custom
            # container KServe reads PROTOCOL (v1 or v2, validated by the webhook) to know which
            # protocol the predictor speaks. The server answers V1 too.
            {"name": "PROTOCOL", "value": "v2"},
        ]
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": settings.image,
            "command": list(SERVER_COMMAND),
            "args": args,
            "env": env,
            "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
            "resources": _resources(settings),
        }
        if logs_requests(settings):
            args.append(request_log_arg(settings))
            # the pod's own name, for its log file's name ($(POD_NAME) in the args)
            env.append(
                {
                    "name": POD_NAME_ENV,
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                }
            )
            # the whole store, read-write (the log folder may not exist yet; the server creates
            # it), at the path the pipeline and the monitor use
            container["volumeMounts"] = [
                {"name": STORE_VOLUME, "mountPath": settings.pvc_mount_path}
            ]
        spec["containers"] = [container]
        if logs_requests(settings):
            spec["volumes"] = [
                {"name": STORE_VOLUME, "persistentVolumeClaim": {"claimName": settings.pvc_name}}
            ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name_of(settings, predictor),
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": settings.part_of},
            "annotations": dict(TAG_ROUTING),
        },
        "spec": {"predictor": spec},
    }


_ABOUT = {
    "custom": "Our predictor image (serving/, python -m serving.server): V1 and V2 (Open Inference "
    "Protocol) on port {port}, inputs validated against the serving contract. {pinned}",
    "tensorflow": "KServe's TensorFlow runtime (TF Serving {tf}): V1 REST and gRPC v1 only, model "
    "name {name} (/v1/models/{name}:predict). It serves the newest version under storageUri.",
}


def _comment(*paragraphs: str) -> str:
    """Comment lines; an indented paragraph (a command) stays on one line."""
    lines = [
        line
        for text in paragraphs
        for line in (
            [text] if text.startswith(" ") else textwrap.wrap(text, 98, break_on_hyphens=False)
        )
    ]
    return "".join(f"# {line}\n" for line in lines)


def _header(
    settings: KServeSettings,
    predictor: str,
    origin: str,
    model_version: int | None,
    previous_version: int | None,
) -> str:
    pinned = (
        "It serves the newest pushed version."
        if model_version is None
        else f"It serves version {model_version} only (--model-version)."
    )
    about = _ABOUT[predictor].format(
        port=HTTP_PORT,
        pinned=pinned,
        tf=settings.tf_serving_version,
        name=name_of(settings, predictor),
    )
    paragraphs = [*origin.splitlines(), about]
    if predictor == "custom" and logs_requests(settings):
        paragraphs.append(
            f"Request log: each pod appends its predictions to {settings.request_log_dir}/"
            f"{settings.model_name}-<pod>.jsonl on the PVC {settings.pvc_name}, which the "
            "monitor CronJob (manifests/monitoring/, shop-monitor check) reads."
        )
    if previous_version is not None and previous_version != model_version:
        paragraphs.append(
            f"Canary: {settings.canary_traffic_percent}% of the traffic to the new revision "
            f"(version {model_version}), the rest to the last rolled-out one (version "
            f"{previous_version})."
            + (
                " Here both revisions load the newest version: no A/B of two models."
                if predictor == "tensorflow"
                else ""
            )
        )
    name = FILES[predictor]
    paragraphs += [
        f"Check: .venv-serving/bin/python serving/validate_manifests.py {name}",
        f"Apply: kubectl apply -f {name}   (canaries: KServe's Serverless mode)",
    ]
    return _comment(*paragraphs)


def manifest_files(
    settings: KServeSettings,
    origin: str,
    model_version: int | None = None,
    previous_version: int | None = None,
) -> dict[str, str]:
    """File name -> YAML text: one InferenceService per predictor and a kustomization.yaml that
    lists both (two independent services with their own names: `kubectl apply -k` creates both,
    `kubectl apply -f <file>` one). origin: the header's first lines (who wrote the files)."""
    files = {}
    for predictor in PREDICTORS:
        body = inference_service(settings, predictor, model_version, previous_version)
        header = _header(settings, predictor, origin, model_version, previous_version)
        files[FILES[predictor]] = header + yaml.safe_dump(body, sort_keys=False)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [FILES[p] for p in PREDICTORS],
    }
    files[KUSTOMIZATION] = _comment(
        *origin.splitlines(),
        "Both InferenceServices (they have different names): kubectl apply -k <this folder>.",
    ) + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def _write_local(path: str, text: str) -> None:
    """Write-then-rename: a reader (kubectl, a CronJob) never sees half a file."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_manifests(
    directory: str,
    settings: KServeSettings,
    origin: str,
    model_version: int | None = None,
    previous_version: int | None = None,
    write: Callable[[str, str], None] | None = None,
) -> list[str]:
    """Writes manifest_files() into directory and returns their paths. write(path, text) replaces
    the local file writer (Pusher passes one for object stores)."""
    files = manifest_files(settings, origin, model_version, previous_version)
    paths = []
    for name, text in files.items():
        path = os.path.join(directory, name)
        (write or _write_local)(path, text)
        paths.append(path)
    return paths
