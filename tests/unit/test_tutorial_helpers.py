"""The public helpers the tutorial notebooks call instead of reaching into internals: the compiled
spec's steps (pipelines.kfp_spec.compiled_steps), the standalone trials' arguments
(components.tuning.experiment.standalone_trial_args) and raw-row scoring
(components.signatures.score_raw_rows)."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from repo_paths import REPO_ROOT

from components.signatures import OUTPUT_KEY, RAW_SIGNATURE, score_raw_rows
from components.tuning.experiment import standalone_experiment, standalone_trial_args, to_manifest
from components.tuning.search_space import trial_flags
from pipelines import kfp_spec
from settings import load_config

GOLDEN = REPO_ROOT / "tests" / "golden" / "kfp_pipeline.yaml"


def test_compiled_steps_come_upstream_first_with_what_each_runs():
    spec, _ = kfp_spec.read_package(GOLDEN)
    steps = kfp_spec.compiled_steps(spec)
    names = [s.name for s in steps]
    assert sorted(names) == sorted(spec["root"]["dag"]["tasks"])
    for i, step in enumerate(steps):
        assert set(step.after) <= set(names[:i]), step
        container = kfp_spec.executor_of(spec, step.name)["container"]
        assert step.image == container["image"] and list(step.command) == container["command"]
        assert container["args"][container["args"].index("--executor_class_path") + 1] == (
            step.executor_class
        )
    by_name = {s.name: s for s in steps}
    assert by_name["Pusher"].executor_class == "components.pusher.IdempotentPusherExecutor"
    assert "ValidationGate" in by_name["Transform"].after
    assert by_name["Trainer"].resources and not by_name["ValidationGate"].resources
    # span readers are never cached (kubeflow_runner), everything else is
    assert {s.name for s in steps if not s.cached} == set(kfp_spec.EXTERNAL_INPUT_TASKS)


def test_compiled_steps_name_a_cycle():
    def task(after):
        return {"componentRef": {"name": "c"}, "dependentTasks": after}

    spec = {
        "root": {"dag": {"tasks": {"a": task(["b"]), "b": task(["a"]), "c": task([])}}},
        "components": {"c": {"executorLabel": "e"}},
        "deploymentSpec": {"executors": {"e": {"container": {"image": "i", "args": []}}}},
    }
    with pytest.raises(ValueError, match=r"cycle among \['a', 'b'\]"):
        kfp_spec.compiled_steps(spec)


def test_standalone_trial_args_are_the_experiments_fixed_arguments():
    config = load_config("local", ["tuning.trial_train_steps=40", "output_root=/data/out"])
    args = standalone_trial_args(config)
    assert f"--latest-under={config.pipeline_root}" in args and "--train_steps=40" in args
    assert not {a.split("=")[0] for a in args} & {f"--{n}" for n in config.tuning.search_space}
    manifest = to_manifest(standalone_experiment(config))
    template = manifest["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    assert template["containers"][0]["args"] == args + trial_flags(config.tuning)


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory):
    """A SavedModel with a serving_raw signature of two inputs, like the Trainer's export."""
    specs = {
        "price": tf.TensorSpec([None], tf.float32, name="price"),
        "on_sale": tf.TensorSpec([None], tf.int64, name="on_sale"),
        "device": tf.TensorSpec([None], tf.string, name="device"),
    }

    class Model(tf.Module):
        @tf.function(input_signature=[specs])
        def raw(self, features):
            length = tf.cast(tf.strings.length(features["device"]), tf.float32)
            score = features["price"] / 100 + tf.cast(features["on_sale"], tf.float32) + length
            return {OUTPUT_KEY: score}

    path = str(tmp_path_factory.mktemp("raw_model"))
    model = Model()
    tf.saved_model.save(model, path, signatures={RAW_SIGNATURE: model.raw})
    return path


def test_score_raw_rows_casts_each_column_and_ignores_the_rest(raw_model):
    rows = pd.DataFrame(
        {"price": [10, 250], "on_sale": [0, 1], "device": ["mobile", "tv"], "purchased": [0, 1]}
    )
    expected = np.array([0.1 + 6, 2.5 + 1 + 2], dtype=np.float32)
    np.testing.assert_allclose(score_raw_rows(raw_model, rows), expected, rtol=1e-6)
    loaded = tf.saved_model.load(raw_model)
    as_mapping = {name: list(rows[name]) for name in rows}
    np.testing.assert_allclose(score_raw_rows(loaded, as_mapping), expected, rtol=1e-6)


def test_score_raw_rows_names_every_missing_column(raw_model):
    with pytest.raises(KeyError, match=r"\['device', 'on_sale'\]"):
        score_raw_rows(raw_model, {"price": [1.0]})
