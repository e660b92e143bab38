"""The Kubeflow manifests (manifests/kfp) and the Dockerfile, checked without a cluster.

`kubectl kustomize` renders the manifests; every object is deserialized into the Kubernetes client
model of its kind and serialized back, so a misspelled or misplaced field (which the model silently
drops) fails with its path. Then the pieces are checked against each other: namespace and labels,
the PVC against settings/conf/kubeflow.yaml, the submitter's RBAC and KFP token, and the Dockerfile's
environment and compiled package against the CronJob.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomli
import yaml
from kubernetes.client import ApiClient

from serving.validate_manifests import differences  # one field-path diff for every manifest check

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATION = ROOT / "manifests" / "kfp"
DOCKERFILE = ROOT / "Dockerfile"
NAMESPACE = "kubeflow"
PART_OF = ("app.kubernetes.io/part-of", "shop-ranking")
PVC_NAME = "shop-ranking-store"

# apiVersion/kind -> the kubernetes==26.1.0 client model. A kind missing here fails the test, so a
# new manifest cannot skip the field check.
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("batch/v1", "CronJob"): "V1CronJob",
    ("batch/v1", "Job"): "V1Job",
}

try:  # where kfp.Client looks for the projected token unless KF_PIPELINES_SA_TOKEN_PATH is set
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
except ImportError:  # older/newer kfp without the constants; kfp 2.5 defines them as below
    KF_PIPELINES_SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
    KF_PIPELINES_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


class _Response:
    """What ApiClient.deserialize reads from an HTTP response: the JSON body in `.data`."""

    def __init__(self, obj: Any):
        self.data = json.dumps(obj)


def model_class(obj: dict) -> str:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in MODELS:
        raise LookupError(f"no client model for apiVersion/kind {key}: add it to MODELS")
    return MODELS[key]


def round_trip_differences(obj: dict, model: str | None = None) -> list[str]:
    """Deserialize into the client model and back; whatever the model dropped or changed."""
    client = ApiClient()
    parsed = client.deserialize(_Response(obj), model or model_class(obj))
    return differences(obj, client.sanitize_for_serialization(parsed))


def _render() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH (needed for `kubectl kustomize`)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATION)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    rendered = _render()
    assert rendered, "kubectl kustomize rendered no objects"
    return rendered


def _one(objects: list[dict], kind: str) -> dict:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def _pod_specs(objects: list[dict]) -> dict[str, dict]:
    specs = {}
    for obj in objects:
        if obj["kind"] == "Job":
            specs[obj["metadata"]["name"]] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            specs[obj["metadata"]["name"]] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def _flag(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        name, _, rest = full.partition(" ")
        instructions.append((name.upper(), rest.strip()))
    return instructions


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for name, rest in _dockerfile_instructions():
        if name == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _config() -> dict:
    return yaml.safe_load((ROOT / "settings" / "conf" / "kubeflow.yaml").read_text())


# The field check itself ------------------------------------------------------------------------


def test_every_object_survives_its_client_model(objects):
    problems = {
        f"{obj['kind']}/{obj['metadata']['name']}": round_trip_differences(obj) for obj in objects
    }
    assert not {name: found for name, found in problems.items() if found}, problems
    assert {obj["kind"] for obj in objects} >= {
        "PersistentVolumeClaim",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "CronJob",
    }


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        (
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "x"},
                "spec": {"acessModes": ["ReadWriteMany"]},
            },
            "spec.acessModes",
        ),
        (
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "x"},
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "c", "image": "i", "comand": ["true"]}]}
                    }
                },
            },
            "spec.template.spec.containers[0].comand",
        ),
    ],
    ids=["pvc-spec", "job-container"],
)
def test_the_field_check_reports_a_misspelling(obj, path):
    found = round_trip_differences(obj)
    assert found and found[0].startswith(f"{path}: dropped"), found


def test_an_unknown_kind_is_an_error():
    with pytest.raises(LookupError, match="Deployment"):
        model_class({"apiVersion": "apps/v1", "kind": "Deployment"})


# The objects against each other, the config and the Dockerfile ---------------------------------


def test_every_object_is_in_the_namespace_and_labelled(objects):
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"].get("namespace") == NAMESPACE, name
        assert obj["metadata"].get("labels", {}).get(PART_OF[0]) == PART_OF[1], name


def test_the_pvc_is_the_one_the_config_mounts(objects):
    pvc = _one(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == PVC_NAME == _config()["kubeflow"]["pvc_name"]
    assert pvc["spec"]["resources"]["requests"]["storage"]
    claims = {
        volume["persistentVolumeClaim"]["claimName"]
        for spec in _pod_specs(objects).values()
        for volume in spec.get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    assert claims <= {PVC_NAME}, claims


def test_the_store_init_job_hands_the_mount_to_the_image_user(objects):
    spec = _pod_specs(objects)["shop-ranking-store-init"]
    (container,) = spec["containers"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == _config()["kubeflow"]["pvc_mount_path"]
    uid = _image_uid()
    assert f"chown {uid}:" in " ".join(container["command"])


def test_the_submitter_service_account_is_bound_to_a_role_that_can_submit(objects):
    spec = _pod_specs(objects)["shop-ranking-daily"]
    account = spec["serviceAccountName"]
    assert any(
        obj["kind"] == "ServiceAccount" and obj["metadata"]["name"] == account for obj in objects
    )
    bindings = [
        binding
        for binding in objects
        if binding["kind"] == "RoleBinding"
        and {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        in binding["subjects"]
    ]
    assert bindings, f"no RoleBinding for ServiceAccount {account}"
    role_names = {b["roleRef"]["name"] for b in bindings if b["roleRef"]["kind"] == "Role"}
    granted = {
        (resource, verb)
        for role in objects
        if role["kind"] == "Role" and role["metadata"]["name"] in role_names
        for rule in role["rules"]
        if "pipelines.kubeflow.org" in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # What `submit` calls: find/create the experiment, create (and follow) a run, and with
    # --schedule create a recurring run, which KFP authorizes as `jobs`.
    needed = {
        ("experiments", "get"),
        ("experiments", "list"),
        ("experiments", "create"),
        ("runs", "create"),
        ("runs", "get"),
        ("jobs", "create"),
        ("pipelines", "get"),
    }
    assert needed <= granted, needed - granted


def test_the_cronjob_mounts_the_kfp_token_where_kfp_client_reads_it(objects):
    cronjob = _one(objects, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    spec = _pod_specs(objects)["shop-ranking-daily"]
    (container,) = spec["containers"]
    token_path = next(
        (e["value"] for e in container.get("env", []) if e["name"] == KF_PIPELINES_SA_TOKEN_ENV),
        KF_PIPELINES_SA_TOKEN_PATH,
    )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    tokens = [
        (volume["name"], source["serviceAccountToken"])
        for volume in spec["volumes"]
        for source in volume.get("projected", {}).get("sources", [])
        if "serviceAccountToken" in source
    ]
    assert len(tokens) == 1, tokens
    name, token = tokens[0]
    assert token["audience"] == "pipelines.kubeflow.org"
    assert f"{mounts[name].rstrip('/')}/{token['path']}" == token_path


def test_the_dockerfile_environment_mirrors_the_local_one():
    env = _dockerfile_env()
    assert env.get("TF_USE_LEGACY_KERAS") == "1", env
    # _dockerfile_env reads ENV lines word by word: one line, KEY=VALUE pairs, no quotes.
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("ENV "):
            assert re.fullmatch(r"ENV( [A-Za-z_][A-Za-z0-9_]*=[^\s\"'\\]+)+", line.strip()), line


def _image_uid() -> str:
    users = [rest for name, rest in _dockerfile_instructions() if name == "USER"]
    assert users, "the Dockerfile sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and uid != "0", f"USER {users[-1]}: use a numeric non-root uid"
    return uid


def test_the_cronjob_submits_the_package_the_image_compiles(objects):
    compiles = [
        shlex.split(rest)
        for name, rest in _dockerfile_instructions()
        if name == "RUN" and "shop-pipeline compile" in rest
    ]
    assert len(compiles) == 1, compiles
    spec = _pod_specs(objects)["shop-ranking-daily"]
    (container,) = spec["containers"]
    args = container.get("command", []) + container.get("args", [])
    assert args[:2] == ["shop-pipeline", "submit"], args
    assert _flag(args, "--package") == _flag(compiles[0], "--output")
    assert _flag(args, "--config") == _flag(compiles[0], "--config")
    # The CronJob runs the image the steps run, as the image's user.
    assert container["image"] == _config()["kubeflow"]["image"]
    assert str(spec["securityContext"]["runAsUser"]) == _image_uid()


def test_the_config_the_image_compiles_with_is_package_data_it_installs():
    """`--config NAME` is settings/conf/NAME.yaml inside the installed package: the image copies
    settings/ into the source it installs, and pyproject.toml ships conf/*.yaml as package data."""
    compile_args = next(
        shlex.split(rest)
        for name, rest in _dockerfile_instructions()
        if name == "RUN" and "shop-pipeline compile" in rest
    )
    name = _flag(compile_args, "--config")
    assert "/" not in name and not name.endswith(".yaml"), name
    assert (ROOT / "settings" / "conf" / f"{name}.yaml").is_file()
    copies = [rest.split() for name, rest in _dockerfile_instructions() if name == "COPY"]
    assert ["settings", "/tmp/src/settings"] in copies, copies
    package_data = tomli.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "conf/*.yaml" in package_data["package-data"]["settings"]


def test_the_launcher_configmap_gives_the_configs_root_and_object_store(objects):
    """What a run started from the KFP UI without a root gets, and how the launcher reaches
    s3:// (backend/src/v2/config: defaultPipelineRoot, providers.s3.default)."""
    from settings import load_config

    config = load_config("kubeflow")
    [launcher] = [o for o in objects if o["kind"] == "ConfigMap"]
    assert launcher["metadata"]["name"] == "kfp-launcher"
    assert launcher["data"]["defaultPipelineRoot"] == config.pipeline_root
    default = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]
    store = config.object_store
    assert f"http://{default['endpoint']}" == store.endpoint and default["disableSSL"] is True
    assert default["region"] == store.region
    assert default["credentials"] == {
        "fromEnv": False,
        "secretRef": {
            "secretName": store.credentials_secret,
            "accessKeyKey": store.access_key_field,
            "secretKeyKey": store.secret_key_field,
        },
    }


def test_the_predictors_service_account_lists_their_object_store_secret(objects):
    from settings import load_config

    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    models = accounts[load_config("kubeflow").serving.service_account]
    assert models["secrets"] == [{"name": "shop-ranking-s3"}]
