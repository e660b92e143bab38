"""tests/kfp_harness.py's contract with the executor, field by field, without containers: what it
builds must be what KFP 2.17's driver and launcher build (its module docstring names the files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kfp_harness import (
    HarnessError,
    LocalKfpHarness,
    MetadataStore,
    coerce_parameter,
    local_path_for_uri,
    mlmd_round_trip,
    resolve_pipeline_root,
)

from pipelines.kubeflow_runner import compile_package
from settings import load_config

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.mark.parametrize(
    ("runtime", "configmap", "expected"),
    [
        ("s3://run/root", {"defaultPipelineRoot": "s3://cm/root"}, "s3://run/root"),
        (None, {"defaultPipelineRoot": "gs://cm/root"}, "gs://cm/root"),
        (None, None, "minio://mlpipeline/v2/artifacts"),
        ("s3://b/r?region=eu", None, "s3://b/r"),
    ],
)
def test_the_root_comes_from_the_run_then_the_configmap_then_minio(runtime, configmap, expected):
    assert resolve_pipeline_root(runtime, configmap) == expected


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("/mnt/shop/outputs", "unrecognized pipeline root format"),
        ("outputs", "unrecognized pipeline root format"),
        ("file:///tmp/x", "unsupported Cloud bucket"),
        ("hdfs://nn/x", "unsupported Cloud bucket"),
    ],
)
def test_roots_the_backend_refuses(root, message):
    with pytest.raises(HarnessError, match=message):
        resolve_pipeline_root(root, None)


def test_metadata_comes_back_from_ml_metadata_as_the_converter_returns_it():
    assert mlmd_round_trip(True) == 1 and mlmd_round_trip(False) == 0
    assert mlmd_round_trip(3) == 3.0 and isinstance(mlmd_round_trip(3), float)
    assert mlmd_round_trip(["a"]) == {"list": ["a"]}
    assert mlmd_round_trip({"k": 1}) == {"struct": {"k": 1}}
    with pytest.raises(HarnessError, match="unsupported value type"):
        mlmd_round_trip(None)
    store = MetadataStore()
    recorded = store.record("examples", {"uri": "s3://b/x", "metadata": {"span": 2}}, "{}")
    artifact = store.runtime_artifact(recorded.id)
    assert artifact == {
        "name": str(recorded.id),
        "type": {"instanceSchema": ""},
        "uri": "s3://b/x",
        "metadata": {"span": 2.0, "display_name": "examples", "store_session_info": "{}"},
    }


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (2, "NUMBER_INTEGER", 2.0),
        (2, "STRING", "2"),
        (2.5, "STRING", "2.5"),
        (True, "STRING", "true"),
        ({"a": 1}, "STRING", '{"a": 1}'),
        ("x", "STRING", "x"),
        (False, "BOOLEAN", False),
    ],
)
def test_parameters_are_handed_on_as_structpb_values(value, kind, expected):
    assert coerce_parameter("p", value, kind) == expected


@pytest.mark.parametrize(("value", "kind"), [("2", "NUMBER_INTEGER"), (True, "NUMBER_DOUBLE")])
def test_a_parameter_of_the_wrong_kind_is_refused(value, kind):
    with pytest.raises(HarnessError, match="requires type"):
        coerce_parameter("p", value, kind)


def test_local_paths_are_the_launchers():
    assert local_path_for_uri("s3://b/k/x") == "/s3/b/k/x"
    assert local_path_for_uri("gs://b/k") == "/gcs/b/k"
    assert local_path_for_uri("minio://b/k") == "/minio/b/k"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    config = load_config("kubeflow", ["kubeflow.pvc_name=null"])
    return compile_package(config, str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")), config


def test_an_executor_input_is_what_the_driver_and_launcher_build(package, tmp_path):
    path, config = package
    harness = LocalKfpHarness(
        path, runner=None, store=None, work_dir=tmp_path, pipeline_root=config.pipeline_root
    )
    from kfp_harness import HarnessRun, TaskResult, resolve_run_parameters

    values = resolve_run_parameters(harness.spec, {"span": 2})
    run = HarnessRun("run-1", f"{config.pipeline_root}/{config.name}/run-1", MetadataStore())
    produced = run.store.record(
        "examples", {"uri": f"{run.root}/CsvExampleGen/u/examples", "metadata": {}}, "{}"
    )
    run.tasks["CsvExampleGen"] = TaskResult(
        "CsvExampleGen", 0, [], {}, {"examples": produced.id}, Path("x")
    )
    given = harness.executor_input("StatisticsGen", values, run)

    outputs = given["outputs"]["artifacts"]
    assert set(outputs) == {"statistics", "executor-logs-0"}
    [statistics] = outputs["statistics"]["artifacts"]
    assert re.fullmatch(
        rf"{re.escape(run.root)}/StatisticsGen/{UUID}/statistics", statistics["uri"]
    )
    assert statistics["name"] == "statistics"
    assert "instanceSchema" in statistics["type"]  # copied from outputDefinitions
    [logs] = outputs["executor-logs-0"]["artifacts"]
    assert logs["type"] == {"schemaTitle": "system.Artifact"}
    task_root = statistics["uri"].rsplit("/", 1)[0]
    assert given["outputs"]["outputFile"] == f"/s3/{task_root[5:]}/output_metadata.json"
    [examples] = given["inputs"]["artifacts"]["examples"]["artifacts"]
    assert examples["name"] == str(produced.id) and examples["type"] == {"instanceSchema": ""}
    json.dumps(given)  # what `{{$}}` becomes
