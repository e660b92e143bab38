"""The compiled KFP v2 package: components, edges, image, run parameters, resources, and a golden
copy (regenerate with `make golden`, then review the diff like code)."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp_harness import HarnessError, LocalKfpHarness
from repo_paths import REPO_ROOT
from tfx import v1 as tfx

from pipelines import kfp_spec
from pipelines.kubeflow_runner import EXECUTOR_COMMAND, compile_package, compile_spec
from pipelines.pipeline import create_pipeline
from pipelines.platforms import KubeflowPlatform, LocalPlatform
from pipelines.spans import SpanSelection
from settings import ConfigError, load_config

GOLDEN = REPO_ROOT / "tests" / "golden" / "kfp_pipeline.yaml"
GPU = [
    "kubeflow.resources.Trainer.accelerator_type=nvidia.com/gpu",
    "kubeflow.resources.Trainer.accelerator_count=2",
]


@pytest.fixture(scope="module")
def config():
    return load_config("kubeflow", GPU)


@pytest.fixture(scope="module")
def compiled(config):
    return compile_spec(config)


def tasks_of(spec):
    return spec["root"]["dag"]["tasks"]


def test_every_component_is_a_task_with_the_expected_edges(compiled):
    spec, _ = compiled
    tasks = tasks_of(spec)
    assert set(tasks) == {
        "CsvExampleGen",
        "BaselineExampleGen",
        "StatisticsGen",
        "BaselineStatisticsGen",
        "ImportSchemaGen",
        "ExampleValidator",
        "DriftValidator",
        "ValidationGate",
        "Transform",
        "KatibTuner",
        "Trainer",
        "Evaluator",
        "Pusher",
    }
    edges = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert edges["ValidationGate"] == {"ExampleValidator", "DriftValidator"}
    assert "ValidationGate" in edges["Transform"]  # nothing trains on data the gate stopped
    assert edges["KatibTuner"] == {"Transform", "ImportSchemaGen"}
    assert edges["Trainer"] == {"Transform", "ImportSchemaGen", "KatibTuner"}
    tuned = tasks["Trainer"]["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"]
    assert tuned == {"producerTask": "KatibTuner", "outputArtifactKey": "best_hyperparameters"}
    assert edges["Evaluator"] == {"CsvExampleGen", "Trainer", "ImportSchemaGen"}
    assert edges["Pusher"] == {"Trainer", "Evaluator", "StatisticsGen"}  # + the skew baseline
    blessing = tasks["Pusher"]["inputs"]["artifacts"]["model_blessing"]["taskOutputArtifact"]
    assert blessing == {"producerTask": "Evaluator", "outputArtifactKey": "blessing"}


def test_every_executor_runs_the_configured_image_by_package_path(compiled, config):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(tasks_of(spec))
    for label, executor in executors.items():
        container = executor["container"]
        assert container["image"] == config.kubeflow.image, label
        assert container["command"] == EXECUTOR_COMMAND, label
    class_paths = {
        name: kfp_spec.executor_of(spec, name)["container"]["args"][1] for name in tasks_of(spec)
    }
    assert class_paths["CsvExampleGen"] == (  # data.csv_reader: arrow
        "components.span_example_gen.SpanArrowCsvExampleGenExecutor"
    )
    assert class_paths["Pusher"] == "components.pusher.IdempotentPusherExecutor"
    text = json.dumps(spec)
    assert "_wheels" not in text and "module_file" not in text  # user code by import path
    assert "components.trainer.run_fn" in text and "package://contract/schema.pbtxt" in text


def test_run_parameters_have_the_configs_defaults(compiled, config):
    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["data_root"] == {
        "parameterType": "STRING",
        "defaultValue": config.data.root,
    }
    assert parameters["span"] == {"parameterType": "NUMBER_INTEGER", "defaultValue": 0}
    assert json.loads(parameters["train_args"]["defaultValue"]) == {
        "num_steps": config.training.train_steps
    }
    eval_config = json.loads(parameters["eval_config"]["defaultValue"])
    bounds = json.dumps(eval_config["metrics_specs"][0]["per_slice_thresholds"])
    assert str(config.evaluation.min_auc) in bounds
    tasks = tasks_of(spec)
    assert tasks["Trainer"]["inputs"]["parameters"]["train_args"] == {
        "componentInputParameter": "train_args"
    }
    for name in ("CsvExampleGen", "BaselineExampleGen"):
        assert tasks[name]["inputs"]["parameters"]["span"] == {"componentInputParameter": "span"}
        assert tasks[name]["inputs"]["parameters"]["input_base"] == {
            "componentInputParameter": "data_root"
        }
    offsets = {
        name: tasks[name]["inputs"]["parameters"]["span_offset"]["runtimeValue"]["constant"]
        for name in ("CsvExampleGen", "BaselineExampleGen")
    }
    assert offsets == {"CsvExampleGen": 0, "BaselineExampleGen": 1}


def test_resources_and_accelerators_come_from_config(compiled):
    spec, _ = compiled
    trainer = kfp_spec.executor_of(spec, "Trainer")["container"]["resources"]
    assert trainer["accelerator"] == {"type": "nvidia.com/gpu", "count": "2"}
    transform = kfp_spec.executor_of(spec, "Transform")["container"]["resources"]
    assert transform["cpuLimit"] == 4 and transform["memoryLimit"] == 16
    assert "resources" not in kfp_spec.executor_of(spec, "ValidationGate")["container"]
    # With the cluster backend the tuner's pod only waits; Katib's trial pods get the Trainer's.
    assert "resources" not in kfp_spec.executor_of(spec, "KatibTuner")["container"]


def test_the_tuners_settings_carry_the_trial_pods_and_the_search(compiled, config):
    spec, _ = compiled
    settings = json.loads(
        tasks_of(spec)["KatibTuner"]["inputs"]["parameters"]["settings"]["runtimeValue"]["constant"]
    )
    assert settings["tuning"]["backend"] == "cluster"
    pods = settings["pods"]  # the kubeflow and object_store sections, as the step reads them
    assert pods["kubeflow"] == config.kubeflow.model_dump(mode="json")
    assert pods["object_store"] == config.object_store.model_dump(mode="json")
    assert pods["kubeflow"]["resources"]["Trainer"]["accelerator_count"] == 2  # GPU override
    assert list(settings["tuning"]["search_space"]) == list(config.tuning.search_space)


def test_span_readers_never_hit_the_kfp_cache_and_the_rest_may(compiled):
    spec, _ = compiled
    for name, task in tasks_of(spec).items():
        expected = name not in kfp_spec.EXTERNAL_INPUT_TASKS
        assert task.get("cachingOptions", {}).get("enableCache", False) is expected, name


def test_object_store_root_settings_and_keys_reach_every_step(compiled, config):
    spec, platform = compiled
    assert spec["defaultPipelineRoot"] == config.pipeline_root
    assert config.pipeline_root.startswith("s3://mlpipeline/")
    store = config.object_store
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    for label, settings in executors.items():
        env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][label][
            "container"]["env"]}  # fmt: skip
        assert env["S3_ENDPOINT"] == store.endpoint and env["S3_USE_HTTPS"] == "0", label
        assert env["AWS_REGION"] == store.region, label
        assert not any("SECRET" in name or "ACCESS_KEY" in name for name in env), label
        # the keys come from KFP's own Secret, never from the spec
        assert settings["secretAsEnv"] == [
            {
                "secretName": "mlpipeline-minio-artifact",
                "keyToEnv": [
                    {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
                    {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"},
                ],
            }
        ]
        assert settings["pvcMount"] == [
            {"constant": config.kubeflow.pvc_name, "mountPath": config.kubeflow.pvc_mount_path}
        ]
        beam_args = spec["deploymentSpec"]["executors"][label]["container"]["args"]
        if "--runner=DirectRunner" in beam_args:  # Beam steps reach the same store
            assert f"--s3_endpoint_url={store.endpoint}" in beam_args, label
            assert "--s3_disable_ssl" in beam_args, label


@pytest.mark.parametrize(
    "root", ["/mnt/shop/outputs", "minio://mlpipeline/shop", "file:///tmp/x", "s3://"]
)
def test_a_root_kfp_or_tfx_would_refuse_fails_at_compile_naming_the_setting(root):
    with pytest.raises(kfp_spec.PipelineRootError, match="from output_root"):
        compile_spec(load_config("kubeflow", [f"output_root={root}"]))


# What carries a version rather than the pipeline: the compiler's (`sdkVersion: tfx-1.16.0`; the
# header comment, which parsing drops) and image tags (`...:0.1.0`, wherever an `image` key is, also
# inside the JSON of a parameter). kubeflow/pipelines' own compiler tests strip the SDK version
# the same way and compare the parsed documents.
VERSION_KEYS = {"sdkVersion"}
IMAGE_TAG = re.compile(r"(?<=[^/:]):[^/:@]+$")


def comparable(value: Any, key: str = "") -> Any:
    """A package document without its version fields, JSON strings parsed (a path into them)."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items() if k not in VERSION_KEYS}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, str):
        if key == "image":
            return IMAGE_TAG.sub(":<tag>", value)
        if value.startswith(("{", "[")):
            try:
                return comparable(json.loads(value))
            except ValueError:
                return value
    return value


def differences(golden: Any, compiled: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, golden value, compiled value) wherever the two differ; a missing side is
    shown as <absent>."""
    if isinstance(golden, dict) and isinstance(compiled, dict):
        for key in sorted(set(golden) | set(compiled), key=str):
            yield from differences(
                golden.get(key, "<absent>"), compiled.get(key, "<absent>"), f"{path}.{key}"
            )
    elif isinstance(golden, list) and isinstance(compiled, list) and len(golden) == len(compiled):
        for i, (g, c) in enumerate(zip(golden, compiled, strict=True)):
            yield from differences(g, c, f"{path}[{i}]")
    elif golden != compiled:
        yield path or ".", golden, compiled


def package_documents(path: Path) -> list[Any]:
    """The package's YAML documents (the PipelineSpec, then the platform spec), comparable."""
    return [comparable(doc) for doc in yaml.safe_load_all(path.read_text())]


def test_comparable_drops_versions_and_keeps_everything_else():
    doc = {
        "sdkVersion": "tfx-1.16.0",
        "schemaVersion": "2.1.0",
        "container": {"image": "registry:5000/org/shop-ranking:0.1.0", "args": ["--x"]},
        "settings": '{"pod": {"image": "shop-ranking:0.2.0", "cpu": 2}}',
    }
    assert comparable(doc) == {
        "schemaVersion": "2.1.0",  # the spec format: a real change
        "container": {"image": "registry:5000/org/shop-ranking:<tag>", "args": ["--x"]},
        "settings": {"pod": {"image": "shop-ranking:<tag>", "cpu": 2}},
    }
    other = comparable({**doc, "settings": '{"pod": {"image": "shop-ranking:9", "cpu": 4}}'})
    assert list(differences(comparable(doc), other)) == [(".settings.pod.cpu", 2, 4)]


def test_compiled_package_matches_the_golden_copy(tmp_path):
    path = compile_package(load_config("kubeflow"), str(tmp_path / "pipeline.yaml"))
    golden, compiled = package_documents(GOLDEN), package_documents(Path(path))
    found = list(differences(golden, compiled))
    if found:
        shown = "\n".join(
            f"  {where}: golden {json.dumps(g, default=str)[:200]} != compiled "
            f"{json.dumps(c, default=str)[:200]}"
            for where, g, c in found[:15]
        )
        pytest.fail(
            f"the compiled package differs from {GOLDEN.relative_to(REPO_ROOT)} at {len(found)} "
            f"place(s) (versions ignored; [0] is the PipelineSpec, [1] the platform spec), first "
            f"{found[0][0]}; if intended, run `make golden` and review its diff:\n{shown}"
        )


def test_kubeflow_mode_refuses_the_blessed_model_baseline():
    with pytest.raises(ConfigError, match="evaluation.compare_with_blessed_baseline"):
        config = load_config("kubeflow", ["evaluation.compare_with_blessed_baseline=true"])
        create_pipeline(config, KubeflowPlatform(config))


def test_what_tfx_emits_for_the_local_dag_is_refused_by_checker_and_harness(tmp_path):
    """The local DAG (CsvExampleGen's driver, the latest-blessed-model resolver) compiles with
    TFX's runner, but open-source KFP would not run it: both the compiler's check and the harness
    name each problem."""
    config = load_config("local", ["evaluation.compare_with_blessed_baseline=true"])
    pipeline = create_pipeline(config, LocalPlatform(config, SpanSelection(current=2, previous=1)))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="x")
    )
    spec = runner.run(pipeline, write_out=False)["pipelineSpec"]
    problems = "\n".join(kfp_spec.unsupported_features(spec))
    assert "CsvExampleGen: container lifecycle hook" in problems
    assert "LatestBlessedModelResolver-model-resolver: resolver node" in problems
    spec["defaultPipelineRoot"] = str(tmp_path)
    kfp_spec.write_package(tmp_path / "local.yaml", spec, None)
    with pytest.raises(HarnessError, match="refusing to run"):
        LocalKfpHarness(tmp_path / "local.yaml", runner=None, store=None, work_dir=tmp_path)


def test_multi_worker_on_kubeflow_hands_training_to_a_tfjob():
    config = load_config(
        "kubeflow", ["distribution.strategy=multi_worker", "distribution.workers=3", *GPU]
    )
    spec, _ = compile_spec(config)
    trainer = kfp_spec.executor_of(spec, "Trainer")["container"]
    assert "resources" not in trainer  # the pod only waits; the workers get the GPUs
    custom = json.loads(
        tasks_of(spec)["Trainer"]["inputs"]["parameters"]["custom_config"]["runtimeValue"][
            "constant"
        ]
    )
    job = custom["tfjob"]["kubeflow"]
    assert custom["distribution"]["workers"] == 3 and job["image"] == config.kubeflow.image
    assert job["resources"]["Trainer"]["accelerator_count"] == 2
    assert custom["distribution"]["strategy"] == "multi_worker"
