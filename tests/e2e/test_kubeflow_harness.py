"""The compiled Kubeflow package, run as the KFP v2 backend would run it: every task in the built
pipeline image (tests/podman.py), handed what KFP 2.17's driver and launcher hand an executor
(tests/kfp_harness.py), with an s3:// pipeline root, data and model store on a loopback S3 server
(tests/object_store.py, standing in for KFP's MinIO) as the only thing the containers reach.

It must reach a pushed model that scores like the local runner's on the same span; TFX's stock
entrypoint must fail under the same harness the way it fails on a real backend; and the serving
image must serve the pushed s3:// model over V1 and V2.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import object_store
import podman
import pytest
import tensorflow as tf
from e2e_data import config_for, score_raw_span
from kfp_harness import HarnessError, ImageRunner, LocalKfpHarness
from sklearn.metrics import roc_auc_score

from components.pusher import PUSH_RECORD
from components.trainer import METRICS_FILE
from components.tuning.component import read_report
from pipelines import kfp_spec
from pipelines.kubeflow_runner import TFX_EXECUTOR_MODULE, compile_package
from pipelines.summary import tfma_metrics
from serving.contract import Contract
from serving.loadgen import span_instances, v2_body
from serving.versions import join, numbered_versions

# One xdist worker runs every test built on the session's first pipeline run (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("first_run")

BUCKET = "shop-e2e"
CREDENTIALS_SECRET = "mlpipeline-minio-artifact"  # settings/conf/kubeflow.yaml's, as KFP names it


@pytest.fixture(scope="module")
def images():
    problem = podman.available()
    if problem:
        pytest.fail(f"podman cannot run containers here ({problem}); `make container-tools`")
    # Layer-cached: after `make images` only what changed since is rebuilt.
    return podman.build_images()


@pytest.fixture(scope="module")
def kfp_env(workspace, s3_server, images):
    """The spans in the object store, the package compiled for it, a harness for it."""
    s3_server.make_bucket(BUCKET)
    for span in (1, 2):  # the spans first_run saw (test_local_pipeline adds 3 and 4 later)
        s3_server.upload_dir(workspace / "data" / f"span-{span}", f"s3://{BUCKET}/data/span-{span}")
    kfp_dir = workspace / "kfp"
    config = config_for(
        workspace,
        f"output_root=s3://{BUCKET}/outputs",
        f"data.root=s3://{BUCKET}/data",
        f"object_store.endpoint={s3_server.endpoint}",
        f"object_store.region={object_store.REGION}",
        f"kubeflow.image={podman.PIPELINE_IMAGE}",
        "kubeflow.pvc_name=null",  # the object store is all the steps share
        # One process per step here already; multi_processing (the pod default) only adds
        # worker start-up at this size.
        "beam.direct_running_mode=in_memory",
        "beam.direct_num_workers=1",
        # The KatibTuner step runs, with the local backend (no Katib here) and one trial: the
        # config's own values, so the model stays comparable with the local runner's.
        "tuning.backend=local",
        "tuning.max_trials=1",
        "tuning.parallel_trials=1",
        "tuning.trial_train_steps=20",
        env="kubeflow",
    )
    package = compile_package(config, str(kfp_dir / "pipeline.yaml"))
    keys = {"accesskey": object_store.ACCESS_KEY, "secretkey": object_store.SECRET_KEY}

    def harness(package_path=package, **kwargs) -> LocalKfpHarness:
        return LocalKfpHarness(
            package_path,
            runner=ImageRunner(podman.PIPELINE_IMAGE),
            store=s3_server,
            work_dir=kfp_dir / "pods",
            pipeline_root=config.pipeline_root,  # what `shop-pipeline submit` sends
            secrets={CREDENTIALS_SECRET: keys},
            **kwargs,
        )

    return config, package, harness


@pytest.fixture(scope="module")
def harness_run(kfp_env, first_run):
    config, _, harness = kfp_env
    # span is a run parameter: 2 = the span first_run trained on (0 would mean the newest).
    return harness().run({"span": 2, "train_args": '{"num_steps": 60}'})


def _read(uri: str) -> str:
    with tf.io.gfile.GFile(uri) as handle:
        return handle.read()


def test_every_task_runs_in_the_image_to_a_model_pushed_on_s3(kfp_env, harness_run, s3_server):
    config, _, _ = kfp_env
    run = harness_run
    assert set(run.tasks) == {
        "CsvExampleGen", "BaselineExampleGen", "StatisticsGen", "BaselineStatisticsGen",
        "ImportSchemaGen", "ExampleValidator", "DriftValidator", "ValidationGate", "Transform",
        "KatibTuner", "Trainer", "Evaluator", "Pusher",
    }  # fmt: skip
    # Every artifact is where KFP puts it: <root>/<pipeline>/<run id>/<task>/<uuid>/<key>.
    for name, task in run.tasks.items():
        for key in task.outputs:
            uri = run.artifact_uri(name, key)
            assert uri.startswith(f"{config.pipeline_root}/{config.name}/{run.run_id}/{name}/")
        assert "executor-logs-0" in task.outputs  # the launcher uploaded each step's logs
        assert s3_server.keys(run.artifact_uri(name, "executor-logs-0")), name
    [version] = numbered_versions(config.serving_dir)
    assert tf.io.gfile.exists(join(config.serving_dir, version, "saved_model.pb"))
    # The span reached the Pusher through the statistics' metadata, so it guards the order here
    # too (a later run on an older span is not pushed: docs/data-versions.md).
    record = json.loads(_read(join(config.serving_dir, version, PUSH_RECORD)))
    assert record == {"span": 2, "rolled_back_from": None}, record
    # The tuner ran its one trial and the Trainer trained with what its HyperParameters said.
    report = read_report(run.artifact_uri("KatibTuner", "tuning_report"))
    assert [t.status for t in report.trials] == ["Succeeded"] and report.trials[0].start_point
    trained = json.loads(_read(join(run.artifact_uri("Trainer", "model_run"), METRICS_FILE)))
    assert {k: trained["hparams"][k] for k in report.best.values} == report.best.values
    # What each executor reported came back through the ML Metadata round trip.
    examples = run.artifact("CsvExampleGen", "examples").metadata
    assert examples["custom:span"] == 2 and examples["display_name"] == "examples"
    assert examples["input_fingerprint"].startswith("split:single_split")
    assert run.artifact("BaselineExampleGen", "examples").metadata["custom:span"] == 1
    assert run.artifact("Evaluator", "blessing").metadata["blessed"] == 1
    # The next task got it as the launcher hands it: an id, an empty type, wrapped values.
    given = run.tasks["StatisticsGen"].executor_input["inputs"]["artifacts"]["examples"]
    [examples_input] = given["artifacts"]
    assert examples_input["type"] == {"instanceSchema": ""}
    assert examples_input["name"] == str(run.tasks["CsvExampleGen"].outputs["examples"])


def test_the_pushed_model_matches_the_local_runners_model(
    kfp_env, harness_run, first_run, workspace
):
    config, _, _ = kfp_env
    metrics, _ = tfma_metrics(harness_run.artifact_uri("Evaluator", "evaluation"))
    print(
        f"eval AUC: compiled spec in the image on s3:// {metrics['auc']:.4f}, "
        f"local runner {first_run.metrics['auc']:.4f}; the harness run took "
        f"{harness_run.seconds:.0f} s for {len(harness_run.tasks)} tasks"
    )
    assert abs(metrics["auc"] - first_run.metrics["auc"]) < 0.01
    pushed = join(config.serving_dir, numbered_versions(config.serving_dir)[-1])
    labels, scores = score_raw_span(pushed, workspace / "data" / "span-2")
    assert np.all((scores > 0) & (scores < 1))
    local_labels, local_scores = score_raw_span(
        first_run.pushed_destination, workspace / "data" / "span-2"
    )
    assert roc_auc_score(labels, scores) == pytest.approx(
        roc_auc_score(local_labels, local_scores), abs=0.01
    )


def _with_stock_entrypoint(package: str, tasks: set[str], out: str) -> str:
    spec, platform = kfp_spec.read_package(package)
    for name in tasks:
        kfp_spec.executor_of(spec, name)["container"]["command"] = [
            "python", "-m", TFX_EXECUTOR_MODULE
        ]  # fmt: skip
    kfp_spec.write_package(out, spec, platform)
    return out


def test_tfxs_stock_entrypoint_fails_on_the_executor_logs_output(kfp_env, workspace):
    """KFP >= 2.5 adds `executor-logs` (system.Artifact) to every task: TFX tries to import it."""
    _, package, harness = kfp_env
    stock = _with_stock_entrypoint(
        package, {"CsvExampleGen"}, str(workspace / "kfp" / "stock-logs.yaml")
    )
    with pytest.raises(HarnessError, match="task CsvExampleGen exited") as failed:
        harness(stock).run({"span": 2}, only={"CsvExampleGen"})
    assert "Could not import system.Artifact" in str(failed.value)


def test_tfxs_stock_entrypoint_fails_on_an_input_the_driver_built(kfp_env, workspace):
    """Inputs arrive with an empty instanceSchema; even without executor-logs TFX cannot read
    them (our entrypoint ran the upstream task)."""
    _, package, harness = kfp_env
    stock = _with_stock_entrypoint(
        package, {"StatisticsGen"}, str(workspace / "kfp" / "stock-inputs.yaml")
    )
    with pytest.raises(HarnessError, match="task StatisticsGen exited") as failed:
        harness(stock, publish_logs=False).run({"span": 2}, only={"CsvExampleGen", "StatisticsGen"})
    assert "'NoneType' object has no attribute 'get'" in str(failed.value)


def test_a_plain_path_root_is_refused_as_the_backend_refuses_it(kfp_env):
    _, _, harness = kfp_env
    with pytest.raises(HarnessError, match="unrecognized pipeline root format"):
        LocalKfpHarness(
            kfp_env[1], runner=None, store=None, work_dir="/tmp", pipeline_root="/mnt/shop/x"
        )
    # No root on the run and no kfp-launcher ConfigMap: KFP's MinIO default, not the spec's.
    default = LocalKfpHarness(kfp_env[1], runner=None, store=None, work_dir="/tmp")
    assert default.pipeline_root == "minio://mlpipeline/v2/artifacts"
    configured = LocalKfpHarness(
        kfp_env[1], runner=None, store=None, work_dir="/tmp",
        launcher_config={"defaultPipelineRoot": "s3://team/root"},
    )  # fmt: skip
    assert configured.pipeline_root == "s3://team/root"


def test_the_serving_image_serves_the_pushed_s3_model_over_v1_and_v2(
    kfp_env, harness_run, s3_server, workspace, images
):
    config, _, _ = kfp_env
    port = object_store.free_port()
    name = podman.start(
        podman.SERVING_IMAGE,
        [
            f"--model-dir={config.serving_dir}",
            f"--model-name={config.serving.model_name}",
            f"--http-port={port}",
        ],
        env={**config.object_store.environment(), **s3_server.credentials_env()},
        user=None,
        workdir=None,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, name)
        contract = Contract.load(
            join(config.serving_dir, numbered_versions(config.serving_dir)[-1])
        )
        instances = span_instances(str(workspace / "data" / "span-2"), contract, 20)
        v1 = httpx.post(
            f"{url}/v1/models/{config.serving.model_name}:predict",
            json={"instances": instances},
            timeout=30,
        )
        assert v1.status_code == 200, v1.text
        v1_scores = np.asarray(v1.json()["predictions"], dtype=float).reshape(-1)
        v2 = httpx.post(
            f"{url}/v2/models/{config.serving.model_name}/infer",
            json={"id": "e2e-1", **v2_body(instances, contract)},
            timeout=30,
        )
        assert v2.status_code == 200, v2.text
        [output] = v2.json()["outputs"]
        v2_scores = np.asarray(output["data"], dtype=float)
        assert np.all(np.isfinite(v1_scores)) and len(v1_scores) == len(instances)
        np.testing.assert_allclose(v1_scores, v2_scores, rtol=1e-6)
        # The same model in this process (tensorflow-io here too) gives the same scores.
        pushed = join(config.serving_dir, numbered_versions(config.serving_dir)[-1])
        _, local = score_raw_span(pushed, workspace / "data" / "span-2")
        np.testing.assert_allclose(v1_scores, local[: len(instances)], rtol=1e-5, atol=1e-6)
    finally:
        podman.stop(name, log_path=workspace / "kfp" / "serving-container.log")


def _wait_ready(url: str, name: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not podman.running(name):
            pytest.fail(f"the serving container exited:\n{podman.logs(name)[-4000:]}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"the serving container was not ready in {timeout_s:.0f}s:\n{podman.logs(name)}")
