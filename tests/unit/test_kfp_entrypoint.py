"""components/kfp_entrypoint.py: each thing it mends fails TFX's stock entrypoint first (shown with
TFX's own parsing functions), and the step runs on s3:// against a loopback S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from repo_paths import REPO_ROOT
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as tfx_utils

from components import kfp_entrypoint

UNIT_DIR = Path(__file__).resolve().parent
EXAMPLES_SCHEMA = "title: tfx.Examples\ntype: object\n"
MODEL_SCHEMA = "title: tfx.Model\ntype: object\n"
INPUTS_SPEC = {
    "artifacts": {"examples": {"artifactType": {"instanceSchema": EXAMPLES_SCHEMA}}},
    "parameters": {"span": {"parameterType": "NUMBER_INTEGER"}},
}


def backend_executor_input(root: str, output_file: str) -> dict:
    """What KFP 2.17's driver and launcher hand a step (tests/kfp_harness.py builds the same)."""
    return {
        "inputs": {
            "parameterValues": {"span": 2.0},
            "artifacts": {
                "examples": {
                    "artifacts": [
                        {
                            "name": "41",  # the ML Metadata id
                            "type": {"instanceSchema": ""},  # client.go: Schema ""
                            "uri": f"{root}/CsvExampleGen/u1/examples",
                            "metadata": {
                                "split_names": '["eval","train"]',
                                "span": 2.0,
                                "tags": {"list": ["a", "b"]},  # ML Metadata's list wrapping
                                "display_name": "examples",
                                "store_session_info": '{"Provider":"s3","Params":{}}',
                            },
                        }
                    ]
                }
            },
        },
        "outputs": {
            "artifacts": {
                "model": {
                    "artifacts": [
                        {
                            "name": "model",
                            "type": {"instanceSchema": MODEL_SCHEMA},
                            "uri": f"{root}/Trainer/u2/model",
                        }
                    ]
                },
                "executor-logs-0": {
                    "artifacts": [
                        {
                            "name": "executor-logs-0",
                            "type": {"schemaTitle": "system.Artifact"},
                            "uri": f"{root}/Trainer/u2/executor-logs-0",
                        }
                    ]
                },
            },
            "outputFile": output_file,
        },
    }


def _proto(executor_input: dict) -> pipeline_spec_pb2.ExecutorInput:
    message = pipeline_spec_pb2.ExecutorInput()
    json_format.ParseDict(executor_input, message, ignore_unknown_fields=True)
    return message


def test_tfx_cannot_read_an_input_the_driver_built_and_the_adapted_one_it_can(tmp_path):
    given = backend_executor_input("s3://b/root", str(tmp_path / "out.json"))
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'get'"):
        tfx_utils.parse_raw_artifact_dict(_proto(given).inputs.artifacts)

    adapted = kfp_entrypoint.adapt(given, INPUTS_SPEC)
    [examples] = tfx_utils.parse_raw_artifact_dict(_proto(adapted).inputs.artifacts)["examples"]
    assert type(examples).__name__ == "Examples"
    assert examples.span == 2 and examples.split_names == '["eval","train"]'
    assert examples.get_custom_property("tags") == ["a", "b"]  # unwrapped, as it was written
    assert given["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] == {
        "instanceSchema": ""
    }  # the argument is left as it was


def test_tfx_cannot_import_the_executor_logs_output_and_it_is_left_out(tmp_path):
    given = backend_executor_input("s3://b/root", str(tmp_path / "out.json"))
    with pytest.raises(ImportError, match="system.Artifact"):
        tfx_utils.parse_raw_artifact_dict(_proto(given).outputs.artifacts)
    adapted = kfp_entrypoint.adapt(given, INPUTS_SPEC)
    assert set(adapted["outputs"]["artifacts"]) == {"model"}
    assert set(tfx_utils.parse_raw_artifact_dict(_proto(adapted).outputs.artifacts)) == {"model"}


@pytest.mark.parametrize("key", ["executor-logs", "executor-logs-0", "executor-logs-3"])
def test_both_spellings_of_the_logs_output_are_dropped_and_nothing_else(key):
    executor_input = {
        "outputs": {
            "artifacts": {
                key: {"artifacts": [{"type": {"schemaTitle": "system.Artifact"}}]},
                "stats": {"artifacts": [{"type": {"schemaTitle": "system.Artifact"}}]},
            }
        }
    }
    assert kfp_entrypoint.drop_undeclared_outputs(executor_input) == [key]
    assert set(executor_input["outputs"]["artifacts"]) == {"stats"}  # a real error stays one


def test_an_input_without_type_or_declaration_is_named():
    executor_input = {"inputs": {"artifacts": {"model": {"artifacts": [{"type": {}}]}}}}
    with pytest.raises(ValueError, match="input artifact 'model'"):
        kfp_entrypoint.fill_input_types(executor_input, INPUTS_SPEC)


def test_gcs_directory_markers_are_removed_from_the_outputs_and_nothing_else():
    deleted = []

    def blob(name, size):
        return SimpleNamespace(name=name, size=size, delete=lambda: deleted.append(name))

    listing = {
        ("bkt", "root/Trainer/u2/model"): [
            blob("root/Trainer/u2/model/", 0),  # TensorFlow's folder markers
            blob("root/Trainer/u2/model/Format-Serving/", 0),
            blob("root/Trainer/u2/model/Format-Serving/saved_model.pb", 812),
            blob("root/Trainer/u2/model/empty.txt", 0),  # a real empty file stays
        ]
    }
    client = SimpleNamespace(list_blobs=lambda bucket, prefix: listing[(bucket, prefix)])
    removed = kfp_entrypoint.remove_gcs_directory_markers(
        ["gs://bkt/root/Trainer/u2/model", "s3://other/x"], client
    )
    assert removed == [
        "gs://bkt/root/Trainer/u2/model/",
        "gs://bkt/root/Trainer/u2/model/Format-Serving/",
    ]
    assert deleted == [r[len("gs://bkt/") :] for r in removed]


def _step(module_args: list[str], executor_input: dict, env: dict) -> subprocess.CompletedProcess:
    args = [
        "--executor_class_path",
        "fake_executor.WriteModelExecutor",
        "--json_serialized_invocation_args",
        json.dumps(executor_input),
        "--json_serialized_inputs_spec_args",
        json.dumps(INPUTS_SPEC),
    ]
    return subprocess.run(
        [sys.executable, *module_args, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(UNIT_DIR)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def s3_step(s3_server, tmp_path):
    bucket = f"entrypoint-{tmp_path.name[-12:].lower().replace('_', '-')}"
    s3_server.make_bucket(bucket)
    output_file = tmp_path / "pod" / "output_metadata.json"
    return SimpleNamespace(
        root=f"s3://{bucket}/run",
        output_file=output_file,
        input=backend_executor_input(f"s3://{bucket}/run", str(output_file)),
    )


def test_the_entrypoint_runs_a_step_on_s3_and_exits_cleanly(s3_server, s3_step):
    done = _step(["-m", "components.kfp_entrypoint"], s3_step.input, {})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pure virtual method called" not in done.stderr
    output = json.loads(s3_step.output_file.read_text())
    [model] = output["artifacts"]["model"]["artifacts"]
    assert model["uri"] == f"{s3_step.root}/Trainer/u2/model"
    assert model["metadata"]["read"] == '["eval","train"]'
    bucket, _, prefix = model["uri"][len("s3://") :].partition("/")
    body = s3_server.client().get_object(Bucket=bucket, Key=f"{prefix}/model.txt")["Body"]
    assert body.read().decode() == "trained on span 2"


def test_without_the_clean_exit_the_s3_filesystem_aborts_a_finished_step(s3_step):
    """TFX's stock entrypoint, given the mended input and tensorflow-io, does the work and writes
    its output, then dies in the AWS SDK's destructors at interpreter exit: KFP would mark the
    step failed."""
    adapted = kfp_entrypoint.adapt(s3_step.input, INPUTS_SPEC)
    stock = (
        "import runpy, sys, tensorflow_io; sys.argv[0] = 'run_executor'; "
        f"runpy.run_module('{'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'}', "
        "run_name='__main__')"
    )
    done = _step(["-c", stock], adapted, {})
    assert s3_step.output_file.exists()  # the work was done
    assert done.returncode != 0
    assert "pure virtual method called" in done.stderr
