"""KServe InferenceServices (serving.kserve.io/v1beta1) for the pushed model, built from the config.

Two predictors read the same pushed versions (Pusher's numbered folders under serving_dir):

- "custom" (`<model_name>`): our image (serving/, `python -m serving.server`), V1 and V2 (Open
  Inference Protocol) with request validation. With a model version it serves exactly that
  version, so a canary really compares two versions. With serving.log_requests and a PVC, every
  pod appends its predictions to its own file in request_log_dir on the PVC, which the monitor
  CronJob (manifests/monitoring/, `shop-monitor check`) reads. In front of it the recommendation
  transformer (same image, `python -m serving.transformer`, the recommend section's flags): the
  InferenceService's URL goes to it, it reads features from Feast's feature server and scores
  on the predictor over V2. The canary split stays on the predictor; the transformer's spec does
  not change between pushes, so it rolls out only when it changes itself.
- "tensorflow" (`<model_name>-tfserving`): KServe's TensorFlow runtime (TF Serving), V1 REST and
  gRPC v1 only; it always serves the newest version under storageUri.

Rendered from the validated PipelineConfig itself (its serving, recommend and kubeflow sections);
the values derived from them (storage URI, log folders, feature server, names) come from
settings/kserve.py, which the pipeline's compile-time checks use too. Plain dicts, no kserve
import: the kserve SDK needs protobuf >= 4.25, which TFX 1.16 forbids here.
serving/validate_manifests.py checks the files against kserve 0.15's models in .venv-serving.
Written by `shop-serve kserve-manifest` (manifests/kserve/) and, through write_pushed_version, by
the Pusher for each version it pushes (config.kserve_manifest_dir): pipelines/kserve_push.py
names it in the Pusher's custom_config.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from contract import layout
from settings import PipelineConfig, number_text, server_flags, transformer_flags
from settings import kserve as kserve_settings

API_VERSION, KIND = "serving.kserve.io/v1beta1", "InferenceService"
PREDICTORS = ("custom", "tensorflow")
FILES = {
    "custom": "inferenceservice-custom.yaml",
    "tensorflow": "inferenceservice-tensorflow.yaml",
}
KUSTOMIZATION = "kustomization.yaml"

# KServe's storage initializer puts storageUri (or a custom container's STORAGE_URI) here. A
# pvc:// folder is mounted here with enableDirectPvcVolumeMount (later pushes show up in running
# pods); without it the initializer links the entries it finds at pod start (kserve.storage).
MODEL_MOUNT = "/mnt/models"
CONTAINER_NAME = "kserve-container"  # the container KServe reads STORAGE_URI/PROTOCOL from
HTTP_PORT = 8080  # Knative's default user port; KServe routes here
SERVER_COMMAND = ["python", "-m", "serving.server"]
TRANSFORMER_COMMAND = ["python", "-m", "serving.transformer"]
# KServe's controller appends `--model_name <isvc name>`, `--predictor_host <isvc>-predictor.<ns>`
# and `--http_port 8080` to a custom transformer's args unless they are there already (kserve
# 0.15, pkg/apis/serving/v1beta1/transformer_custom.go, CustomTransformer.GetContainer), so the
# manifest leaves them to KServe. It never says which protocol the predictor speaks: kserve's
# ModelServer defaults to v1, ours serves V2 (PROTOCOL=v2 on the predictor).
PREDICTOR_PROTOCOL_ARG = "--predictor_protocol=v2"
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
    """A request the manifests cannot answer (a predictor or versions); config problems are
    settings.ConfigError (settings/kserve.py)."""


def name_of(config: PipelineConfig, predictor: str) -> str:
    if predictor == "tensorflow":
        return kserve_settings.tf_serving_name(config)
    return config.serving.model_name


def request_log_arg(config: PipelineConfig, log_dir: str) -> str:
    """--request-log with one file per pod: Kubernetes expands $(POD_NAME) in args from the
    container's env (the downward API's metadata.name), and the monitor reads every
    `<model_name>*.jsonl` in request_log_dir."""
    return f"--request-log={log_dir}/{config.serving.model_name}-$({POD_NAME_ENV}).jsonl"


def served_log_arg(config: PipelineConfig, log_dir: str) -> str:
    """--served-log with one file per transformer pod in the served lists' folder, named as the
    predictor's request log is (config.served_log_path locally)."""
    return f"--served-log={log_dir}/{config.serving.model_name}-$({POD_NAME_ENV}).jsonl"


def _resources(cpu: float, memory_gb: float) -> dict[str, dict[str, str]]:
    memory = f"{number_text(memory_gb)}G"
    return {
        "requests": {"cpu": number_text(cpu), "memory": memory},
        "limits": {"cpu": number_text(2 * cpu), "memory": memory},
    }


def _scaling(config: PipelineConfig) -> dict[str, Any]:
    """Replicas and autoscaling of one component: the predictor and the transformer each scale on
    their own with the serving section's values."""
    serving = config.serving
    return {
        "minReplicas": serving.min_replicas,
        "maxReplicas": serving.max_replicas,
        "scaleMetric": serving.scale_metric,
        "scaleTarget": serving.scale_target,
    }


def _log_to_the_store(
    config: PipelineConfig, container: dict[str, Any], spec: dict[str, Any]
) -> None:
    """A container that appends a log file named after its pod: the pod's own name in its env
    ($(POD_NAME) in the args, from the downward API) and the whole store mounted read-write (the
    log folder may not exist yet; the server creates it) at the path the pipeline and the monitor
    use."""
    container.setdefault("env", []).append(
        {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    container["volumeMounts"] = [
        {"name": STORE_VOLUME, "mountPath": config.kubeflow.pvc_mount_path}
    ]
    spec["volumes"] = [
        {"name": STORE_VOLUME, "persistentVolumeClaim": {"claimName": config.kubeflow.pvc_name}}
    ]


def _transformer(config: PipelineConfig) -> dict[str, Any]:
    """The custom InferenceService's spec.transformer: serving/transformer.py in the predictor's
    image with the recommend section's flags, its own replicas (scaled on its own) and, with
    recommend.log_served and the PVC, its served lists in their own folder. No
    canaryTrafficPercent: the split is the predictor's, a transformer change rolls out whole."""
    serving = config.serving
    args = [
        PREDICTOR_PROTOCOL_ARG,
        # the transformer's flags mirror config's recommend section (serving/transformer.py);
        # its feature server URL is one a pod can reach (settings/kserve.py's check)
        *transformer_flags(config.recommend.model_dump()),
    ]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,  # KServe names it so anyway (CustomTransformer.Default)
        "image": serving.image,
        "command": list(TRANSFORMER_COMMAND),
        "args": args,
        # no ports: KServe passes --http_port 8080 and routes to 8080 when none are declared
        "resources": _resources(serving.transformer_cpu, serving.transformer_memory_gb),
    }
    spec: dict[str, Any] = {**_scaling(config), "containers": [container]}
    log_dir = kserve_settings.served_log_dir(config)
    if log_dir is not None:
        args.append(served_log_arg(config, log_dir))
        _log_to_the_store(config, container, spec)
    return spec


def inference_service(
    config: PipelineConfig,
    predictor: str,
    model_version: int | None = None,
    previous_version: int | None = None,
) -> dict[str, Any]:
    """One InferenceService. model_version pins the custom predictor to that pushed version;
    previous_version (the version serving until now) makes the update a canary:
    canaryTrafficPercent of the traffic goes to the new revision, the rest stays on the last
    rolled-out one (KServe Serverless mode only). The custom one has the transformer in front
    (_transformer), the same in every version's manifest. ConfigError where the config cannot
    give one (settings/kserve.py's check)."""
    if predictor not in PREDICTORS:
        raise KServeManifestError(f"predictor {predictor!r}: one of {PREDICTORS}")
    for flag, value in (("model_version", model_version), ("previous_version", previous_version)):
        if value is not None and value < 0:
            raise KServeManifestError(f"{flag} {value}: a version folder number is >= 0")
    if previous_version is not None and model_version is None:
        raise KServeManifestError("previous_version (a canary) needs the new model_version")
    if previous_version is not None and previous_version == model_version:
        previous_version = None  # nothing to compare: an ordinary rollout
    kserve_settings.check(config)
    serving = config.serving
    storage_uri = kserve_settings.storage_uri(config)
    spec: dict[str, Any] = _scaling(config)
    if serving.service_account:
        # KServe's storage initializer reads an s3:// storageUri with the keys and endpoint of
        # the Secret this ServiceAccount lists (manifests/kfp/object-store-access.yaml).
        spec["serviceAccountName"] = serving.service_account
    if previous_version is not None:
        # custom: the new revision runs --model-version=<new>, the last rolled-out one keeps the
        # old version, so the split really compares two models. tensorflow: TF Serving loads the
        # newest version under storageUri in every revision; the split only canaries a change of
        # the spec itself (runtimeVersion, resources), never two model versions.
        spec["canaryTrafficPercent"] = serving.canary_traffic_percent
    if predictor == "tensorflow":
        spec["model"] = {
            # The runtime's container name wins (KServe merges this spec into it); written
            # because the SDK's model defaults it to "" and the round trip must be exact.
            "name": CONTAINER_NAME,
            "modelFormat": {"name": "tensorflow", "version": "2"},
            "runtime": TF_RUNTIME,
            # The runtime's default image is old; runtimeVersion is TF Serving's image tag.
            "runtimeVersion": serving.tf_serving_version,
            "protocolVersion": "v1",  # TF Serving speaks V1 REST and gRPC v1 only
            "storageUri": storage_uri,  # numbered version folders: TF Serving's layout
            "resources": _resources(serving.cpu, serving.memory_gb),
        }
    else:
        args = [
            f"--model-dir={MODEL_MOUNT}",
            f"--model-name={serving.model_name}",
            f"--http-port={HTTP_PORT}",
            # the server's flags mirror config's serving section (serving/server.py)
            *server_flags(serving.model_dump()),
        ]
        if model_version is not None:
            args.append(f"--model-version={model_version}")
        env: list[dict[str, Any]] = [
            # kserve 0.15's v1beta1 has no storageUri for a custom container: KServe takes
            # STORAGE_URI from kserve-container's env (CustomPredictor.GetStorageUri) and its
            # storage initializer fills /mnt/models from it.
            {"name": "STORAGE_URI", "value": storage_uri},
            # protocolVersion exists only on predictor.model (a ServingRuntime); for a custom
            # container KServe reads PROTOCOL (v1 or v2, validated by the webhook) to know which
            # protocol the predictor speaks. The server answers V1 too.
            {"name": "PROTOCOL", "value": "v2"},
        ]
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": serving.image,
            "command": list(SERVER_COMMAND),
            "args": args,
            "env": env,
            "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
            "resources": _resources(serving.cpu, serving.memory_gb),
        }
        spec["containers"] = [container]
        log_dir = kserve_settings.request_log_dir(config)
        if log_dir is not None:
            args.append(request_log_arg(config, log_dir))
            _log_to_the_store(config, container, spec)
    components = {"predictor": spec}
    if predictor == "custom":
        components["transformer"] = _transformer(config)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name_of(config, predictor),
            "namespace": serving.namespace,
            "labels": {"app.kubernetes.io/part-of": config.name},
            "annotations": dict(TAG_ROUTING),
        },
        "spec": components,
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
    config: PipelineConfig,
    predictor: str,
    origin: str,
    model_version: int | None,
    previous_version: int | None,
) -> str:
    serving = config.serving
    pinned = (
        "It serves the newest pushed version."
        if model_version is None
        else f"It serves version {model_version} only (--model-version)."
    )
    about = _ABOUT[predictor].format(
        port=HTTP_PORT,
        pinned=pinned,
        tf=serving.tf_serving_version,
        name=name_of(config, predictor),
    )
    paragraphs = [*origin.splitlines(), about]
    log_dir = kserve_settings.request_log_dir(config)
    if predictor == "custom" and log_dir is not None:
        paragraphs.append(
            f"Request log: each pod appends its predictions to {log_dir}/"
            f"{serving.model_name}-<pod>.jsonl on the PVC {config.kubeflow.pvc_name}, which the "
            "monitor CronJob (manifests/monitoring/, shop-monitor check) reads."
        )
    if predictor == "custom":
        paragraphs.append(
            "Transformer in front (python -m serving.transformer, the same image): the "
            "InferenceService's URL goes to it (POST /v1/models/"
            f"{serving.model_name}:predict with user_id, context, k); it reads the features from "
            f"Feast's feature server {config.recommend.feature_server_url} and scores on the "
            "predictor over V2 (KServe passes --model_name, --predictor_host, --http_port). It "
            "scales on its own; the canary split is the predictor's."
        )
        served_dir = kserve_settings.served_log_dir(config)
        if served_dir is not None:
            paragraphs.append(
                f"Served lists: each transformer pod appends them to {served_dir}/"
                f"{serving.model_name}-<pod>.jsonl on the PVC {config.kubeflow.pvc_name}."
            )
    if previous_version is not None and previous_version != model_version:
        paragraphs.append(
            f"Canary: {serving.canary_traffic_percent}% of the traffic to the new revision "
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
    config: PipelineConfig,
    origin: str,
    model_version: int | None = None,
    previous_version: int | None = None,
) -> dict[str, str]:
    """File name -> YAML text: one InferenceService per predictor and a kustomization.yaml that
    lists both (two independent services with their own names: `kubectl apply -k` creates both,
    `kubectl apply -f <file>` one). origin: the header's first lines (who wrote the files)."""
    files = {}
    for predictor in PREDICTORS:
        body = inference_service(config, predictor, model_version, previous_version)
        header = _header(config, predictor, origin, model_version, previous_version)
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


def write_manifests(
    directory: str,
    config: PipelineConfig,
    origin: str,
    model_version: int | None = None,
    previous_version: int | None = None,
    write: Callable[[str, str], Any] | None = None,
) -> list[str]:
    """Writes manifest_files() into directory and returns their paths; nothing when the config
    cannot give them. write(path, text) replaces the local atomic writer (contract/layout.py;
    Pusher passes one for object stores)."""
    files = manifest_files(config, origin, model_version, previous_version)
    paths = []
    for name, text in files.items():
        path = os.path.join(directory, name)
        (write or layout.write_text)(path, text)
        paths.append(path)
    return paths


def write_pushed_version(
    manifest_dir: str,
    config: Mapping[str, Any] | PipelineConfig,
    model_version: int,
    previous_version: int | None = None,
    write: Callable[[str, str], Any] | None = None,
) -> list[str]:
    """The Pusher's renderer (named by import path in its custom_config, pipelines/kserve_push.py):
    the InferenceServices of the version it just pushed, into manifest_dir. config is the
    PipelineConfig as the custom_config carries it (model_dump(mode="json")), validated again
    here; the custom predictor is pinned to model_version, with a canary against
    previous_version (the newest version before the push) when there was one."""
    config = PipelineConfig.model_validate(config)
    origin = (
        f"Written by the Pusher when it pushed version {model_version}"
        + (
            f" (previous version {previous_version})"
            if previous_version is not None
            else " (no previous version)"
        )
        + f" to {kserve_settings.storage_uri(config)}; replaced by the next push."
    )
    return write_manifests(manifest_dir, config, origin, model_version, previous_version, write)
