"""The monitor's cluster side (manifests/monitoring), checked without a cluster.

The CronJob goes through the Kubernetes client model as manifests/kfp's objects do
(test_manifests.round_trip_differences), then against the config (schedule, PVC), the image (the
config and package it runs) and manifests/kfp (the submitter's identity and KFP token, for the
retrains it submits). The PrometheusRule's metrics must be ones monitoring/metrics.py writes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest
import yaml
from repo_paths import REPO_ROOT
from test_manifests import (
    KF_PIPELINES_SA_TOKEN_PATH,
    NAMESPACE,
    PART_OF,
    _dockerfile_instructions,
    _flag,
    _image_uid,
    _pod_specs,
    round_trip_differences,
)

from monitoring.cli import build_parser
from monitoring.metrics import registry_for
from settings import MonitoringConfig, load_config

MONITORING = REPO_ROOT / "manifests" / "monitoring"
RECURRING_RUN = REPO_ROOT / "manifests" / "kfp" / "recurring-run.yaml"
RBAC = REPO_ROOT / "manifests" / "kfp" / "rbac.yaml"
CRONJOB_NAME = "shop-ranking-monitor"
COMMAND = [
    "shop-monitor", "check", "--config", "kubeflow", "--alert-exit-code", "0",
]  # fmt: skip


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _one(path: Path, kind: str) -> dict:
    (obj,) = [doc for doc in _load(path) if doc["kind"] == kind]
    return obj


@pytest.fixture(scope="module")
def cronjob() -> dict:
    return _one(MONITORING / "cronjob.yaml", "CronJob")


@pytest.fixture(scope="module")
def pod(cronjob) -> dict:
    return _pod_specs([cronjob])[CRONJOB_NAME]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["containers"]
    return only


@pytest.fixture(scope="module")
def rule() -> dict:
    return _one(MONITORING / "prometheus-rule.yaml", "PrometheusRule")


@pytest.fixture(scope="module")
def config():
    return load_config("kubeflow")


# The CronJob ------------------------------------------------------------------------------------


def test_the_cronjob_survives_the_client_model(cronjob):
    assert (cronjob["apiVersion"], cronjob["kind"]) == ("batch/v1", "CronJob")
    assert round_trip_differences(cronjob, "V1CronJob") == []
    spec = cronjob["spec"]
    assert cronjob["metadata"]["name"] == CRONJOB_NAME
    assert (spec["timeZone"], spec["concurrencyPolicy"]) == ("Etc/UTC", "Forbid")
    for field in (
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ):
        assert field in spec, field
    job = spec["jobTemplate"]["spec"]
    assert "backoffLimit" in job and job["activeDeadlineSeconds"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_the_schedule_is_the_configs(cronjob, config):
    assert cronjob["spec"]["schedule"] == MonitoringConfig().schedule == config.monitoring.schedule


def test_the_command_checks_with_the_config_the_image_carries(container, config):
    args = container.get("command", []) + container.get("args", [])
    assert args == COMMAND
    parsed = build_parser().parse_args(args[1:])  # flags the CLI really has
    assert (parsed.command, parsed.alert_exit_code, parsed.no_retrain) == ("check", 0, False)
    # A named config: settings/conf/<name>.yaml, package data in the installed package (so in the
    # image too); the same one the Dockerfile compiles the package with.
    in_image = _flag(args, "--config")
    assert (REPO_ROOT / "settings" / "conf" / f"{in_image}.yaml").is_file()
    assert load_config(in_image) == config
    compiles = [
        _flag(rest.split(), "--config")
        for name, rest in _dockerfile_instructions()
        if name == "RUN" and "shop-pipeline compile" in rest
    ]
    assert compiles == [in_image]
    # What a retrain needs from that config: a KFP run, the API in the cluster, and the compiled
    # package, at kubeflow.package_path from the image's WORKDIR.
    assert config.monitoring.retrain == "kubeflow"
    assert config.kubeflow.host == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert config.monitoring.pushgateway
    workdir = [rest for name, rest in _dockerfile_instructions() if name == "WORKDIR"][-1]
    (compile_run,) = [
        rest
        for name, rest in _dockerfile_instructions()
        if name == "RUN" and "shop-pipeline compile" in rest
    ]
    package = PurePosixPath(workdir) / config.kubeflow.package_path
    assert str(package) == _flag(compile_run.split(), "--output")


def test_the_image_and_user_are_the_pipelines(container, pod):
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert container["image"] == image["name"] == "shop-ranking"
    assert f"{image['newName']}:{image['newTag']}" == load_config("kubeflow").kubeflow.image
    assert str(pod["securityContext"]["runAsUser"]) == _image_uid()


def test_it_mounts_the_configs_pvc_read_write(pod, container, config):
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]
        for volume in pod["volumes"]
        if "persistentVolumeClaim" in volume
    }
    (name,) = claims
    assert claims[name]["claimName"] == config.kubeflow.pvc_name
    assert not claims[name].get("readOnly")
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == name]
    assert mount["mountPath"] == config.kubeflow.pvc_mount_path
    assert not mount.get("readOnly")
    # Every local file the monitor reads and writes is on that mount; the pushed versions (their
    # training statistics) are in the object store, with the pipeline's settings and keys.
    for path in (config.request_log_dir, config.outcomes_dir, config.monitoring_dir):
        assert PurePosixPath(path).is_relative_to(mount["mountPath"]), path
    assert config.serving_dir.startswith("s3://")
    env = {e["name"]: e for e in container["env"]}
    for name, value in config.object_store.environment().items():
        if name in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3"):
            continue  # boto3's; the monitor reads through tensorflow-io
        assert env[name]["value"] == value, name
    store = config.object_store
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": store.credentials_secret, "key": store.access_key_field}  # fmt: skip
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": store.credentials_secret, "key": store.secret_key_field}  # fmt: skip


def test_it_submits_as_the_daily_submitter_with_the_same_kfp_token(pod, container):
    submitter = _pod_specs(_load(RECURRING_RUN))["shop-ranking-daily"]
    assert pod["serviceAccountName"] == submitter["serviceAccountName"]
    assert pod["automountServiceAccountToken"] is False
    accounts = [d for d in _load(RBAC) if d["kind"] == "ServiceAccount"]
    assert pod["serviceAccountName"] in {a["metadata"]["name"] for a in accounts}

    def token(spec: dict, mounts: list[dict]) -> tuple[dict, dict]:
        (volume,) = [v for v in spec["volumes"] if "projected" in v]
        (mount,) = [m for m in mounts if m["name"] == volume["name"]]
        return volume, mount

    (submit_container,) = submitter["containers"]
    ours = token(pod, container["volumeMounts"])
    assert ours == token(submitter, submit_container["volumeMounts"])
    volume, mount = ours
    (source,) = volume["projected"]["sources"]
    path = f"{mount['mountPath'].rstrip('/')}/{source['serviceAccountToken']['path']}"
    assert path == KF_PIPELINES_SA_TOKEN_PATH


# The PrometheusRule ----------------------------------------------------------------------------


def _emitted_metrics() -> dict[str, set[str]]:
    """Metric name -> its label names, as registry_for writes them for a window report."""
    report = {
        "model": "shop-ranking",
        "window": {"end": 1700000000.0},
        "traffic_rows": 600,
        "shifts": [
            {
                "feature": "price",
                "comparison": "skew",
                "value": 0.2,
                "threshold": 0.1,
                "crossed": True,
            }
        ],
        "predictions": {"mean": 0.1, "shift_vs_previous": 0.05},
        "quality": {"labelled": 400, "auc": 0.71, "calibration": 1.1},
        "alert": True,
    }
    registry = registry_for(report, SimpleNamespace(fired=[]))
    return {
        sample.name: set(sample.labels)
        for family in registry.collect()
        for sample in family.samples
    }


def test_the_rules_alert_on_metrics_the_monitor_writes(rule, config):
    emitted = _emitted_metrics()
    assert all("model" in labels for labels in emitted.values()), emitted
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert rules and all(r.get("alert") for r in rules)
    used = set()
    for r in rules:
        names = set(re.findall(r"\bshop_monitor_[a-z_]+", r["expr"]))
        assert names <= set(emitted), (r["alert"], names - set(emitted))
        used |= names
        # each names the model: in its selector, its labels and its summary
        model = config.serving.model_name
        assert f'model="{model}"' in r["expr"], r["expr"]
        assert r["labels"]["model"] == model and r["labels"]["severity"]
        assert model in r["annotations"]["summary"]
    expressions = {re.sub(r"\s+", " ", r["expr"]) for r in rules}
    assert any(e.startswith("shop_monitor_alert{") and e.endswith("== 1") for e in expressions)
    assert any(
        e.startswith("time() - shop_monitor_window_end_timestamp_seconds{")
        and e.endswith("> 2 * 3600")
        for e in expressions
    ), expressions
    assert used == {"shop_monitor_alert", "shop_monitor_window_end_timestamp_seconds"}


def test_the_rule_is_a_prometheus_operator_rule(rule):
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r


# The kustomization -----------------------------------------------------------------------------


def test_the_kustomization_lists_every_file_and_matches_manifests_kfp():
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    files = {p.name for p in MONITORING.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    kfp = yaml.safe_load((REPO_ROOT / "manifests" / "kfp" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == kfp["namespace"] == NAMESPACE
    assert kustomization["labels"] == kfp["labels"]
    assert kustomization["images"] == kfp["images"]


def test_kustomize_renders_both_in_the_namespace_with_the_label():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH (needed for `kubectl kustomize`)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == {
        ("CronJob", CRONJOB_NAME),
        ("PrometheusRule", "shop-ranking-monitor"),
    }
    for obj in objects:
        assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"][PART_OF[0]] == PART_OF[1]
    (cronjob,) = [o for o in objects if o["kind"] == "CronJob"]
    assert round_trip_differences(cronjob, "V1CronJob") == []
    (container,) = _pod_specs([cronjob])[CRONJOB_NAME]["containers"]
    assert container["image"] == load_config("kubeflow").kubeflow.image
