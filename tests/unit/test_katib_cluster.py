"""The cluster tuning backend against a local stand-in of the Kubernetes API endpoints it calls
through the Katib SDK (KatibClient -> kubernetes CustomObjectsApi): create, get and delete of
kubeflow.org/v1beta1 experiments and the label-selected list of trials in a namespace, over HTTP.
The stand-in plays Katib's controller by answering with the conditions an Experiment goes through
and, on success, a currentOptimalTrial whose parameterAssignments are strings, as Katib's are. It
stands in for the API server + Katib; it does not run trials (no cluster here)."""

import pytest
from http_standin import serve_json
from kubeflow.katib import KatibClient
from kubeflow.katib import models as katib
from kubeflow.katib.api_client import ApiClient as KatibApiClient
from kubernetes import client

from components.tuning import cluster_backend
from components.tuning.experiment import build_experiment, fixed_trial_args
from components.tuning.report import TuningError
from serving.validate_manifests import differences
from settings import load_config

pytestmark = pytest.mark.unit

NS = "team"
EXPERIMENTS = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/experiments"
TRIALS = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/trials"
TIMES = {"a": "2026-11-29T10:00:01Z", "b": "2026-11-29T10:00:02Z", "c": "2026-11-29T10:00:03Z"}
BEST = {"learning_rate": "0.00949", "dropout": "0.21", "l2": "0.0001", "embedding_dim": "16"}


def _condition(kind, reason, message=""):
    return {"type": kind, "status": "True", "reason": reason, "message": message}


class KatibStandIn:
    """In-memory experiments; each GET moves an experiment one step along `script`."""

    def __init__(self, script, fail_create=None):
        self.script, self.fail_create = script, fail_create
        self.experiments, self.requests, self.created = {}, [], []

    def handle(self, method, path, query, body):
        self.requests.append((method, path))
        if method == "POST" and path == EXPERIMENTS:
            if self.fail_create:
                return self.fail_create, {"kind": "Status", "message": "forbidden"}
            self.created.append(body)
            self.experiments[body["metadata"]["name"]] = {**body, "status": {}, "_n": 0}
            return 201, body
        if method == "GET" and path == TRIALS:
            name = query["labelSelector"][0].split("=", 1)[1]
            return 200, {"items": self._trials(name)}
        name = path.rsplit("/", 1)[-1]
        if not path.startswith(EXPERIMENTS + "/") or name not in self.experiments:
            return 404, {"kind": "Status", "message": f"{path} not found"}
        experiment = self.experiments[name]
        if method == "DELETE":
            del self.experiments[name]
            return 200, {"kind": "Status", "status": "Success"}
        step = self.script[min(experiment["_n"], len(self.script) - 1)]
        experiment["_n"] += 1
        status = {"conditions": [step], "trials": 3, "trialsSucceeded": 2, "trialsFailed": 1}
        if step["type"] == "Succeeded":
            status["currentOptimalTrial"] = {
                "bestTrialName": f"{name}-b",
                "parameterAssignments": [{"name": k, "value": v} for k, v in BEST.items()],
                "observation": {"metrics": [{"name": "auc", "latest": "0.7851", "max": "0.79"}]},
            }
        experiment["status"] = status
        return 200, {k: v for k, v in experiment.items() if k != "_n"}

    def _trials(self, experiment):
        def trial(suffix, assignments, kind, auc):
            return {
                "apiVersion": "kubeflow.org/v1beta1",
                "kind": "Trial",
                "metadata": {"name": f"{experiment}-{suffix}", "creationTimestamp": TIMES[suffix]},
                "spec": {
                    "parameterAssignments": [
                        {"name": k, "value": v} for k, v in assignments.items()
                    ]
                },
                "status": {
                    "conditions": [_condition(kind, f"Trial{kind}")],
                    "observation": {"metrics": [{"name": "auc", "latest": auc}]} if auc else None,
                },
            }

        worse = {**BEST, "learning_rate": "0.0003"}
        return [
            trial("a", worse, "Succeeded", "0.61"),
            trial("b", BEST, "Succeeded", "0.7851"),
            trial("c", worse, "Failed", None),
        ]


@pytest.fixture
def katib_for():
    servers = []

    def start(script, fail_create=None):
        state = KatibStandIn(script, fail_create)
        server = serve_json(lambda *request: state.handle(*request))
        servers.append(server)
        configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
        return KatibClient(client_configuration=configuration), state

    yield start
    for server in servers:
        server.shutdown()


def _experiment(tuning, name="shop-ranking-tune-abc"):
    config = load_config("kubeflow", [f"kubeflow.namespace={NS}"])
    args = fixed_trial_args(
        tuning, config.training, config.transform.model_dump(), ["--latest-under=/mnt/shop/x"]
    )
    return build_experiment(name, tuning, config.kubeflow, config.pod_object_store(), args)


RUNNING = _condition("Running", "ExperimentRunning")
SUCCEEDED = _condition("Succeeded", "ExperimentMaxTrialsReached", "max trials reached")


def test_the_optimal_trial_becomes_typed_values_and_the_experiment_is_deleted(katib_for):
    tuning = load_config("kubeflow").tuning
    katib_client, state = katib_for(
        [_condition("Created", "ExperimentCreated"), RUNNING, SUCCEEDED]
    )
    log = []
    report = cluster_backend.run_cluster_search(
        tuning, _experiment(tuning), katib_client, log=log.append, poll_s=0
    )
    assert report.best.values == {
        "learning_rate": 0.00949,
        "dropout": 0.21,
        "l2": 0.0001,
        "embedding_dim": 16,
    }
    assert isinstance(report.best.values["embedding_dim"], int)
    assert report.best.objective == pytest.approx(0.7851)
    assert [t.status for t in report.trials] == ["Succeeded", "Succeeded", "Failed"]
    assert report.experiment == f"{NS}/shop-ranking-tune-abc"
    assert ("DELETE", f"{EXPERIMENTS}/shop-ranking-tune-abc") in state.requests  # cleanup: true
    assert any("running" in line for line in log)
    # What reached the API server is a valid Experiment: nothing lost in the SDK model round trip.
    (body,) = state.created
    parsed = KatibApiClient().deserialize(_Body(body), "V1beta1Experiment")
    assert differences(body, KatibApiClient().sanitize_for_serialization(parsed)) == []


class _Body:
    def __init__(self, obj):
        import json

        self.data = json.dumps(obj)


def test_cleanup_false_keeps_the_experiment(katib_for):
    tuning = load_config("kubeflow", ["tuning.cleanup=false"]).tuning
    katib_client, state = katib_for([SUCCEEDED])
    cluster_backend.run_cluster_search(tuning, _experiment(tuning), katib_client, poll_s=0)
    assert not any(method == "DELETE" for method, _ in state.requests)


def test_a_failed_experiment_names_its_reason_and_is_kept_for_inspection(katib_for):
    tuning = load_config("kubeflow").tuning
    failed = _condition(
        "Failed", "ExperimentFailed", "Experiment has failed because max failed count has reached"
    )
    katib_client, state = katib_for([RUNNING, failed])
    with pytest.raises(TuningError, match="max failed count") as err:
        cluster_backend.run_cluster_search(tuning, _experiment(tuning), katib_client, poll_s=0)
    assert f"kubectl -n {NS} describe experiment shop-ranking-tune-abc" in str(err.value)
    assert not any(method == "DELETE" for method, _ in state.requests)


def test_a_search_past_its_timeout_is_deleted_and_names_the_setting(katib_for, monkeypatch):
    tuning = load_config("kubeflow", ["tuning.timeout_s=60"]).tuning
    katib_client, state = katib_for([RUNNING])  # never finishes

    class Clock:  # 25 s pass per poll, instantly
        now = 0.0

        def monotonic(self):
            self.now += 25
            return self.now

        def sleep(self, _):
            pass

    monkeypatch.setattr(cluster_backend, "time", Clock())
    with pytest.raises(TuningError, match="tuning.timeout_s=60"):
        cluster_backend.run_cluster_search(tuning, _experiment(tuning), katib_client, poll_s=0)
    assert ("DELETE", f"{EXPERIMENTS}/shop-ranking-tune-abc") in state.requests


def test_a_refused_create_points_at_katib_and_its_rbac(katib_for):
    tuning = load_config("kubeflow").tuning
    katib_client, _ = katib_for([SUCCEEDED], fail_create=403)
    with pytest.raises(TuningError, match=r"HTTP 403.*manifests/katib/rbac.yaml"):
        cluster_backend.run_cluster_search(tuning, _experiment(tuning), katib_client, poll_s=0)


def test_success_without_an_optimal_trial_is_an_error(katib_for, monkeypatch):
    tuning = load_config("kubeflow").tuning
    katib_client, state = katib_for([SUCCEEDED])
    original = state.handle

    def no_optimal(method, path, query, body):
        status, payload = original(method, path, query, body)
        if method == "GET" and path.startswith(EXPERIMENTS + "/"):
            payload["status"].pop("currentOptimalTrial", None)
        return status, payload

    monkeypatch.setattr(state, "handle", no_optimal)
    with pytest.raises(TuningError, match="without an optimal trial"):
        cluster_backend.run_cluster_search(tuning, _experiment(tuning), katib_client, poll_s=0)


def test_the_experiment_model_is_the_katib_sdks():
    tuning = load_config("kubeflow").tuning
    assert isinstance(_experiment(tuning), katib.V1beta1Experiment)
