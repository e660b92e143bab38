"""The event stream's cluster side (manifests/stream), checked without a cluster.

Kubernetes kinds go through the client models as manifests/kfp's do
(test_manifests.round_trip_differences). The operators' custom resources are checked against
their CRDs' fields (CRDS below, written from the CRDs named there), and the Kubernetes types
inside them (resources, affinity, the HPA behavior) through the client models again. Then the
pieces against each other and the code: the ScaledObject scales the consumer Deployment on the
queue StreamConfig names; every shop-features container runs a real subcommand whose flags and
overrides the CLI parses (features/cli.py, with the environment Kubernetes would expand) into a
config whose broker, Redis and queues are the ones the manifests create; Feast's repo config is
the one features/store.py builds from that config.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass, field
from typing import Any

import pika
import pytest
import yaml
from repo_paths import REPO_ROOT
from test_manifests import MODELS, NAMESPACE, PART_OF, _one, round_trip_differences

from features import cli as features_cli
from settings import StreamConfig, load_config

STREAM = REPO_ROOT / "manifests" / "stream"
FEATURES_VENV = REPO_ROOT / ".venv-features"
CLI = ["python", "-m", "features.cli"]
SUBCOMMANDS = {"consume", "apply", "materialize"}
CONSUMER = "shop-stream-consumer"
# Kubernetes kinds of this folder on top of manifests/kfp's (kubernetes==26.1.0 client models).
CORE_MODELS = {
    **MODELS,
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("v1", "Service"): "V1Service",
}


# The custom resources' fields ----------------------------------------------------------------
# Written from each CRD's openAPIV3Schema (spec.versions[].schema): KEDA v2.20
# (kedacore/keda config/crd/bases/keda.sh_scaledobjects.yaml, keda.sh_triggerauthentications.yaml),
# the RabbitMQ Cluster Operator v2.22 (rabbitmq/cluster-operator
# config/crd/bases/rabbitmq.com_rabbitmqclusters.yaml) and the Messaging Topology Operator v1.20
# (rabbitmq/messaging-topology-operator config/crd/bases/rabbitmq.com_{queues,exchanges,
# bindings,policies}.yaml). Every field of each spec is listed, nested objects only where these
# manifests use them (ANY: not looked into).


@dataclass(frozen=True)
class Obj:
    """An object of the schema: its fields (name -> schema) and the required ones."""

    fields: dict[str, Any]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class MapOf:
    """additionalProperties: any key, every value of this schema."""

    values: Any


ANY = object()
ENUM = frozenset
CLUSTER_REF = Obj({"connectionSecret": ANY, "name": str, "namespace": str})

CRDS: dict[tuple[str, str], Obj] = {
    ("keda.sh/v1alpha1", "ScaledObject"): Obj(
        {
            "advanced": Obj(
                {
                    "horizontalPodAutoscalerConfig": Obj(
                        {"behavior": "V2HorizontalPodAutoscalerBehavior", "name": str}
                    ),
                    "restoreToOriginalReplicaCount": bool,
                    "scalingModifiers": ANY,
                }
            ),
            "cooldownPeriod": int,
            "fallback": ANY,
            "idleReplicaCount": int,
            "initialCooldownPeriod": int,
            "maxReplicaCount": int,
            "minReplicaCount": int,
            "pollingInterval": int,
            "scaleTargetRef": Obj(
                {"apiVersion": str, "envSourceContainerName": str, "kind": str, "name": str},
                required=("name",),
            ),
            "triggers": [
                Obj(
                    {
                        "authenticationRef": Obj({"kind": str, "name": str}, required=("name",)),
                        "metadata": MapOf(str),
                        "metricType": str,
                        "name": str,
                        "type": str,
                        "useCachedMetrics": bool,
                    },
                    required=("metadata", "type"),
                )
            ],
        },
        required=("scaleTargetRef", "triggers"),
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): Obj(
        {
            **dict.fromkeys(
                (
                    "awsSecretManager",
                    "azureKeyVault",
                    "boundServiceAccountToken",
                    "configMapTargetRef",
                    "env",
                    "filePath",
                    "gcpSecretManager",
                    "hashiCorpVault",
                    "oauth2",
                    "podIdentity",
                ),
                ANY,
            ),
            "secretTargetRef": [
                Obj(
                    {"key": str, "name": str, "parameter": str},
                    required=("key", "name", "parameter"),
                )
            ],
        }
    ),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): Obj(
        {
            "affinity": "V1Affinity",
            "autoEnableAllFeatureFlags": bool,
            "delayStartSeconds": int,
            "image": str,
            "imagePullSecrets": ["V1LocalObjectReference"],
            "override": ANY,
            "persistence": Obj({"emptyDir": ANY, "storage": ANY, "storageClassName": str}),
            "rabbitmq": Obj(
                {
                    "additionalConfig": str,
                    "additionalPlugins": [str],
                    "advancedConfig": str,
                    "envConfig": str,
                    "erlangInetConfig": str,
                }
            ),
            "replicas": int,
            "resources": "V1ResourceRequirements",
            "secretBackend": ANY,
            "service": Obj(
                {
                    "annotations": MapOf(str),
                    "ipFamilyPolicy": str,
                    "labels": MapOf(str),
                    "type": str,
                }
            ),
            "skipPostDeploySteps": bool,
            "terminationGracePeriodSeconds": int,
            "tls": Obj({"caSecretName": str, "disableNonTLSListeners": bool, "secretName": str}),
            "tolerations": ["V1Toleration"],
        }
    ),
    ("rabbitmq.com/v1beta1", "Queue"): Obj(
        {
            "arguments": ANY,
            "autoDelete": bool,
            "deleteIfEmpty": bool,
            "deleteIfUnused": bool,
            "deletionPolicy": ENUM({"delete", "retain"}),
            "durable": bool,
            "name": str,
            "rabbitmqClusterReference": CLUSTER_REF,
            "type": str,
            "vhost": str,
        },
        required=("name", "rabbitmqClusterReference"),
    ),
    ("rabbitmq.com/v1beta1", "Exchange"): Obj(
        {
            "arguments": ANY,
            "autoDelete": bool,
            "durable": bool,
            "name": str,
            "rabbitmqClusterReference": CLUSTER_REF,
            "type": str,
            "vhost": str,
        },
        required=("name", "rabbitmqClusterReference"),
    ),
    ("rabbitmq.com/v1beta1", "Binding"): Obj(
        {
            "arguments": ANY,
            "destination": str,
            "destinationType": ENUM({"exchange", "queue"}),
            "rabbitmqClusterReference": CLUSTER_REF,
            "routingKey": str,
            "source": str,
            "vhost": str,
        },
        required=("rabbitmqClusterReference",),
    ),
    ("rabbitmq.com/v1beta1", "Policy"): Obj(
        {
            "applyTo": ENUM(
                {"queues", "classic_queues", "quorum_queues", "streams", "exchanges", "all"}
            ),
            "definition": ANY,
            "name": str,
            "pattern": str,
            "priority": int,
            "rabbitmqClusterReference": CLUSTER_REF,
            "vhost": str,
        },
        required=("definition", "name", "pattern", "rabbitmqClusterReference"),
    ),
}


def schema_problems(value: Any, schema: Any, path: str) -> list[str]:
    """Where `value` leaves `schema`: unknown or missing fields, wrong types, values off an enum."""
    if schema is ANY:
        return []
    if isinstance(schema, str):  # a Kubernetes type inside the custom resource
        return [f"{path}.{found}" for found in round_trip_differences(value, schema)]
    if isinstance(schema, frozenset):
        return [] if value in schema else [f"{path}: {value!r} is not one of {sorted(schema)}"]
    if isinstance(schema, type):
        typed = isinstance(value, schema) and (schema is bool or not isinstance(value, bool))
        return [] if typed else [f"{path}: {value!r} is not of type {schema.__name__}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: a list expected, got {value!r}"]
        return [
            p for i, v in enumerate(value) for p in schema_problems(v, schema[0], f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: a mapping expected, got {value!r}"]
    if isinstance(schema, MapOf):
        return [
            p for k, v in value.items() for p in schema_problems(v, schema.values, f"{path}.{k}")
        ]
    problems = [f"{path}.{name}: required" for name in schema.required if name not in value]
    for name, item in value.items():
        if name not in schema.fields:
            problems.append(f"{path}.{name}: not a field of the CRD (misspelled or misplaced?)")
        else:
            problems += schema_problems(item, schema.fields[name], f"{path}.{name}")
    return problems


def custom_resource_problems(obj: dict) -> list[str]:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRDS:
        raise LookupError(f"no CRD fields for apiVersion/kind {key}: add them to CRDS")
    extra = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    problems = [f"{name}: not a top-level field" for name in sorted(extra)]
    problems += [f"metadata.{p}" for p in round_trip_differences(obj["metadata"], "V1ObjectMeta")]
    return problems + schema_problems(obj.get("spec"), CRDS[key], "spec")


# The folder's documents ----------------------------------------------------------------------


@dataclass
class Doc:
    file: str
    obj: dict = field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.obj["apiVersion"], self.obj["kind"]

    @property
    def name(self) -> str:
        return f"{self.file}:{self.obj['kind']}/{self.obj['metadata']['name']}"


def _documents() -> list[Doc]:
    return [
        Doc(path.name, obj)
        for path in sorted(STREAM.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for obj in yaml.safe_load_all(path.read_text())
        if obj is not None
    ]


DOCS = _documents()


def _objects(kind: str) -> list[dict]:
    return [doc.obj for doc in DOCS if doc.obj["kind"] == kind]


def _named(kind: str, name: str) -> dict:
    (found,) = [obj for obj in _objects(kind) if obj["metadata"]["name"] == name]
    return found


def _pod_spec(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def _workloads() -> list[dict]:
    kinds = {"Deployment", "StatefulSet", "Job", "CronJob"}
    return [doc.obj for doc in DOCS if doc.obj["kind"] in kinds]


def _containers() -> list[tuple[str, dict, dict]]:
    """(workload name, pod spec, container) for every container of the folder."""
    return [
        (obj["metadata"]["name"], _pod_spec(obj), container)
        for obj in _workloads()
        for container in _pod_spec(obj)["containers"]
    ]


def _shop_features_containers() -> list[tuple[str, dict]]:
    return [
        (name, container) for name, _, container in _containers() if container.get("command") == CLI
    ]


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((STREAM / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def config():
    return load_config("kubeflow")


# Parsing and the field checks ----------------------------------------------------------------


def test_every_file_parses_into_objects_the_kustomization_lists(kustomization):
    files = {p.name for p in STREAM.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    for path in sorted(STREAM.glob("*.yaml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, path.name
        for doc in documents:
            assert isinstance(doc, dict) and doc.get("kind") and doc.get("apiVersion"), path.name
            if path.name != "kustomization.yaml":
                assert doc.get("metadata", {}).get("name"), (path.name, doc["kind"])
    assert {doc.key for doc in DOCS} <= CORE_MODELS.keys() | CRDS.keys()


@pytest.mark.parametrize("doc", [d for d in DOCS if d.key in CORE_MODELS], ids=lambda d: d.name)
def test_kubernetes_objects_survive_their_client_models(doc):
    assert round_trip_differences(doc.obj, CORE_MODELS[doc.key]) == []


@pytest.mark.parametrize("doc", [d for d in DOCS if d.key in CRDS], ids=lambda d: d.name)
def test_custom_resources_have_only_their_crds_fields(doc):
    assert custom_resource_problems(doc.obj) == []


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        (
            {"spec": {"scaleTargetRef": {"name": "x"}, "triggers": [], "minReplicas": 1}},
            "spec.minReplicas: not a field",
        ),
        (
            {"spec": {"scaleTargetRef": {}, "triggers": [{"type": "rabbitmq", "metadata": {}}]}},
            "spec.scaleTargetRef.name: required",
        ),
        (
            {
                "spec": {
                    "scaleTargetRef": {"name": "x"},
                    "triggers": [{"type": "rabbitmq", "metadata": {"value": 5000}}],
                }
            },
            "spec.triggers[0].metadata.value: 5000 is not of type str",
        ),
        (
            {
                "spec": {
                    "scaleTargetRef": {"name": "x"},
                    "triggers": [],
                    "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaledown": {}}}},
                }
            },
            "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaledown: dropped",
        ),
    ],
    ids=["unknown-field", "required", "typed", "kubernetes-type-inside"],
)
def test_the_crd_check_reports_the_field(obj, problem):
    obj = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        **obj,
    }
    found = custom_resource_problems(obj)
    assert any(p.startswith(problem) for p in found), found


def test_an_unknown_custom_kind_is_an_error():
    with pytest.raises(LookupError, match="ScaledJob"):
        custom_resource_problems({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob"})


# Scaling -------------------------------------------------------------------------------------


def test_the_scaled_object_scales_the_consumer_by_the_stream_queue():
    (scaled,) = _objects("ScaledObject")
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment")) == (
        "apps/v1",
        "Deployment",
    )
    deployment = _named("Deployment", target["name"])
    assert target["name"] == CONSUMER
    # KEDA's HPA owns the replica count; one in the Deployment would be reset by every apply.
    assert "replicas" not in deployment["spec"]
    assert 1 == spec["minReplicaCount"] < spec["maxReplicaCount"] == 8
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    meta = trigger["metadata"]
    assert meta["queueName"] == StreamConfig().queue
    assert (meta["mode"], meta["protocol"]) == ("QueueLength", "amqp")
    assert "hostFromEnv" not in meta and "host" not in meta  # the URL holds the password
    # the backlog one replica takes: at least one batch
    assert float(meta["value"]) >= StreamConfig().batch_size
    auth = _named("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    # the same Secret and key the consumers connect with
    env = {e["name"]: e for e in _pod_spec(deployment)["containers"][0]["env"]}
    assert ref["parameter"] == "host"
    assert {"name": ref["name"], "key": ref["key"]} == env["SHOP_BROKER_URL"]["valueFrom"][
        "secretKeyRef"
    ]


def test_the_consumer_can_finish_a_batch_and_has_no_host_paths(config):
    deployment = _named("Deployment", CONSUMER)
    pod = _pod_spec(deployment)
    # SIGTERM: the open batch is written and acknowledged first (features/cli.py)
    assert pod["terminationGracePeriodSeconds"] >= 60
    # the lake is object storage: the consumer mounts nothing
    assert config.data.root.startswith("s3://")
    assert not pod.get("volumes") and not pod["containers"][0].get("volumeMounts")
    for doc in DOCS:
        assert "hostPath" not in yaml.safe_dump(doc.obj), doc.name


def test_every_container_has_requests_and_a_memory_limit():
    for name, _, container in _containers():
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), name
        assert "memory" in resources["limits"], name
    broker = _objects("RabbitmqCluster")[0]["spec"]["resources"]
    assert broker["requests"] and broker["limits"]["memory"]


# The commands --------------------------------------------------------------------------------


def _secret_values(namespace: str) -> dict[tuple[str, str], str]:
    """(Secret, key) -> a value like the cluster's. connection_string is what the RabbitMQ
    operator writes into <cluster>-default-user (cluster-operator
    internal/resource/default_user_secret.go: amqp://USER:PASS@HOST:PORT/ with HOST =
    <name>.<namespace>.svc and base64url credentials); the MinIO keys are stand-ins."""
    (cluster,) = _objects("RabbitmqCluster")
    host = f"{cluster['metadata']['name']}.{namespace}.svc"
    return {
        (f"{cluster['metadata']['name']}-default-user", "connection_string"): (
            f"amqp://default_user_Ab-9_xY:Zm9v-_YmFyYmF6@{host}:5672/"
        ),
        ("mlpipeline-minio-artifact", "accesskey"): "minio",
        ("mlpipeline-minio-artifact", "secretkey"): "minio123",
    }


def _environment(container: dict, namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom, then env over it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_named("ConfigMap", source["configMapRef"]["name"])["data"])
    secrets = _secret_values(namespace)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args; every reference must resolve."""

    def value(match: re.Match) -> str:
        assert match[1] in env, f"$({match[1]}) in {arg!r} is not in the container's env"
        return env[match[1]]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, arg)


def _parsed(container: dict, namespace: str, monkeypatch) -> tuple[str, Any, Any]:
    """(subcommand, config, args) as features/cli.py's main parses the container's arguments,
    with the commands themselves replaced, so nothing runs."""
    seen = []

    def capture(config, args):
        seen.append((args.command, config, args))
        return 0

    for command in SUBCOMMANDS | {"online"}:
        monkeypatch.setattr(features_cli, f"_{command}", capture)
    env = _environment(container, namespace)
    argv = [_expand(arg, env) for arg in container["args"]]
    assert features_cli.main(argv) == 0, argv
    (found,) = seen
    return found


def test_every_shop_features_container_runs_a_real_subcommand(monkeypatch, kustomization):
    containers = _shop_features_containers()
    by_workload = {}
    for name, container in containers:
        assert container["image"] == "shop-features", name
        command, config, args = _parsed(container, kustomization["namespace"], monkeypatch)
        assert command in SUBCOMMANDS, (name, command)
        assert args.config == "kubeflow", name
        by_workload[name] = command
    assert by_workload == {
        CONSUMER: "consume",
        "shop-features-apply": "apply",
        "shop-features-materialize": "materialize",
    }


def test_the_config_the_containers_get_is_the_clusters(monkeypatch, kustomization, config):
    namespace = kustomization["namespace"]
    default = StreamConfig()
    (cluster,) = _objects("RabbitmqCluster")
    redis = _named("Service", "shop-redis")
    (port,) = redis["spec"]["ports"]
    for name, container in _shop_features_containers():
        _, parsed, _ = _parsed(container, namespace, monkeypatch)
        stream = parsed.stream
        # Redis: the Service of redis.yaml, on the port the loopback default uses
        assert stream.redis == f"shop-redis.{namespace}.svc:{port['port']}", name
        assert port["port"] == int(default.redis.rsplit(":", 1)[1])
        # the queues and the exchange: StreamConfig's, the names broker.yaml creates
        assert (stream.queue, stream.dead_letter_queue, stream.exchange) == (
            default.queue,
            default.dead_letter_queue,
            default.exchange,
        )
        # everything else is the kubeflow config's: the lake, the registry
        assert parsed.model_dump(exclude={"stream"}) == config.model_dump(exclude={"stream"})
        if name != CONSUMER:
            continue
        # the broker: the operator's Service, the same port and vhost as the default URL
        url, ours = pika.URLParameters(stream.broker_url), pika.URLParameters(default.broker_url)
        assert url.host == f"{cluster['metadata']['name']}.{namespace}.svc"
        assert (url.port, url.virtual_host) == (ours.port, ours.virtual_host) == (5672, "/")


def test_the_object_store_is_the_configs(kustomization, config):
    store = config.object_store
    for name, container in _shop_features_containers() + [
        (n, c) for n, _, c in _containers() if c.get("command") == ["feast"]
    ]:
        env = _environment(container, kustomization["namespace"])
        for variable, value in store.environment().items():
            assert env[variable] == value, (name, variable)
        assert env["FEAST_S3_ENDPOINT_URL"] == store.endpoint, name
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
        }
        for variable, key in store.key_variables().items():
            assert refs[variable] == {"name": store.credentials_secret, "key": key}, name


# The broker ----------------------------------------------------------------------------------


def _consumer_declarations() -> dict[str, list[ast.Call]]:
    """The pika calls of features/consumer.py's declare_topology, by method name (the module
    imports Feast, so it is read, not imported, here)."""
    tree = ast.parse((REPO_ROOT / "features" / "consumer.py").read_text())
    (function,) = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "declare_topology"
    ]
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.setdefault(node.func.attr, []).append(node)
    return calls


def _keyword(call: ast.Call, name: str) -> Any:
    found = [k.value for k in call.keywords if k.arg == name]
    return ast.literal_eval(found[0]) if found else None


def test_the_broker_is_three_nodes_with_the_streams_quorum_queues():
    default = StreamConfig()
    (cluster,) = _objects("RabbitmqCluster")
    assert cluster["spec"]["replicas"] == 3
    name = cluster["metadata"]["name"]
    topology = [o for k in ("Exchange", "Queue", "Binding", "Policy") for o in _objects(k)]
    assert all(o["spec"]["rabbitmqClusterReference"] == {"name": name} for o in topology)
    queues = {q["spec"]["name"]: q["spec"] for q in _objects("Queue")}
    assert set(queues) == {default.queue, default.dead_letter_queue}
    for spec in queues.values():
        assert (spec["type"], spec["durable"], spec["autoDelete"]) == ("quorum", True, False)
        assert spec.get("vhost", "/") == "/"
    (exchange,) = _objects("Exchange")
    (binding,) = _objects("Binding")
    calls = _consumer_declarations()
    (declared,) = calls["exchange_declare"]
    # the same exchange the consumer (and the shop app) declare: a second declaration of
    # another type or durability would be refused by the broker
    assert exchange["spec"]["name"] == default.exchange
    assert exchange["spec"]["type"] == _keyword(declared, "exchange_type") == "fanout"
    assert exchange["spec"]["durable"] is _keyword(declared, "durable") is True
    # pika's queue_bind binds with the queue's name as routing key when none is given
    (bound,) = calls["queue_bind"]
    assert len(bound.args) == 2 and _keyword(bound, "routing_key") is None
    assert (binding["spec"]["source"], binding["spec"]["destination"]) == (
        default.exchange,
        default.queue,
    )
    assert binding["spec"]["destinationType"] == "queue"
    assert binding["spec"]["routingKey"] == default.queue


def test_the_consumers_untyped_declarations_match_the_quorum_queues():
    """The consumer declares its queues without x-queue-type; RabbitMQ refuses that against an
    existing quorum queue unless quorum is the default queue type (RabbitMQ 4.x)."""
    declared = _consumer_declarations()["queue_declare"]
    assert len(declared) == 2
    assert all(_keyword(call, "arguments") is None for call in declared)
    assert all(_keyword(call, "durable") is True for call in declared)
    (cluster,) = _objects("RabbitmqCluster")
    config = cluster["spec"]["rabbitmq"]["additionalConfig"]
    assert re.search(r"^default_queue_type\s*=\s*quorum\s*$", config, re.MULTILINE), config
    assert cluster["spec"]["image"].startswith("rabbitmq:4.")


def test_a_message_past_the_delivery_limit_is_dead_lettered():
    default = StreamConfig()
    (policy,) = _objects("Policy")
    spec = policy["spec"]
    assert re.fullmatch(spec["pattern"], default.queue)
    assert not re.fullmatch(spec["pattern"], default.dead_letter_queue)
    assert spec["applyTo"] == "quorum_queues"
    definition = spec["definition"]
    assert definition["delivery-limit"] > 0
    assert definition["dead-letter-exchange"] == ""  # the default exchange: routing key = queue
    assert definition["dead-letter-routing-key"] == default.dead_letter_queue


# Redis and Feast -----------------------------------------------------------------------------


def _feature_store_yaml() -> dict:
    return yaml.safe_load(_named("ConfigMap", "shop-feature-store")["data"]["feature_store.yaml"])


def test_redis_is_one_service_over_one_statefulset():
    service = _named("Service", "shop-redis")
    statefulset = _named("StatefulSet", "shop-redis")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = _pod_spec(statefulset)["containers"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}


def test_the_feature_store_yaml_is_what_features_store_builds(config):
    stream_env = _named("ConfigMap", "shop-stream")["data"]
    repo = _feature_store_yaml()
    assert repo == {
        "project": "shop",
        "provider": "local",
        "registry": config.feature_registry_path,
        "online_store": {"type": "redis", "connection_string": stream_env["SHOP_REDIS"]},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    assert config.feature_registry_path.startswith("s3://")


def test_the_feature_server_serves_the_repo_config_on_its_service_port():
    deployment = _named("Deployment", "shop-feature-server")
    pod = _pod_spec(deployment)
    (container,) = pod["containers"]
    assert container["command"] == ["feast"] and container["image"] == "shop-features"
    args = container["args"]
    repo_dir = args[args.index("-c") + 1]
    assert args[args.index("-c") + 2] == "serve"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (repo,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name")]
    assert volumes[repo]["configMap"]["name"] == "shop-feature-store"
    assert mounts[repo] == repo_dir
    assert args[args.index("-h") + 1] == "0.0.0.0"
    port = int(args[args.index("-p") + 1])
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    service = _named("Service", "shop-feature-server")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == container_port["name"]
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    # gunicorn's control socket goes under $HOME: a writable one with a read-only root
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounts[next(n for n, v in volumes.items() if "emptyDir" in v)] == env["HOME"]


def _features_python() -> str:
    python = FEATURES_VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{FEATURES_VENV} is not built (make features-env): Feast is not installed")
    return str(python)


def test_feast_reads_the_repo_config_and_the_servers_flags(tmp_path):
    """In the features environment: Feast's own loader takes feature_store.yaml, and
    `feast serve` has every flag the Deployment passes."""
    python = _features_python()
    (tmp_path / "feature_store.yaml").write_text(
        _named("ConfigMap", "shop-feature-store")["data"]["feature_store.yaml"]
    )
    check = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from feast.repo_config import load_repo_config
        repo = Path(sys.argv[1])
        c = load_repo_config(repo, repo / "feature_store.yaml")
        print(c.project, c.online_store.type, c.offline_store.type, c.registry.path)
        """
    )
    result = subprocess.run(
        [python, "-c", check, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    repo = _feature_store_yaml()
    assert result.stdout.split() == ["shop", "redis", "file", repo["registry"]]
    feast = str(FEATURES_VENV / "bin" / "feast")
    help_text = subprocess.run(
        [feast, "serve", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    (container,) = _pod_spec(_named("Deployment", "shop-feature-server"))["containers"]
    serve_args = container["args"][container["args"].index("serve") + 1 :]
    for flag in (a for a in serve_args if a.startswith("-")):
        assert re.search(rf"(^|[\s,]){re.escape(flag)}[\s,]", help_text), flag


# Schedules and the kustomization -------------------------------------------------------------


def test_materialization_is_hourly_and_the_definitions_are_applied():
    cronjob = _named("CronJob", "shop-features-materialize")
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 * * * *"
    assert (spec["timeZone"], spec["concurrencyPolicy"]) == ("Etc/UTC", "Forbid")
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] < 3600  # done before the next one is due
    apply = _named("Job", "shop-features-apply")
    assert apply["spec"]["ttlSecondsAfterFinished"] > 0  # so a later apply -k reruns it


def test_the_kustomization_matches_manifests_kfp(kustomization):
    kfp = yaml.safe_load((REPO_ROOT / "manifests" / "kfp" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == kfp["namespace"] == NAMESPACE
    assert kustomization["labels"] == kfp["labels"]
    (image,) = kustomization["images"]
    assert image["name"] == "shop-features"
    # one version for the repo's images
    assert image["newTag"] == kfp["images"][0]["newTag"]
    assert image["newName"].rsplit("/", 1)[0] == kfp["images"][0]["newName"].rsplit("/", 1)[0]


def test_kustomize_renders_every_object_in_the_namespace_with_the_label(kustomization):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH (needed for `kubectl kustomize`)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(STREAM)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == len(DOCS)
    (image,) = kustomization["images"]
    for obj in rendered:
        assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"][PART_OF[0]] == PART_OF[1]
    redis = _one(rendered, "StatefulSet")
    assert pod_labels(redis)[PART_OF[0]] == PART_OF[1]
    images = {
        c["image"]
        for obj in rendered
        if obj["kind"] in {"Deployment", "Job", "CronJob"}
        for c in _pod_spec(obj)["containers"]
    }
    assert images == {f"{image['newName']}:{image['newTag']}"}
