"""The Trainer's TFJob launcher (multi-worker training on Kubeflow) against a local stand-in of the
Kubernetes API endpoints it calls: create, get and delete of kubeflow.org/v1 tfjobs in a namespace,
served over HTTP to the real kubernetes client. The stand-in plays the Training Operator's part by
answering with the conditions a TFJob goes through (Created, Running, then Succeeded or Failed)."""

import json
from types import SimpleNamespace

import pytest
from http_standin import serve_json
from kubernetes import client
from test_manifests import round_trip_differences

from components import tfjob
from components.worker_flags import parse_args, worker_args, worker_sections
from settings import (
    DistributionConfig,
    KubeflowConfig,
    TrainingConfig,
    TransformConfig,
    load_config,
)

BASE = "/apis/kubeflow.org/v1/namespaces/team/tfjobs"


class StandIn:
    """In-memory tfjobs; each GET advances a job one condition along `script`."""

    def __init__(self, script):
        self.script = script
        self.jobs, self.requests, self.fail_create = {}, [], None

    def handle(self, method, path, body):
        self.requests.append((method, path))
        if method == "POST" and path == BASE:
            if self.fail_create:
                return self.fail_create, {"kind": "Status", "message": "denied"}
            self.jobs[body["metadata"]["name"]] = {**body, "status": {"conditions": []}, "_n": 0}
            return 201, body
        name = path.rsplit("/", 1)[-1]
        if not path.startswith(BASE + "/") or name not in self.jobs:
            return 404, {"kind": "Status", "message": f"{path} not found"}
        job = self.jobs[name]
        if method == "GET":
            step = self.script[min(job["_n"], len(self.script) - 1)]
            job["_n"] += 1
            job["status"]["conditions"].append(
                {"type": step[0], "status": "True", "message": step[1]}
            )
            return 200, {k: v for k, v in job.items() if k != "_n"}
        if method == "DELETE":
            del self.jobs[name]
            return 200, {"kind": "Status", "status": "Success"}
        return 405, {"message": method}


@pytest.fixture
def api_for():
    servers = []

    def start(script):
        state = StandIn(script)
        server = serve_json(lambda method, path, _query, body: state.handle(method, path, body))
        servers.append(server)
        configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
        return client.CustomObjectsApi(client.ApiClient(configuration)), state

    yield start
    for server in servers:
        server.shutdown()


KUBEFLOW = KubeflowConfig(
    image="ghcr.io/x/shop-ranking:1",
    namespace="team",
    pvc_name="shop-ranking-store",
    resources={
        "Trainer": {
            "cpu": 4,
            "memory_gb": 16,
            "accelerator_type": "nvidia.com/gpu",
            "accelerator_count": 1,
        }
    },
)
WORKERS = 3
DISTRIBUTION = DistributionConfig(strategy="multi_worker", workers=WORKERS)
FN_ARGS = SimpleNamespace(
    transform_output="/mnt/shop/t/graph",
    train_files=["/mnt/shop/t/ex/Split-train/*"],
    eval_files=["/mnt/shop/t/ex/Split-eval/*"],
    serving_model_dir="/mnt/shop/t/model/Format-Serving",
    model_run_dir="/mnt/shop/t/model_run",
)


def manifest():
    args = worker_args(FN_ARGS, TrainingConfig(train_steps=10), TransformConfig(), DISTRIBUTION)
    return tfjob.tfjob_manifest(
        tfjob.job_name(FN_ARGS.model_run_dir), KUBEFLOW, None, WORKERS, args
    )


def run(api, job, **kwargs):
    return tfjob.run_tfjob(api, job, timeout_s=60, poll_s=0, log=lambda _: None, **kwargs)


def test_manifest_runs_the_worker_entry_point_with_the_trainers_resources():
    job = manifest()
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3
    template = worker["template"]
    assert round_trip_differences(template, "V1PodTemplateSpec") == []
    container = template["spec"]["containers"][0]
    assert container["name"] == "tensorflow" and container["image"] == KUBEFLOW.image
    assert container["command"] == ["python", "-m", "components.train_worker"]
    assert container["args"][container["args"].index("--serving-model-dir") + 1] == (
        FN_ARGS.serving_model_dir
    )
    assert container["resources"]["limits"] == {
        "cpu": "4.0", "memory": "16.0G", "nvidia.com/gpu": "1"}  # fmt: skip
    assert template["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == KUBEFLOW.pvc_name
    assert {e["name"]: e["value"] for e in container["env"]} == {"TF_USE_LEGACY_KERAS": "1"}
    parsed = parse_args(container["args"])  # the entry point accepts exactly these flags
    training, transform, distribution = worker_sections(parsed)  # and validates them again
    assert training == TrainingConfig(train_steps=10) and transform == TransformConfig()
    assert distribution == DISTRIBUTION
    assert json.loads(parsed.distribution)["strategy"] == "multi_worker"


def test_a_job_that_succeeds_is_waited_for_and_deleted(api_for):
    api, state = api_for([("Created", ""), ("Running", ""), ("Succeeded", "done")])
    job = run(api, manifest())
    assert [c["type"] for c in job["status"]["conditions"]] == ["Created", "Running", "Succeeded"]
    methods = [m for m, _ in state.requests]
    assert methods == ["POST", "GET", "GET", "GET", "DELETE"] and not state.jobs


def test_a_failed_job_fails_the_step_with_its_message(api_for):
    api, state = api_for([("Created", ""), ("Failed", "worker-1 OOMKilled")])
    with pytest.raises(tfjob.TFJobError, match="team/shop-ranking-train-.* failed: worker-1 OOM"):
        run(api, manifest())
    assert not state.jobs  # deleted even so


def test_a_job_that_never_ends_times_out(api_for):
    api, _ = api_for([("Created", ""), ("Running", "")])
    ticks = iter(range(0, 10_000, 600))
    with pytest.raises(tfjob.TFJobError, match="did not finish within 1800s"):
        tfjob.run_tfjob(
            api, manifest(), timeout_s=1800, poll_s=0, log=lambda _: None, clock=lambda: next(ticks)
        )


def test_a_refused_create_names_the_status(api_for):
    api, state = api_for([("Succeeded", "")])
    state.fail_create = 403
    with pytest.raises(tfjob.TFJobError, match="create failed: HTTP 403"):
        run(api, manifest())


def test_the_workers_pods_come_from_the_pipeline_configs_sections():
    config = load_config(
        "kubeflow",
        [
            "distribution.strategy=multi_worker",
            "distribution.workers=4",
            "kubeflow.resources.Trainer.accelerator_type=nvidia.com/gpu",
            "kubeflow.resources.Trainer.accelerator_count=2",
        ],
    )
    # What the Trainer's custom_config carries, as JSON, and what run_fn reads back from it.
    carried = json.loads(json.dumps(tfjob.pod_sections_json(config)))
    kubeflow, object_store = tfjob.pod_sections(carried)
    assert (kubeflow, object_store) == (config.kubeflow, config.object_store)
    job = tfjob.tfjob_manifest("j", kubeflow, object_store, config.distribution.workers, [])
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    [container] = worker["template"]["spec"]["containers"]
    assert worker["replicas"] == 4 and job["metadata"]["namespace"] == config.kubeflow.namespace
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"  # the Trainer's resources
    assert container["image"] == config.kubeflow.image
    claim = worker["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "shop-ranking-store"


def test_the_pipeline_runner_may_launch_and_clean_up_tfjobs():
    from test_manifests import _render

    objects = _render()
    role = next(
        o
        for o in objects
        if o["metadata"]["name"] == "shop-ranking-tfjob-launcher" and o["kind"] == "Role"
    )
    rule = role["rules"][0]
    assert rule["apiGroups"] == [tfjob.GROUP] and rule["resources"] == [tfjob.PLURAL]
    assert {"create", "get", "delete"} <= set(rule["verbs"])
    binding = next(
        o
        for o in objects
        if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == "shop-ranking-tfjob-launcher"
    )
    assert binding["subjects"][0]["name"] == "pipeline-runner"


def test_workers_on_an_object_store_root_get_its_settings_and_keys_from_the_secret():
    config = load_config("kubeflow", ["distribution.strategy=multi_worker"])
    kubeflow, object_store = tfjob.pod_sections(tfjob.pod_sections_json(config))
    [container] = tfjob.pod_spec(kubeflow, object_store, "tensorflow", ["python"], [])["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["S3_ENDPOINT"]["value"] == config.object_store.endpoint
    assert env["TF_USE_LEGACY_KERAS"]["value"] == "1"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlpipeline-minio-artifact", "key": "secretkey"}  # fmt: skip
    local = load_config("kubeflow", ["output_root=/mnt/shop/outputs", "data.root=/mnt/shop/data"])
    assert local.pod_object_store() is None  # a PVC root needs no S3 settings or keys
    [container] = tfjob.pod_spec(local.kubeflow, None, "tensorflow", ["python"], [])["containers"]
    assert container["env"] == [{"name": "TF_USE_LEGACY_KERAS", "value": "1"}]
