"""What KServe needs from the config, derived once: pipelines/ checks it when it compiles the
Pusher's custom_config, serving/kserve_manifest.py renders the InferenceServices from it.

Functions of the validated PipelineConfig, not a copy of its fields: the renderer reads the
serving, recommend and kubeflow sections themselves and only the values below are computed.
"""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath
from urllib.parse import urlsplit

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


def _log_dir_on_the_pvc(config: PipelineConfig, folder: str) -> str | None:
    """`folder` where a pod can append to it: a PVC (kubeflow.pvc_name) and the folder under
    kubeflow.pvc_mount_path, the same path in the serving pods (the PVC mounted at
    pvc_mount_path) as in the monitor's; else None."""
    kubeflow = config.kubeflow
    log_dir, mount = PurePosixPath(folder), PurePosixPath(kubeflow.pvc_mount_path)
    on_the_pvc = (
        kubeflow.pvc_name is not None
        and "://" not in folder
        and log_dir.is_absolute()
        and log_dir.is_relative_to(mount)
        and log_dir != mount
    )
    return str(log_dir) if on_the_pvc else None


def request_log_dir(config: PipelineConfig) -> str | None:
    """The folder the custom predictor's pods append their request logs to, or None: it logs
    only with serving.log_requests, a PVC (kubeflow.pvc_name) and request_log_dir under
    kubeflow.pvc_mount_path (settings/conf/kubeflow.yaml: /mnt/shop/outputs/serving_logs), the
    same path in the predictor pod (the PVC mounted at pvc_mount_path) as in the monitor's. Else
    (no PVC, output_root in an object store or outside the mount) the InferenceService writes no
    request log."""
    return (
        _log_dir_on_the_pvc(config, config.request_log_dir) if config.serving.log_requests else None
    )


def served_log_dir(config: PipelineConfig) -> str | None:
    """The folder the transformer's pods append their served lists to (served_log_dir, beside
    request_log_dir), or None: only with recommend.log_served and the folder on the PVC, the
    rule of request_log_dir."""
    if not config.recommend.log_served:
        return None
    return _log_dir_on_the_pvc(config, config.served_log_dir)


def feature_server_url(config: PipelineConfig) -> str:
    """recommend.feature_server_url as the transformer pod calls it; ConfigError for a loopback
    address (the local default http://127.0.0.1:6566), which in a pod reaches nothing. On
    Kubeflow it is the Service of manifests/stream/feature-server.yaml
    (settings/conf/kubeflow.yaml)."""
    url = config.recommend.feature_server_url
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
        pod_local = address.is_loopback or address.is_unspecified
    except ValueError:  # a name, not an address
        pod_local = host in ("", "localhost") or host.endswith(".localhost")
    if pod_local:
        raise ConfigError(
            f"recommend.feature_server_url {url!r}: the transformer pod cannot reach Feast's "
            "feature server there; set it to the feature server's Service (settings/conf/"
            "kubeflow.yaml: manifests/stream/feature-server.yaml's shop-feature-server)"
        )
    return url


def tf_serving_name(config: PipelineConfig) -> str:
    """The TF Serving InferenceService's name (the custom predictor's is serving.model_name)."""
    return config.serving.model_name + TF_SERVING_SUFFIX


def check(config: PipelineConfig) -> None:
    """ConfigError, naming the fields, where the config cannot give valid InferenceServices: no
    storage URI (storage_uri), a model name too long for the TF Serving service's name, or a
    feature server the transformer cannot reach (feature_server_url)."""
    storage_uri(config)
    if len(tf_serving_name(config)) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"serving.model_name {config.serving.model_name!r}: with {TF_SERVING_SUFFIX!r} it is "
            f"longer than a Kubernetes name may be ({MAX_NAME_LENGTH})"
        )
    feature_server_url(config)
