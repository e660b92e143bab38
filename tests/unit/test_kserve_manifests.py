"""KServe InferenceServices: rendered from the validated config (serving/kserve_manifest.py, with
settings/kserve.py's derivations), committed in manifests/kserve/ (regenerate with
`make kserve-manifest`), checked against kserve 0.15's models in .venv-serving
(serving/validate_manifests.py), and written by Pusher for each version it pushes, through the
renderer its custom_config names (pipelines/kserve_push.py).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from repo_paths import REPO_ROOT

from contract import layout
from pipelines.kserve_push import pusher_custom_config
from serving.cli import main
from serving.kserve_manifest import (
    CONTAINER_NAME,
    FILES,
    KUSTOMIZATION,
    MODEL_MOUNT,
    POD_NAME_ENV,
    PREDICTOR_PROTOCOL_ARG,
    KServeManifestError,
    inference_service,
    write_manifests,
    write_pushed_version,
)
from settings import ConfigError, PipelineConfig, load_config, transformer_flags
from settings.kserve import check, request_log_dir, served_log_dir, storage_uri

MANIFESTS = REPO_ROOT / "manifests" / "kserve"
SERVING_PYTHON = REPO_ROOT / ".venv-serving" / "bin" / "python"
VALIDATOR = REPO_ROOT / "serving" / "validate_manifests.py"
KUBEFLOW_URI = "s3://mlpipeline/shop-ranking/outputs/serving/shop-ranking"


@pytest.fixture(scope="module")
def kubeflow() -> PipelineConfig:
    """settings/conf/kubeflow.yaml: what manifests/kserve/ is rendered from."""
    return load_config("kubeflow")


def _validate(*paths: Path) -> subprocess.CompletedProcess:
    if not SERVING_PYTHON.exists():
        pytest.fail(f"{SERVING_PYTHON} is missing: run `make serving-env`")
    return subprocess.run(
        [str(SERVING_PYTHON), str(VALIDATOR), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


def _lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    """validator output: file -> its line ("ok   <file>: ..." or "FAIL <file>: ...")."""
    lines = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        lines[rest.strip().split(": ", 1)[0]] = f"{status} {rest.strip()}"
    return lines


POD_NAME = {"fieldRef": {"fieldPath": "metadata.name"}}  # the downward API's pod name


def _env(container: dict) -> dict[str, Any]:
    """name -> value, or its valueFrom (the downward API's POD_NAME)."""
    return {e["name"]: e["value"] if "value" in e else e["valueFrom"] for e in container["env"]}


# --- the committed manifests ------------------------------------------------------------------


def test_the_committed_manifests_are_what_the_config_generates(tmp_path):
    assert main(["kserve-manifest", "--config", "kubeflow", "--output-dir", str(tmp_path)]) == 0
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in MANIFESTS.iterdir()}
    assert committed == fresh, "manifests/kserve/ is stale: run `make kserve-manifest`"
    assert set(fresh) == {*FILES.values(), KUSTOMIZATION}


def test_committed_and_canary_manifests_survive_the_kserve_sdk_models(tmp_path, kubeflow):
    canary = write_manifests(str(tmp_path), kubeflow, "test", 1700000200, 1700000100)
    kustomization = Path("manifests/kserve") / KUSTOMIZATION  # lines name files as given
    result = _validate(kustomization, *[Path(p) for p in canary if p.endswith(FILES["custom"])])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result)
    for name in FILES.values():  # the kustomization stands for both of its files
        line = lines[str(Path("manifests/kserve") / name)]
        assert line.startswith("ok "), line
    assert "custom container, v2" in lines["manifests/kserve/" + FILES["custom"]]
    assert "+ transformer (predictor over v2)" in lines["manifests/kserve/" + FILES["custom"]]
    assert "transformer" not in lines["manifests/kserve/" + FILES["tensorflow"]]
    assert "tensorflow model, v1" in lines["manifests/kserve/" + FILES["tensorflow"]]
    assert "canary 10%" in lines[str(tmp_path / FILES["custom"])]


BROKEN = {  # file name -> (change to spec, the start of its FAIL line's message)
    "kserve-field": (
        lambda s: s["predictor"].update(canaryTraficPercent=10),
        "spec.predictor.canaryTraficPercent: dropped by the model",
    ),
    "kubernetes-field": (
        lambda s: s["predictor"]["containers"][0].update(comand=["true"]),
        "spec.predictor.containers[0].comand: dropped by the model",
    ),
    "wrong-type": (
        lambda s: s["predictor"].update(canaryTrafficPercent="10"),
        "spec.predictor.canaryTrafficPercent: '10' is not of type int",
    ),
    "transformer-field": (
        lambda s: s["transformer"].update(minReplica=2),
        "spec.transformer.minReplica: dropped by the model",
    ),
    "transformer-container-field": (
        lambda s: s["transformer"]["containers"][0].update(agrs=[]),
        "spec.transformer.containers[0].agrs: dropped by the model",
    ),
    "transformer-wrong-type": (
        lambda s: s["transformer"].update(scaleTarget="8"),
        "spec.transformer.scaleTarget: '8' is not of type int",
    ),
    "transformer-without-container": (
        lambda s: s["transformer"].pop("containers"),
        "spec.transformer.containers: a transformer needs its container",
    ),
}


def test_the_validator_rejects_a_broken_manifest_naming_the_file_and_field(tmp_path):
    files = {}
    for name, (change, _) in BROKEN.items():
        manifest = yaml.safe_load((MANIFESTS / FILES["custom"]).read_text())
        change(manifest["spec"])
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(manifest))
    result = _validate(*files.values())
    assert result.returncode == 1, result.stdout + result.stderr
    lines = _lines(result)
    for name, (_, message) in BROKEN.items():
        assert lines[str(files[name])].startswith(f"FAIL {files[name]}: {message}"), lines


def test_the_kustomization_renders_both_inference_services():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH (needed for `kubectl kustomize`)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout) if d}
    assert names == {"shop-ranking", "shop-ranking-tfserving"}


# --- what the manifests say -------------------------------------------------------------------


def test_a_canary_only_with_a_previous_version(kubeflow):
    def predictors(model_version=None, previous_version=None):
        return [
            inference_service(kubeflow, p, model_version, previous_version)["spec"]["predictor"]
            for p in ("custom", "tensorflow")
        ]

    for custom, tensorflow in (predictors(), predictors(1700000200)):
        assert "canaryTrafficPercent" not in custom and "canaryTrafficPercent" not in tensorflow
    custom, tensorflow = predictors(1700000200, 1700000100)
    assert custom["canaryTrafficPercent"] == tensorflow["canaryTrafficPercent"] == 10
    # Only the custom predictor pins the version: its new revision differs from the old one.
    assert "--model-version=1700000200" in custom["containers"][0]["args"]
    assert not any("version" in a for a in predictors()[0]["containers"][0]["args"])
    assert tensorflow["model"]["storageUri"] == KUBEFLOW_URI  # newest version, both revisions
    assert "canaryTrafficPercent" not in predictors(1700000200, 1700000200)[0]
    with pytest.raises(KServeManifestError, match="needs the new model_version"):
        predictors(None, 1700000100)


def test_each_predictor_speaks_its_protocol_and_reads_the_pushed_versions(kubeflow):
    custom = inference_service(kubeflow, "custom")
    tensorflow = inference_service(kubeflow, "tensorflow")
    assert custom["metadata"]["name"] == "shop-ranking"
    assert tensorflow["metadata"]["name"] == "shop-ranking-tfserving"
    assert {custom["metadata"]["namespace"], tensorflow["metadata"]["namespace"]} == {"kubeflow"}
    (container,) = custom["spec"]["predictor"]["containers"]
    assert container["name"] == CONTAINER_NAME
    assert container["command"] == ["python", "-m", "serving.server"]
    env = _env(container)
    assert (env["STORAGE_URI"], env["PROTOCOL"]) == (KUBEFLOW_URI, "v2")
    assert f"--model-dir={MODEL_MOUNT}" in container["args"]
    assert "--model-name=shop-ranking" in container["args"]
    model = tensorflow["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    assert model["runtimeVersion"] == load_config("kubeflow").serving.tf_serving_version
    assert (model["protocolVersion"], model["storageUri"]) == ("v1", KUBEFLOW_URI)
    for predictor in (custom, tensorflow):
        spec = predictor["spec"]["predictor"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)
        assert (spec["scaleMetric"], spec["scaleTarget"]) == ("concurrency", 8)


def test_every_flag_the_manifest_passes_is_one_the_server_takes(kubeflow):
    declared = set(
        re.findall(r'add_argument\(\s*"(--[a-z-]+)"', (REPO_ROOT / "serving/server.py").read_text())
    )
    (container,) = inference_service(kubeflow, "custom", 1700000200)["spec"]["predictor"][
        "containers"
    ]
    passed = {arg.split("=", 1)[0] for arg in container["args"]}
    assert passed <= declared, passed - declared


# --- the transformer in front of the custom predictor --------------------------------------------

# What KServe's controller appends to a custom transformer's args unless they are given (kserve
# 0.15, pkg/apis/serving/v1beta1/transformer_custom.go: --model_name <isvc>, --predictor_host
# <isvc>-predictor.<namespace>, --http_port 8080, --workers with containerConcurrency); it
# matches by prefix, so none of them may start an arg of ours.
KSERVE_INJECTS = ("--model_name", "--predictor_host", "--http_port", "--workers")


def _transformer(config: PipelineConfig, *versions: int) -> dict[str, Any]:
    return inference_service(config, "custom", *versions)["spec"]["transformer"]


def test_the_transformer_runs_the_recommend_flags_against_the_v2_predictor(kubeflow):
    spec = _transformer(kubeflow)
    (container,) = spec["containers"]
    assert container["name"] == CONTAINER_NAME
    assert container["image"] == kubeflow.serving.image  # the predictor's image
    assert container["command"] == ["python", "-m", "serving.transformer"]
    args = container["args"]
    assert args[0] == PREDICTOR_PROTOCOL_ARG == "--predictor_protocol=v2"
    assert args[1:-1] == transformer_flags(kubeflow.recommend.model_dump())
    assert "--max-k=50" in args and "--timeout-s=2" in args
    assert not [a for a in args if a.startswith(KSERVE_INJECTS)]  # KServe's to pass
    # it loads no model and announces no protocol: no storage initializer, no ports (KServe's 8080)
    assert set(_env(container)) == {POD_NAME_ENV} and "ports" not in container
    assert container["resources"] == {
        "requests": {"cpu": "0.5", "memory": "1G"},
        "limits": {"cpu": "1", "memory": "1G"},
    }
    # its own replicas, scaled on its own with the serving section's values
    predictor = inference_service(kubeflow, "custom")["spec"]["predictor"]
    scaling = ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")
    assert {k: spec[k] for k in scaling} == {k: predictor[k] for k in scaling}
    assert "serviceAccountName" not in spec  # it reads no storage
    assert "transformer" not in inference_service(kubeflow, "tensorflow")["spec"]
    resized = load_config("kubeflow", ["serving.transformer_cpu=2", "serving.max_replicas=9"])
    spec = _transformer(resized)
    assert spec["containers"][0]["resources"]["limits"]["cpu"] == "4" and spec["maxReplicas"] == 9


def _declared_flags(path: Path) -> set[str]:
    return set(re.findall(r'add_argument\(\s*"(--[a-z_-]+)"', path.read_text()))


def test_every_flag_the_transformer_gets_is_one_it_or_kserve_s_model_server_takes(kubeflow):
    if not SERVING_PYTHON.exists():
        pytest.fail(f"{SERVING_PYTHON} is missing: run `make serving-env`")
    (model_server,) = (REPO_ROOT / ".venv-serving" / "lib").glob(
        "python*/site-packages/kserve/model_server.py"
    )
    kserve = _declared_flags(model_server)  # kserve parses sys.argv at import
    assert {*KSERVE_INJECTS, "--predictor_protocol"} <= kserve
    ours = _declared_flags(REPO_ROOT / "serving" / "transformer.py")
    passed = {arg.split("=", 1)[0] for arg in _transformer(kubeflow)["containers"][0]["args"]}
    assert passed <= kserve | ours, passed - kserve - ours
    assert "--served-log" in passed


def test_the_canary_is_the_predictor_s_and_the_transformer_is_the_same_in_every_push(kubeflow):
    service = inference_service(kubeflow, "custom", 1700000200, 1700000100)
    assert service["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "canaryTrafficPercent" not in service["spec"]["transformer"]
    # unchanged between pushes: applying a new version's manifest starts no transformer revision
    assert (
        service["spec"]["transformer"]
        == _transformer(kubeflow)
        == _transformer(kubeflow, 1700000300)
    )


def test_the_feature_server_is_the_stream_manifests_service(kubeflow):
    stream = REPO_ROOT / "manifests" / "stream"
    (service,) = [
        d
        for d in yaml.safe_load_all((stream / "feature-server.yaml").read_text())
        if d and d["kind"] == "Service"
    ]
    namespace = yaml.safe_load((stream / "kustomization.yaml").read_text())["namespace"]
    (port,) = service["spec"]["ports"]
    url = f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:{port['port']}"
    assert f"--feature-server-url={url}" in _transformer(kubeflow)["containers"][0]["args"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6566", "http://localhost:6566", "http://[::1]:6566", "http://0.0.0.0"]
)
def test_a_feature_server_a_pod_cannot_reach_is_refused_naming_the_field(url):
    config = load_config("kubeflow", [f"recommend.feature_server_url={url}"])
    with pytest.raises(ConfigError, match="recommend.feature_server_url"):
        inference_service(config, "custom")
    with pytest.raises(ConfigError, match="recommend.feature_server_url"):  # when compiled
        pusher_custom_config(config)


def _served_log_args(container: dict) -> list[str]:
    return [a for a in container["args"] if a.startswith("--served-log")]


def test_each_transformer_pod_logs_its_served_lists_to_its_own_file_on_the_pvc(kubeflow):
    spec = _transformer(kubeflow)
    (container,) = spec["containers"]
    log_dir = kubeflow.served_log_dir
    assert served_log_dir(kubeflow) == log_dir == "/mnt/shop/outputs/served_lists"
    # named as the predictor's request log, in a folder of its own (served_log_path, locally)
    assert _served_log_args(container) == [
        f"--served-log={log_dir}/shop-ranking-$({POD_NAME_ENV}).jsonl"
    ]
    assert kubeflow.served_log_path == f"{log_dir}/shop-ranking.jsonl"
    assert _env(container)[POD_NAME_ENV] == POD_NAME
    assert container["volumeMounts"] == [{"name": "store", "mountPath": "/mnt/shop"}]
    assert spec["volumes"] == [
        {"name": "store", "persistentVolumeClaim": {"claimName": kubeflow.kubeflow.pvc_name}}
    ]
    # the two logs are switched on their own
    quiet = load_config("kubeflow", ["serving.log_requests=false"])
    assert _served_log_args(_transformer(quiet)["containers"][0])
    assert not _request_log_args(
        inference_service(quiet, "custom")["spec"]["predictor"]["containers"][0]
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["recommend.log_served=false"],
        ["kubeflow.pvc_name=null", "serving.storage_uri=gs://models/shop"],
        ["output_root=gs://bucket/shop", "kubeflow.pvc_name=null"],
        ["monitoring.root=/data/outputs", "serving.storage_uri=pvc://shop-ranking-store/models"],
    ],
    ids=["log-served-off", "no-pvc", "object-store", "outside-the-mount"],
)
def test_no_served_log_without_log_served_or_the_pvc(overrides):
    config = load_config("kubeflow", overrides)
    assert served_log_dir(config) is None
    spec = _transformer(config)
    (container,) = spec["containers"]
    assert not _served_log_args(container)
    assert "env" not in container and "volumeMounts" not in container and "volumes" not in spec


# --- the request log the monitor reads ---------------------------------------------------------


def _request_log_args(container: dict) -> list[str]:
    return [a for a in container["args"] if a.startswith("--request-log")]


def test_each_custom_predictor_pod_logs_its_requests_to_its_own_file_on_the_pvc(kubeflow):
    config = load_config("kubeflow")
    custom = inference_service(kubeflow, "custom", 1700000200, 1700000100)["spec"]["predictor"]
    (container,) = custom["containers"]
    # one file per pod, in the folder the monitor reads (the same path in both pods: the PVC is
    # mounted at kubeflow.pvc_mount_path in each, and settings/conf/kubeflow.yaml's output_root is under it)
    log_dir = config.request_log_dir
    assert log_dir == "/mnt/shop/outputs/serving_logs"
    assert log_dir.startswith(config.kubeflow.pvc_mount_path + "/")
    assert _request_log_args(container) == [
        f"--request-log={log_dir}/shop-ranking-$({POD_NAME_ENV}).jsonl"
    ]
    assert _env(container)[POD_NAME_ENV] == POD_NAME  # Kubernetes expands $(POD_NAME) in args
    # the PVC, mounted read-write where the pipeline and the monitor mount it
    assert container["volumeMounts"] == [{"name": "store", "mountPath": "/mnt/shop"}]
    assert not container["volumeMounts"][0].get("readOnly")
    volumes = {v["name"]: v for v in custom["volumes"]}
    assert volumes["store"]["persistentVolumeClaim"] == {"claimName": config.kubeflow.pvc_name}
    assert not volumes["store"]["persistentVolumeClaim"].get("readOnly")
    # the TF Serving runtime logs nothing and mounts nothing of ours
    tensorflow = inference_service(kubeflow, "tensorflow")["spec"]["predictor"]
    assert "volumes" not in tensorflow
    assert set(tensorflow["model"]) == {
        "name",
        "modelFormat",
        "runtime",
        "runtimeVersion",
        "protocolVersion",
        "storageUri",
        "resources",
    }


def test_the_monitor_finds_every_pod_s_request_log(tmp_path, kubeflow):
    from monitoring.traffic import log_files

    (container,) = inference_service(kubeflow, "custom")["spec"]["predictor"]["containers"]
    (arg,) = _request_log_args(container)
    path = PurePosixPath(arg.split("=", 1)[1])
    assert str(path.parent) == load_config("kubeflow").request_log_dir
    pods = ["shop-ranking-predictor-00001-deployment-7c9f-abcde", "shop-ranking-predictor-x"]
    for pod in pods:
        (tmp_path / path.name.replace(f"$({POD_NAME_ENV})", pod)).write_text("")
    assert len(log_files(str(tmp_path), kubeflow.serving.model_name)) == len(pods)


@pytest.mark.parametrize(
    "overrides",
    [
        ["serving.log_requests=false"],
        ["kubeflow.pvc_name=null", "serving.storage_uri=gs://models/shop"],
        ["output_root=gs://bucket/shop", "kubeflow.pvc_name=null"],
        ["monitoring.root=/data/outputs", "serving.storage_uri=pvc://shop-ranking-store/models"],
    ],
    ids=["log-requests-off", "no-pvc", "object-store", "outside-the-mount"],
)
def test_no_request_log_without_log_requests_or_the_pvc(overrides):
    config = load_config("kubeflow", overrides)
    assert request_log_dir(config) is None
    custom = inference_service(config, "custom")["spec"]["predictor"]
    (container,) = custom["containers"]
    assert not _request_log_args(container)
    assert set(_env(container)) == {"STORAGE_URI", "PROTOCOL"}
    assert "volumeMounts" not in container and "volumes" not in custom


def test_the_config_round_trips_as_json_validated_again_and_an_older_one_still_loads(kubeflow):
    # what the Pusher's custom_config carries, and what the Pusher's renderer makes of it
    assert request_log_dir(kubeflow) == "/mnt/shop/outputs/serving_logs"
    values = json.loads(json.dumps(kubeflow.model_dump(mode="json")))
    assert PipelineConfig.model_validate(values) == kubeflow
    assert inference_service(PipelineConfig.model_validate(values), "custom") == inference_service(
        kubeflow, "custom"
    )
    # validated again: a value the config refuses is refused there too, naming the field
    broken = {**values, "serving": {**values["serving"], "canary_traffic_percent": 101}}
    with pytest.raises(ValidationError, match="canary_traffic_percent"):
        PipelineConfig.model_validate(broken)
    # a config written before fields existed loads with their defaults: without the PVC's name,
    # no request log
    older = {**values, "kubeflow": {k: v for k, v in values["kubeflow"].items() if k != "pvc_name"}}
    (container,) = inference_service(PipelineConfig.model_validate(older), "custom")["spec"][
        "predictor"
    ]["containers"]
    assert not _request_log_args(container) and "volumeMounts" not in container


def test_resources_request_the_config_and_limit_twice_the_cpu():
    config = load_config("kubeflow", ["serving.cpu=0.5", "serving.memory_gb=3"])
    service = inference_service(config, "custom")
    resources = service["spec"]["predictor"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "0.5", "memory": "3G"},
        "limits": {"cpu": "1", "memory": "3G"},
    }


def test_the_storage_uri_is_given_or_derived_from_the_pvc_or_the_object_store():
    assert storage_uri(load_config("kubeflow")) == KUBEFLOW_URI
    on_the_pvc = load_config("kubeflow", ["output_root=/mnt/shop/outputs"])
    assert storage_uri(on_the_pvc) == "pvc://shop-ranking-store/outputs/serving/shop-ranking"
    given = load_config("kubeflow", ["serving.storage_uri=gs://models/shop"])
    assert storage_uri(given) == "gs://models/shop"
    bucket = load_config("kubeflow", ["output_root=gs://bucket/shop", "kubeflow.pvc_name=null"])
    assert storage_uri(bucket) == "gs://bucket/shop/serving/shop-ranking"


@pytest.mark.parametrize(
    ("env", "overrides", "named"),
    [
        ("local", [], ["serving.storage_uri", "kubeflow.pvc_name"]),
        ("kubeflow", ["output_root=/data/outputs"], ["output_root", "kubeflow.pvc_mount_path"]),
        ("kubeflow", ["serving.model_name=" + "m" * 60], ["serving.model_name"]),
    ],
    ids=["no-pvc", "outside-the-mount", "name-too-long"],
)
def test_a_config_without_a_storage_uri_fails_naming_the_fields(env, overrides, named):
    config = load_config(env, overrides)
    with pytest.raises(ConfigError) as raised:
        check(config)
    assert all(field in str(raised.value) for field in named), raised.value
    with pytest.raises(ConfigError, match=re.escape(str(raised.value))):  # the renderer's check
        inference_service(config, "custom")


def test_the_cli_reports_the_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "kserve"
    assert main(["kserve-manifest", "--config", "local", "--output-dir", str(out)]) == 2
    assert "serving.storage_uri" in capsys.readouterr().err
    assert not out.exists()


def test_the_cli_writes_a_pinned_canary(tmp_path):
    args = ["--model-version", "1700000200", "--previous-version", "1700000100"]
    assert main(["kserve-manifest", "--output-dir", str(tmp_path), *args]) == 0
    text = (tmp_path / FILES["custom"]).read_text()
    assert "--previous-version 1700000100" in text.split("apiVersion:")[0]  # the header says how
    predictor = yaml.safe_load(text)["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert "--model-version=1700000200" in predictor["containers"][0]["args"]


# --- Pusher writes them for each version it pushes ---------------------------------------------

OLD_VERSION = "1000000000"  # older than any push the test makes (Pusher versions by time.time())


@pytest.fixture
def pusher(tmp_path):
    """Runs IdempotentPusherExecutor on real TFX artifacts with the exec properties the
    component (as create_pipeline builds it) serializes. Returns push(model_dir, blessed)."""
    from tfx import v1 as tfx
    from tfx.types import standard_artifacts

    from components.pusher import IdempotentPusher, IdempotentPusherExecutor

    config = load_config(
        "kubeflow", [f"output_root={tmp_path / 'outputs'}", "serving.storage_uri=pvc://s/models"]
    )
    component = IdempotentPusher(
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_dir)
        ),
        custom_config=pusher_custom_config(config),
    )
    runs = iter(range(100))

    def push(model_dir: Path, blessed: bool, statistics: Path | None = None):
        run = next(runs)
        model = standard_artifacts.Model()
        model.uri = str(model_dir)
        blessing = standard_artifacts.ModelBlessing()
        blessing.uri = str(tmp_path / f"blessing-{run}")
        blessing.set_int_custom_property("blessed", int(blessed))
        pushed = standard_artifacts.PushedModel()
        pushed.uri = str(tmp_path / f"pushed-{run}")
        inputs = {"model": [model], "model_blessing": [blessing]}
        if statistics is not None:
            stats = standard_artifacts.ExampleStatistics()
            stats.uri = str(statistics)
            stats.split_names = '["train", "eval"]'
            inputs["statistics"] = [stats]
        IdempotentPusherExecutor().Do(
            inputs,
            {"pushed_model": [pushed]},
            dict(component.exec_properties),
        )
        return pushed

    push.serving = Path(config.serving_dir)
    push.manifests = Path(config.kserve_manifest_dir)
    return push


def _model(root: Path, name: str) -> Path:
    """A model artifact folder as the Trainer leaves it (Pusher only copies Format-Serving)."""
    serving = root / name / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"not a real graph: Pusher only copies it")
    (serving / "variables" / "variables.index").write_bytes(b"")
    return root / name


def _old_version(serving: Path, source: str) -> None:
    (serving / OLD_VERSION).mkdir(parents=True)
    (serving / OLD_VERSION / "saved_model.pb").write_bytes(b"old")
    (serving / OLD_VERSION / "PUSHED_FROM").write_text(source)


def _versions(serving: Path) -> list[str]:
    return layout.local_versions(serving)


def test_pusher_writes_a_canary_pinning_the_pushed_version_then_skips_the_same_model(
    tmp_path, pusher
):
    _old_version(pusher.serving, "/artifacts/older-model")
    model = _model(tmp_path, "model-a")
    pushed = pusher(model, blessed=True)
    version = pushed.get_string_custom_property("pushed_version")
    assert _versions(pusher.serving) == [OLD_VERSION, version]
    assert (pusher.serving / version / "PUSHED_FROM").read_text() == str(model)
    assert sorted(p.name for p in pusher.manifests.iterdir()) == sorted(
        [*FILES.values(), KUSTOMIZATION]
    )
    text = (pusher.manifests / FILES["custom"]).read_text()
    assert f"pushed version {version} (previous version {OLD_VERSION})" in text
    predictor = yaml.safe_load(text)["spec"]["predictor"]
    assert f"--model-version={version}" in predictor["containers"][0]["args"]
    assert predictor["canaryTrafficPercent"] == 10
    assert _env(predictor["containers"][0])["STORAGE_URI"] == "pvc://s/models"
    tensorflow = yaml.safe_load((pusher.manifests / FILES["tensorflow"]).read_text())
    assert tensorflow["spec"]["predictor"]["canaryTrafficPercent"] == 10

    # The same model again (a rerun on unchanged data): already serving, nothing written.
    for path in pusher.manifests.iterdir():
        path.write_text("# left alone\n")
    again = pusher(model, blessed=True)
    assert again.get_int_custom_property("pushed") == 1
    assert again.get_string_custom_property("pushed_version") == version
    assert _versions(pusher.serving) == [OLD_VERSION, version]
    assert {p.read_text() for p in pusher.manifests.iterdir()} == {"# left alone\n"}


def _statistics(root: Path, marker: bytes) -> Path:
    """A StatisticsGen artifact folder (split folders with FeatureStats.pb)."""
    for split in ("train", "eval"):
        (root / f"Split-{split}").mkdir(parents=True)
        (root / f"Split-{split}" / "FeatureStats.pb").write_bytes(marker + split.encode())
    return root


def test_the_training_statistics_travel_with_the_pushed_version(tmp_path, pusher):
    model = _model(tmp_path, "model-a")
    pushed = pusher(model, blessed=True, statistics=_statistics(tmp_path / "stats-a", b"a-"))
    version = pushed.get_string_custom_property("pushed_version")
    copied = pusher.serving / version / layout.TRAINING_STATISTICS
    assert copied.read_bytes() == b"a-train"  # the train split: what the model learned from
    # not blessed: no version, nothing copied
    pusher(
        _model(tmp_path, "model-b"), blessed=False, statistics=_statistics(tmp_path / "s-b", b"b-")
    )
    assert _versions(pusher.serving) == [version]
    # a version pushed before statistics travelled gets them when the same model is pushed again
    copied.unlink()
    pusher(model, blessed=True, statistics=_statistics(tmp_path / "stats-a2", b"a2-"))
    assert copied.read_bytes() == b"a2-train" and _versions(pusher.serving) == [version]


def test_a_first_push_is_pinned_without_a_canary(tmp_path, pusher):
    pushed = pusher(_model(tmp_path, "model-a"), blessed=True)
    version = pushed.get_string_custom_property("pushed_version")
    predictor = yaml.safe_load((pusher.manifests / FILES["custom"]).read_text())["spec"][
        "predictor"
    ]
    assert f"--model-version={version}" in predictor["containers"][0]["args"]
    assert "canaryTrafficPercent" not in predictor


def test_a_model_that_is_not_blessed_leaves_versions_and_manifests_alone(tmp_path, pusher):
    _old_version(pusher.serving, "/artifacts/older-model")
    pusher.manifests.mkdir(parents=True)
    (pusher.manifests / FILES["custom"]).write_text("# the serving version's manifest\n")
    pushed = pusher(_model(tmp_path, "model-b"), blessed=False)
    assert pushed.get_int_custom_property("pushed") == 0
    assert _versions(pusher.serving) == [OLD_VERSION]
    # The version that serves keeps its provenance (the unblessed model is not recorded there).
    assert (pusher.serving / OLD_VERSION / "PUSHED_FROM").read_text() == "/artifacts/older-model"
    assert [p.name for p in pusher.manifests.iterdir()] == [FILES["custom"]]
    assert (pusher.manifests / FILES["custom"]).read_text() == "# the serving version's manifest\n"


def test_pusher_gets_the_renderer_by_path_and_the_config_as_json():
    config = load_config("kubeflow")
    custom = pusher_custom_config(config)
    kserve = custom["kserve"]
    assert set(kserve) == {"render", "manifest_dir", "config"}
    assert kserve["manifest_dir"] == "s3://mlpipeline/shop-ranking/outputs/kserve"
    assert json.loads(json.dumps(custom)) == custom
    assert PipelineConfig.model_validate(kserve["config"]) == config
    module, _, function = kserve["render"].rpartition(".")
    assert getattr(importlib.import_module(module), function) is write_pushed_version
    assert pusher_custom_config(load_config("local")) is None  # no storage URI: no manifests
    with pytest.raises(ConfigError, match="kubeflow.pvc_mount_path"):  # a PVC, but not under it
        pusher_custom_config(load_config("kubeflow", ["output_root=/data/outputs"]))
    with pytest.raises(ConfigError, match="serving.model_name"):  # checked when compiled
        pusher_custom_config(load_config("kubeflow", ["serving.model_name=" + "m" * 60]))


def test_the_pusher_s_renderer_writes_what_the_cli_renders_for_those_versions(tmp_path, kubeflow):
    kserve = pusher_custom_config(kubeflow)["kserve"]
    pushed = write_pushed_version(
        str(tmp_path / "pushed"), kserve["config"], 1700000200, 1700000100
    )
    cli = write_manifests(str(tmp_path / "cli"), kubeflow, "origin", 1700000200, 1700000100)
    for pushed_path, cli_path in zip(pushed, cli, strict=True):
        pushed_text, cli_text = Path(pushed_path).read_text(), Path(cli_path).read_text()
        assert yaml.safe_load(pushed_text) == yaml.safe_load(cli_text)
        assert "pushed version 1700000200 (previous version 1700000100)" in pushed_text


def test_a_custom_config_compiled_before_the_renderer_was_named_writes_no_manifests(tmp_path):
    from components.pusher import write_kserve_manifests

    older = {"manifest_dir": str(tmp_path / "kserve"), "settings": {"model_name": "shop-ranking"}}
    assert write_kserve_manifests(older, "1700000200", None) == []
    assert not (tmp_path / "kserve").exists()
