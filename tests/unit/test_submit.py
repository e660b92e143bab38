"""`pipelines.submit` end to end: the real kfp 2.5 SDK talking HTTP to a local stand-in.

The stand-in (`FakeKfpApi` behind tests/http_standin.py's server on 127.0.0.1) plays the KFP API
server (the `ml-pipeline` service) for the v2beta1 REST endpoints kfp 2.5's `Client` calls to
upload, find experiments and start runs, and nothing else:

    GET  /apis/v2beta1/healthz                      Client.__init__ (when no namespace is set)
    GET  /apis/v2beta1/pipelines?filter=            get_pipeline_id (display_name EQUALS)
    POST /apis/v2beta1/pipelines/upload?name=       upload_pipeline (multipart `uploadfile`)
    POST /apis/v2beta1/pipelines/upload_version     upload_pipeline_version (?name=&pipelineid=)
    GET  /apis/v2beta1/pipelines/{id}/versions      list_pipeline_versions (sort_by, page_size)
    GET  /apis/v2beta1/experiments?filter=          create_experiment's lookup by name
    POST /apis/v2beta1/experiments                  create_experiment
    POST /apis/v2beta1/runs                         run_pipeline
    POST /apis/v2beta1/recurringruns                create_recurring_run

State lives in memory, every request is recorded (method, path, query, JSON body or uploaded file
name), and anything else gets a 404 with a JSON error, so a kfp upgrade that changes its calls
fails here instead of against a cluster.
"""

from __future__ import annotations

import email
import itertools
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from http_standin import Request, serve, stop

from pipelines.submit import (
    SubmitError,
    parse_parameters,
    recurring_run_url,
    run_url,
    submit,
)

API = "/apis/v2beta1"
HEALTHZ = ("GET", f"{API}/healthz")

# A minimal KFP v2 IR: one container executor, two root parameters (an int and a JSON string).
TINY_PIPELINE_YAML = """\
# PIPELINE DEFINITION
# Name: tiny
components:
  comp-hello:
    executorLabel: exec-hello
deploymentSpec:
  executors:
    exec-hello:
      container:
        image: busybox:1.36
        command: [echo, hello]
defaultPipelineRoot: s3://mlpipeline/tiny
pipelineInfo:
  name: tiny
root:
  dag:
    tasks:
      hello:
        componentRef:
          name: comp-hello
        taskInfo:
          name: hello
  inputDefinitions:
    parameters:
      span:
        parameterType: NUMBER_INTEGER
      train_args:
        parameterType: STRING
schemaVersion: 2.1.0
sdkVersion: kfp-2.5.0
"""


class ApiError(Exception):
    """An HTTP error answer, shaped like grpc-gateway's JSON errors."""

    GRPC_CODES = {400: 3, 404: 5, 409: 6, 500: 13}

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.payload = {
            "error": message,
            "code": self.GRPC_CODES.get(status, 2),
            "message": message,
            "details": [],
        }


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: object = None
    filename: str | None = None
    authorization: str | None = None


@dataclass
class FakeKfpApi:
    """In-memory KFP API state plus the log of every request it answered."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, list[dict]] = field(default_factory=dict)  # by pipeline id
    uploads: dict[str, str] = field(default_factory=dict)  # version id -> package text
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # inject HTTP errors
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self) -> list[tuple[str, str]]:
        """(method, path) in order, without healthz: the client skips it when a local KFP
        context (~/.config/kfp/context.json) already names a namespace."""
        return [(r.method, r.path) for r in self.requests if (r.method, r.path) != HEALTHZ]

    def find(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def handle(self, record: Recorded, content_type: str, raw: bytes) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(record)
            try:
                if (record.method, record.path) in self.failures:
                    status = self.failures[(record.method, record.path)]
                    raise ApiError(status, "injected failure")
                return 200, self._route(record, content_type, raw)
            except ApiError as err:
                return err.status, err.payload

    # -- routing ---------------------------------------------------------------------------

    def _route(self, rec: Recorded, content_type: str, raw: bytes) -> dict:
        routes: list[tuple[str, str, Callable[..., dict]]] = [
            ("GET", rf"{API}/healthz", lambda: {"multi_user": False}),
            ("GET", rf"{API}/pipelines", lambda: self._list_pipelines(rec)),
            ("POST", rf"{API}/pipelines/upload", lambda: self._upload(rec, content_type, raw)),
            (
                "POST",
                rf"{API}/pipelines/upload_version",
                lambda: self._upload_version(rec, content_type, raw),
            ),
            (
                "GET",
                rf"{API}/pipelines/(?P<pipeline_id>[^/]+)/versions",
                lambda pipeline_id: self._list_versions(rec, pipeline_id),
            ),
            ("GET", rf"{API}/experiments", lambda: self._list_experiments(rec)),
            ("POST", rf"{API}/experiments", lambda: self._create_experiment(rec, raw)),
            ("POST", rf"{API}/runs", lambda: self._create_run(rec, raw, "run_id", self.runs)),
            (
                "POST",
                rf"{API}/recurringruns",
                lambda: self._create_run(rec, raw, "recurring_run_id", self.recurring_runs),
            ),
        ]
        for method, pattern, action in routes:
            match = re.fullmatch(pattern, rec.path)
            if method == rec.method and match:
                return action(**match.groupdict())
        raise ApiError(404, f"stand-in KFP API does not implement {rec.method} {rec.path}")

    # -- pipelines -------------------------------------------------------------------------

    def _list_pipelines(self, rec: Recorded) -> dict:
        found = _filtered(list(self.pipelines.values()), rec.query.get("filter"))
        return {"pipelines": found, "total_size": len(found)} if found else {}

    def _upload(self, rec: Recorded, content_type: str, raw: bytes) -> dict:
        name = rec.query.get("name") or ""
        if not name:
            raise ApiError(400, "pipeline name is required")
        if any(p["display_name"] == name for p in self.pipelines.values()):
            raise ApiError(409, f"pipeline {name!r} already exists")
        text = self._read_package(rec, content_type, raw)
        pipeline = {
            "pipeline_id": self._new_id("pipeline"),
            "display_name": name,
            "description": rec.query.get("description", ""),
            "created_at": self._now(),
        }
        if rec.query.get("namespace"):
            pipeline["namespace"] = rec.query["namespace"]
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.versions[pipeline["pipeline_id"]] = []
        self._add_version(pipeline["pipeline_id"], name, text)  # KFP names it after the pipeline
        return pipeline

    def _upload_version(self, rec: Recorded, content_type: str, raw: bytes) -> dict:
        pipeline_id, name = rec.query.get("pipelineid", ""), rec.query.get("name", "")
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"pipeline {pipeline_id!r} not found")
        if not name:
            raise ApiError(400, "pipeline version name is required")
        if any(v["display_name"] == name for v in self.versions[pipeline_id]):
            raise ApiError(409, f"pipeline version {name!r} already exists")
        return self._add_version(pipeline_id, name, self._read_package(rec, content_type, raw))

    def _list_versions(self, rec: Recorded, pipeline_id: str) -> dict:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"pipeline {pipeline_id!r} not found")
        versions = _filtered(list(self.versions[pipeline_id]), rec.query.get("filter"))
        sort_by = rec.query.get("sort_by", "")
        if sort_by not in ("", "created_at", "created_at desc"):
            raise ApiError(400, f"stand-in cannot sort by {sort_by!r}")
        versions.sort(key=lambda v: v["created_at"], reverse=sort_by.endswith(" desc"))
        page = versions[: int(rec.query.get("page_size") or 10)]
        return {"pipeline_versions": page, "total_size": len(versions)} if page else {}

    def _add_version(self, pipeline_id: str, name: str, text: str) -> dict:
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self._new_id("version"),
            "display_name": name,
            "created_at": self._now(),
        }
        self.versions[pipeline_id].append(version)
        self.uploads[version["pipeline_version_id"]] = text
        return version

    def _read_package(self, rec: Recorded, content_type: str, raw: bytes) -> str:
        rec.filename, data = _multipart_file(content_type, raw, "uploadfile")
        text = data.decode("utf-8")
        if not isinstance(yaml.safe_load(text), dict):
            raise ApiError(400, "the uploaded package is not a YAML mapping")
        return text

    # -- experiments and runs --------------------------------------------------------------

    def _list_experiments(self, rec: Recorded) -> dict:
        namespace = rec.query.get("namespace") or None
        found = [
            e
            for e in _filtered(list(self.experiments.values()), rec.query.get("filter"))
            if namespace is None or e.get("namespace") == namespace
        ]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def _create_experiment(self, rec: Recorded, raw: bytes) -> dict:
        body = rec.body = json.loads(raw)
        name, namespace = body.get("display_name"), body.get("namespace") or None
        if not name:
            raise ApiError(400, "experiment display_name is required")
        if any(
            (e["display_name"], e.get("namespace")) == (name, namespace)
            for e in self.experiments.values()
        ):
            raise ApiError(409, f"experiment {name!r} already exists")
        experiment = {
            "experiment_id": self._new_id("experiment"),
            "display_name": name,
            "created_at": self._now(),
            "storage_state": "AVAILABLE",
        }
        if namespace:
            experiment["namespace"] = namespace
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _create_run(self, rec: Recorded, raw: bytes, id_key: str, store: dict) -> dict:
        body = rec.body = json.loads(raw)
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(404, f"experiment {body.get('experiment_id')!r} not found")
        ref = body.get("pipeline_version_reference") or {}
        known = {v["pipeline_version_id"] for v in self.versions.get(ref.get("pipeline_id"), [])}
        if ref.get("pipeline_version_id") not in known:
            raise ApiError(404, f"pipeline version {ref!r} not found")
        created = {**body, id_key: self._new_id(id_key.removesuffix("_id"))}
        created["created_at"] = self._now()
        store[created[id_key]] = created
        return created

    # -- helpers ---------------------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._seq)}"

    def _now(self) -> str:
        # One second per object, so "created_at desc" has a well-defined order.
        stamp = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=next(self._seq))
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _filtered(items: list[dict], filter_json: str | None) -> list[dict]:
    """Apply the only filter kfp sends here: display_name EQUALS (operation 1)."""
    if not filter_json:
        return items
    for predicate in json.loads(filter_json).get("predicates", []):
        if predicate.get("operation") not in (1, "EQUALS") or predicate.get("key") != (
            "display_name"
        ):
            raise ApiError(400, f"stand-in cannot filter by {predicate!r}")
        items = [i for i in items if i["display_name"] == predicate.get("stringValue")]
    return items


def _multipart_file(content_type: str, raw: bytes, field_name: str) -> tuple[str, bytes]:
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, f"expected multipart/form-data, got {content_type!r}")
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    for part in message.get_payload():
        if part.get_param("name", header="content-disposition") == field_name:
            return part.get_filename(), part.get_payload(decode=True)
    raise ApiError(400, f"multipart body has no {field_name!r} file")


def _answer(api: FakeKfpApi, request: Request) -> tuple[int, dict]:
    record = Recorded(
        method=request.method,
        path=request.path,
        query=request.query_single,
        authorization=request.headers.get("Authorization"),
    )
    return api.handle(record, request.headers.get("Content-Type", ""), request.body)


@pytest.fixture
def kfp_api() -> Iterator[FakeKfpApi]:
    api = FakeKfpApi()
    server = serve(lambda request: _answer(api, request))  # tests/http_standin.py
    api.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield api
    finally:
        stop(server)


@pytest.fixture
def package(tmp_path: Path) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(TINY_PIPELINE_YAML)
    return str(path)


PARAMS = {"span": 3, "train_args": '{"num_steps": 100}'}


def test_first_submit_creates_pipeline_experiment_and_run(kfp_api, package):
    result = submit(
        package, kfp_api.url, pipeline_name="shop-ranking", experiment="shop", parameters=PARAMS
    )

    assert kfp_api.calls() == [
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload"),
        ("GET", f"{API}/pipelines/{result.pipeline_id}/versions"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    [upload] = kfp_api.find("POST", f"{API}/pipelines/upload")
    assert upload.filename == "pipeline.yaml"
    assert upload.query == {"name": "shop-ranking"}  # shared pipeline: no namespace
    [pipeline] = kfp_api.pipelines.values()
    [version] = kfp_api.versions[pipeline["pipeline_id"]]
    assert kfp_api.uploads[version["pipeline_version_id"]] == TINY_PIPELINE_YAML
    [experiment] = kfp_api.experiments.values()
    assert experiment["display_name"] == "shop"

    [run_request] = kfp_api.find("POST", f"{API}/runs")
    assert run_request.body["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert run_request.body["runtime_config"]["parameters"] == PARAMS
    # The KFP backend never reads the spec's root: the run carries it.
    assert run_request.body["runtime_config"]["pipeline_root"] == "s3://mlpipeline/tiny"
    assert run_request.body["experiment_id"] == experiment["experiment_id"]
    assert re.fullmatch(r"shop-ranking-\d{8}-\d{6}", run_request.body["display_name"])

    [run] = kfp_api.runs.values()
    assert result.pipeline_id == pipeline["pipeline_id"]
    assert result.version_id == version["pipeline_version_id"]
    assert result.experiment_id == experiment["experiment_id"]
    assert (result.run_id, result.recurring_run_id) == (run["run_id"], None)
    assert result.url == f"{kfp_api.url}/#/runs/details/{run['run_id']}"


def test_second_submit_adds_a_version_and_runs_it(kfp_api, package):
    first = submit(package, kfp_api.url, pipeline_name="shop-ranking", experiment="shop")
    kfp_api.requests.clear()
    second = submit(
        package,
        kfp_api.url,
        pipeline_name="shop-ranking",
        version_name="shop-ranking-v2",
        experiment="shop",
        run_name="second",
    )

    assert kfp_api.calls() == [
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload_version"),
        ("GET", f"{API}/experiments"),  # found: no second experiment
        ("POST", f"{API}/runs"),
    ]
    [upload] = kfp_api.find("POST", f"{API}/pipelines/upload_version")
    assert upload.query == {"name": "shop-ranking-v2", "pipelineid": first.pipeline_id}
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.experiments) == 1
    versions = kfp_api.versions[first.pipeline_id]
    assert [v["display_name"] for v in versions] == ["shop-ranking", "shop-ranking-v2"]

    assert second.pipeline_id == first.pipeline_id
    assert second.experiment_id == first.experiment_id
    assert second.version_id == versions[1]["pipeline_version_id"] != first.version_id
    [run_request] = kfp_api.find("POST", f"{API}/runs")
    assert run_request.body["pipeline_version_reference"]["pipeline_version_id"] == (
        second.version_id
    )
    assert run_request.body["display_name"] == "second"


def test_schedule_creates_a_recurring_run_instead(kfp_api, package):
    result = submit(
        package,
        kfp_api.url + "/",
        pipeline_name="shop-ranking",
        experiment="shop",
        namespace="team-a",
        parameters={"span": 7},
        schedule="0 0 3 * * *",
    )

    assert kfp_api.find("POST", f"{API}/runs") == []
    [request] = kfp_api.find("POST", f"{API}/recurringruns")
    body = request.body
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"span": 7}
    assert body["runtime_config"]["pipeline_root"] == "s3://mlpipeline/tiny"
    assert body["pipeline_version_reference"]["pipeline_version_id"] == result.version_id

    [experiment_lookup] = kfp_api.find("GET", f"{API}/experiments")
    assert experiment_lookup.query["namespace"] == "team-a"
    assert kfp_api.experiments[result.experiment_id]["namespace"] == "team-a"
    [recurring] = kfp_api.recurring_runs.values()
    assert result.run_id is None
    assert result.recurring_run_id == recurring["recurring_run_id"]
    assert result.url == f"{kfp_api.url}/#/recurringrun/details/{recurring['recurring_run_id']}"


def test_five_field_cron_fails_before_any_request(kfp_api, package):
    with pytest.raises(ValueError, match=r"'0 3 \* \* \*'.*6 fields"):
        submit(
            package,
            kfp_api.url,
            pipeline_name="shop-ranking",
            experiment="shop",
            schedule="0 3 * * *",
        )
    assert kfp_api.requests == []


def test_api_error_names_host_step_and_status(kfp_api, package):
    kfp_api.failures[("POST", f"{API}/runs")] = 500

    with pytest.raises(SubmitError) as caught:
        submit(package, kfp_api.url, pipeline_name="shop-ranking", experiment="shop")

    message = str(caught.value)
    assert kfp_api.url in message
    assert "run failed" in message
    assert "HTTP 500" in message
    assert "injected failure" in message  # the response body


def test_unreachable_host_is_a_submit_error(package):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"

    with pytest.raises(SubmitError, match=re.escape(host)):
        submit(package, host, pipeline_name="shop-ranking", experiment="shop")


def test_existing_token_is_sent_as_bearer(kfp_api, package):
    submit(
        package, kfp_api.url, pipeline_name="shop-ranking", experiment="shop", existing_token="t0k"
    )
    assert {r.authorization for r in kfp_api.requests} == {"Bearer t0k"}


@pytest.mark.parametrize(
    ("root", "named"),
    [("/mnt/shop/outputs/pipeline_root", "output_root"), ("minio://mlpipeline/x", "output_root")],
)
def test_a_root_kfp_or_tfx_would_refuse_fails_before_any_request(kfp_api, package, root, named):
    with pytest.raises(ValueError, match=f"pipeline root '{root}' \\(from {named}\\)"):
        submit(package, kfp_api.url, pipeline_name="p", experiment="e", pipeline_root=root)
    assert kfp_api.requests == []


def test_an_explicit_root_wins_over_the_packages(kfp_api, package):
    submit(package, kfp_api.url, pipeline_name="p", experiment="e", pipeline_root="gs://b/r")
    [run_request] = kfp_api.find("POST", f"{API}/runs")
    assert run_request.body["runtime_config"]["pipeline_root"] == "gs://b/r"


def test_missing_package_fails_before_any_request(kfp_api, tmp_path):
    with pytest.raises(ValueError, match="nope.yaml"):
        submit(str(tmp_path / "nope.yaml"), kfp_api.url, pipeline_name="p", experiment="e")
    assert kfp_api.requests == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("http://kfp:8888", "http://kfp:8888/#/runs/details/r1"),
        ("http://kfp:8888/", "http://kfp:8888/#/runs/details/r1"),
        (
            "https://kubeflow.example.com/pipeline/",
            "https://kubeflow.example.com/pipeline/#/runs/details/r1",
        ),
    ],
)
def test_run_url(host, expected):
    assert run_url(host, "r1") == expected


def test_recurring_run_url():
    assert recurring_run_url("https://kf.example/pipeline", "j1") == (
        "https://kf.example/pipeline/#/recurringrun/details/j1"
    )


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("span=3", 3),
        ("rate=0.5", 0.5),
        ("enable_cache=false", False),
        ("name=shop-ranking", "shop-ranking"),
        ('train_args={"num_steps": 100}', '{"num_steps": 100}'),
        ("ids=[1, 2]", "[1, 2]"),
        ("expr=a=b", "a=b"),
        ("empty=", ""),
        ("day=2024-01-01", "2024-01-01"),
        ("broken=[1,", "[1,"),
        ("quoted='3'", "3"),
    ],
)
def test_parse_parameters_values(item, expected):
    parsed = parse_parameters([item])
    assert list(parsed.values()) == [expected]
    assert type(parsed[item.split("=")[0]]) is type(expected)


def test_parse_parameters_several():
    assert parse_parameters(["span=3", " model = wide"]) == {"span": 3, "model": "wide"}
    assert parse_parameters([]) == {}


@pytest.mark.parametrize(
    ("items", "match"),
    [(["span3"], "'span3'"), (["=3"], "'=3'"), (["a=1", "a=2"], "'a' given twice")],
)
def test_parse_parameters_errors(items, match):
    with pytest.raises(ValueError, match=match):
        parse_parameters(items)


def test_the_monitors_kubeflow_retrain_submits_a_run_on_the_newest_span(
    kfp_api, package, tmp_path, s3_server
):
    from monitoring.retrain import retrain_kubeflow
    from settings import load_config

    for span in (1, 2, 3):
        (tmp_path / "data" / f"span-{span}").mkdir(parents=True)
        (tmp_path / "data" / f"span-{span}" / "impressions.csv").write_text("a\n1\n")
    config = load_config(
        "kubeflow",
        [f"kubeflow.host={kfp_api.url}", f"kubeflow.package_path={package}",
         f"data.root={tmp_path / 'data'}", "output_root=s3://retrain-test/outputs",
         f"object_store.endpoint={s3_server.endpoint}"],
    )  # fmt: skip
    s3_server.make_bucket("retrain-test")
    outcome = retrain_kubeflow(config, echo=lambda line: None)

    [run_request] = kfp_api.find("POST", f"{API}/runs")
    assert run_request.body["runtime_config"]["parameters"] == {"span": 3}
    assert run_request.body["runtime_config"]["pipeline_root"] == config.pipeline_root
    assert re.fullmatch(
        r"shop-ranking-retrain-span-3-\d{8}-\d{6}", run_request.body["display_name"]
    )
    [run] = kfp_api.runs.values()
    assert outcome.status == "submitted" and outcome.span == 3 and run["run_id"] in outcome.detail
