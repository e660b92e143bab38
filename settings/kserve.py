"""What KServe needs from the config, derived once: pipelines/ checks it when it compiles the
Pusher's custom_config, serving/kserve_manifest.py renders the InferenceServices from it.

Functions of the validated PipelineConfig, not a copy of its fields: the renderer reads the
serving and kubeflow sections themselves and only the values below are computed.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from settings import ConfigError, PipelineConfig

# The TF Serving InferenceService is named <serving.model_name><TF_SERVING_SUFFIX>.
TF_SERVING_SUFFIX = "-tfserving"
MAX_NAME_LENGTH = 63  # a Kubernetes name (DNS-1123 label)


def has_model_source(config: PipelineConfig) -> bool:
    """Whether anything could give KServe the pushed versions: serving.storage_uri, a PVC
    (kubeflow.pvc_name) or serving_dir in an object store. A local run has none: no
    InferenceServices are written for it."""
    return bool(
        config.serving.storage_uri or config.kubeflow.pvc_name or "://" in config.serving_dir
    )


def storage_uri(config: PipelineConfig) -> str:
    """Where KServe reads the pushed versions: serving.storage_uri, else serving_dir itself when it
    is an object store (gs://, s3://), else pvc://<kubeflow.pvc_name>/<serving_dir under the
    mount>. ConfigError, naming the fields, where there is none."""
    if config.serving.storage_uri:
        return config.serving.storage_uri
    serving_dir = config.serving_dir
    if "://" in serving_dir:
        return serving_dir
    kubeflow = config.kubeflow
    if not kubeflow.pvc_name:
        raise ConfigError(
            "no storage URI for KServe: set serving.storage_uri (pvc://<claim>/<path>, gs://...), "
            f"or kubeflow.pvc_name with output_root under kubeflow.pvc_mount_path "
            f"(serving_dir is {serving_dir!r}, kubeflow.pvc_name is null)"
        )
    path, mount = PurePosixPath(serving_dir), PurePosixPath(kubeflow.pvc_mount_path)
    if not (path.is_absolute() and path.is_relative_to(mount) and path != mount):
        raise ConfigError(
            f"no storage URI for KServe: serving_dir {serving_dir!r} (from output_root "
            f"{config.output_root!r}) is not under kubeflow.pvc_mount_path "
            f"{kubeflow.pvc_mount_path!r}; move output_root there or set serving.storage_uri"
        )
    return f"pvc://{kubeflow.pvc_name}/{path.relative_to(mount)}"


def request_log_dir(config: PipelineConfig) -> str | None:
    """The folder the custom predictor's pods append their request logs to, or None: it logs
    only with serving.log_requests, a PVC (kubeflow.pvc_name) and request_log_dir under
    kubeflow.pvc_mount_path (settings/conf/kubeflow.yaml: /mnt/shop/outputs/serving_logs), the
    same path in the predictor pod (the PVC mounted at pvc_mount_path) as in the monitor's. Else
    (no PVC, output_root in an object store or outside the mount) the InferenceService writes no
    request log."""
    kubeflow = config.kubeflow
    log_dir, mount = PurePosixPath(config.request_log_dir), PurePosixPath(kubeflow.pvc_mount_path)
    on_the_pvc = (
        kubeflow.pvc_name is not None
        and "://" not in config.request_log_dir
        and log_dir.is_absolute()
        and log_dir.is_relative_to(mount)
        and log_dir != mount
    )
    return str(log_dir) if config.serving.log_requests and on_the_pvc else None


def tf_serving_name(config: PipelineConfig) -> str:
    """The TF Serving InferenceService's name (the custom predictor's is serving.model_name)."""
    return config.serving.model_name + TF_SERVING_SUFFIX


def check(config: PipelineConfig) -> None:
    """ConfigError, naming the fields, where the config cannot give valid InferenceServices: no
    storage URI (storage_uri) or a model name too long for the TF Serving service's name."""
    storage_uri(config)
    if len(tf_serving_name(config)) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"serving.model_name {config.serving.model_name!r}: with {TF_SERVING_SUFFIX!r} it is "
            f"longer than a Kubernetes name may be ({MAX_NAME_LENGTH})"
        )
