"""The tuning stage without TensorFlow training: one declared search space and every place its
names travel (Katib Experiment, trial template flags, trial CLI, Trainer), the generated manifest,
Katib's suggestion libraries, metric parsing, medianstop, and the local backend with a stand-in
trial (tests/unit/fake_trial.py) that fails, hangs or reports slowly on request."""

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubeflow.katib.api_client import ApiClient as KatibApiClient
from test_manifests import differences, round_trip_differences

from components.trainer import training_from_fn_args
from components.tuning import search_space as S
from components.tuning.component import read_tuner_settings, trainer_hyperparameters, tuner_settings
from components.tuning.experiment import (
    manifest_text,
    standalone_experiment,
    to_manifest,
)
from components.tuning.local_backend import run_local_search
from components.tuning.metrics import median_stop_rule, parse_metrics, should_stop
from components.tuning.report import TuningError
from components.tuning.suggestions import grid_values, make_suggester
from components.tuning.trial import parse_args
from settings import NOT_TUNABLE, ConfigError, TrainingConfig, load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "manifests" / "katib" / "experiment.yaml"
ALGORITHMS = ["random", "tpe", "multivariate-tpe", "grid", "bayesianoptimization"]


def _tuning(*overrides, env="local"):
    return load_config(env, list(overrides)).tuning


class _Body:
    def __init__(self, obj):
        self.data = json.dumps(obj)


# --- one declaration, one set of names ------------------------------------------------------


def test_every_tuned_name_matches_across_config_experiment_flags_trial_and_trainer():
    config = load_config("kubeflow")
    declared = list(config.tuning.search_space)
    spec = to_manifest(standalone_experiment(config))["spec"]
    template = spec["trialTemplate"]
    container = template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    flags = dict(re.fullmatch(r"--([\w-]+)=(.*)", a).groups() for a in container["args"])

    assert [p["name"] for p in spec["parameters"]] == declared
    assert [p["name"] for p in template["trialParameters"]] == declared
    assert [p["reference"] for p in template["trialParameters"]] == declared
    assert {n: flags[n] for n in declared} == {n: f"${{trialParameters.{n}}}" for n in declared}
    # The trial CLI takes every flag of the template; the Trainer's TrainingConfig has every name.
    parsed = parse_args([re.sub(r"\$\{trialParameters\.\w+\}", "1", a) for a in container["args"]])
    assert all(getattr(parsed, n) == "1" for n in declared)
    training_fields = set(TrainingConfig.model_fields)
    assert set(declared) <= training_fields
    # Untuned fields ride along at their configured values, so trial and Trainer train alike.
    untuned = training_fields - NOT_TUNABLE - set(declared) | {"seed"}
    assert untuned <= set(flags)
    assert flags["batch_size"] == str(config.training.batch_size)


def test_the_trainer_trains_with_the_best_trials_typed_values():
    config = load_config("local")
    report = SimpleNamespace(
        parameters=[],
        best=SimpleNamespace(
            values=S.typed_assignments({"learning_rate": "0.00949", "embedding_dim": "16"})
        ),
    )
    hyperparameters = trainer_hyperparameters(report, config.training)
    fn_args = SimpleNamespace(
        custom_config={
            "training": config.training.model_dump(
                mode="json", exclude={"train_steps", "eval_steps"}
            )
        },
        hyperparameters=json.loads(json.dumps(hyperparameters)),  # as the Trainer reads the file
        train_steps=7,
        eval_steps=2,
    )
    training = training_from_fn_args(fn_args)
    assert isinstance(training, TrainingConfig)
    assert training == TrainingConfig.model_validate(
        {
            **config.training.model_dump(),
            "learning_rate": 0.00949,
            "embedding_dim": 16,
            "train_steps": 7,
            "eval_steps": 2,
        }
    )
    # Without a tuner: the config's section, with the Trainer's steps.
    fn_args.hyperparameters = None
    assert training_from_fn_args(fn_args) == config.training.model_copy(
        update={"train_steps": 7, "eval_steps": 2}
    )


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["tuning.backend=local", "tuning.search_space.l2=null"],
        ["output_root=/mnt/shop/outputs", "data.root=/mnt/shop/data"],  # no object store
    ],
)
def test_the_tuner_step_reads_back_the_configs_own_sections(overrides):
    config = load_config("kubeflow", overrides)
    name, tuning, training, transform, pods = read_tuner_settings(tuner_settings(config))
    assert (name, tuning, training, transform) == (
        config.name,
        config.tuning,
        config.training,
        config.transform,
    )
    if config.tuning.backend == "cluster":
        assert pods == (config.kubeflow, config.pod_object_store())
    else:
        assert pods is None


def test_katib_string_values_are_typed_as_the_config_declares():
    typed = S.typed_assignments(
        [{"name": "embedding_dim", "value": "8.0"}, {"name": "hidden_units", "value": "64,32"}]
        + [{"name": "dropout", "value": "0.25"}]
    )
    assert typed == {"embedding_dim": 8, "hidden_units": [64, 32], "dropout": 0.25}
    with pytest.raises(ValueError, match="bogus"):
        S.typed_assignments({"bogus": "1"})
    with pytest.raises(ValueError, match="dropout"):
        S.typed_assignments({"dropout": "1.5"})  # outside TrainingConfig's bounds


def test_log_scale_becomes_a_geometric_grid_that_holds_the_defaults():
    tuning = _tuning()
    specs = {s.name: s for s in S.parameter_specs(tuning)}
    grid = [float(v) for v in specs["learning_rate"].feasible_space.list]
    assert grid[0] == pytest.approx(3e-4) and grid[-1] == pytest.approx(0.03)
    ratios = [b / a for a, b in zip(grid, grid[1:], strict=False)]
    assert max(ratios) / min(ratios) < 1.01
    assert S.start_assignment(tuning, TrainingConfig()) == {
        "learning_rate": "0.003",
        "dropout": "0.3",
        "l2": "0.001",
        "embedding_dim": "8",
    }
    outside = _tuning("tuning.search_space.dropout.max=0.2")
    assert S.start_assignment(outside, TrainingConfig()) is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (
            [
                "tuning.search_space.seed.type=int",
                "tuning.search_space.seed.min=1",
                "tuning.search_space.seed.max=2",
            ],
            "seed",
        ),
        (["tuning.search_space.dropout.min=0.6"], "min < max"),
        (["tuning.algorithm=grid"], "search_space.dropout: grid needs a step"),
        (
            ["tuning.algorithm=bayesianoptimization", "tuning.search_space.dropout.min=0"],
            "search_space.dropout",
        ),
        (["tuning.algorithm_settings.random_state=3"], "algorithm_settings"),
        (["tuning.parallel_trials=9"], "parallel_trials"),
        (["tuning.search_space.embedding_dim.values=[a]"], "discrete values are numbers"),
        (
            [
                "tuning.algorithm=grid",
                "tuning.search_space.dropout.step=0.45",
                "tuning.search_space.l2=null",
                "tuning.search_space.learning_rate=null",
                "tuning.max_trials=7",
            ],
            "grid combinations",
        ),
    ],
)
def test_a_bad_search_space_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_config("local", overrides)


def test_overrides_merge_into_the_default_space():
    space = _tuning(
        "tuning.search_space.dropout.max=0.4", "tuning.search_space.l2=null"
    ).search_space
    assert list(space) == ["learning_rate", "dropout", "embedding_dim"]
    assert space["dropout"].max == 0.4 and space["dropout"].min == 0.05


# --- the generated manifest -----------------------------------------------------------------


def test_the_katib_manifest_is_what_the_config_generates():
    expected = manifest_text(load_config("kubeflow"), "settings/conf/kubeflow.yaml")
    assert MANIFEST.read_text() == expected, (
        "manifests/katib/experiment.yaml is stale: run `make katib-manifest`"
    )


def test_the_katib_manifest_survives_the_sdk_and_kubernetes_models():
    experiment = yaml.safe_load(MANIFEST.read_text())
    katib = KatibApiClient()
    parsed = katib.deserialize(_Body(experiment), "V1beta1Experiment")
    assert differences(experiment, katib.sanitize_for_serialization(parsed)) == []
    job = experiment["spec"]["trialTemplate"]["trialSpec"]
    assert round_trip_differences(job, "V1Job") == []
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Katib joins command and args into one `sh -c` line: no argument may need quoting.
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert all(re.fullmatch(r"[\w./:=,+@%${}-]*", a) for a in container["args"])
    assert experiment["spec"]["objective"]["metricStrategies"] == [
        {"name": "auc", "value": "latest"}
    ]


def test_the_katib_rbac_allows_every_call_the_backend_makes():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests" / "katib")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    for obj in objects:
        assert round_trip_differences(obj) == [], obj["kind"]
    role = next(o for o in objects if o["kind"] == "Role")
    verbs = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    # KatibClient: create/get/delete experiments, list trials (components/tuning/cluster_backend).
    assert {("experiments", v) for v in ("create", "get", "delete")} | {("trials", "list")} <= verbs
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == "pipeline-runner"


# --- suggestion algorithms ------------------------------------------------------------------


def _objective(assignment):
    return (
        0.8
        - abs(float(assignment["learning_rate"]) - 0.003) * 10
        - abs(float(assignment["dropout"]) - 0.2) * 0.1
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_suggests_in_space_and_repeats_with_its_seed(algorithm):
    overrides = [f"tuning.algorithm={algorithm}"]
    if algorithm == "grid":
        overrides += ["tuning.search_space.dropout.step=0.15"]
    # Short random phases, so the model-based suggestions (TPE, GP) are exercised too.
    if algorithm == "multivariate-tpe":
        overrides += ["tuning.algorithm_settings.n_startup_trials=2"]
    if algorithm == "bayesianoptimization":
        overrides += ["tuning.algorithm_settings.n_initial_points=2"]
    tuning = _tuning(*overrides)
    specs = S.parameter_specs(tuning)

    def run(seed):
        suggester = make_suggester(algorithm, specs, tuning.algorithm_settings, seed, 2)
        seen = []
        for i in range(6):
            assignment = suggester.ask()
            seen.append(assignment)
            suggester.tell(assignment, None if i == 2 else _objective(assignment))  # one fails
        return seen

    first = run(7)
    assert first == run(7)
    for assignment in first:
        typed = S.typed_assignments(assignment)
        for spec in specs:
            value = assignment[spec.name]
            if spec.feasible_space.list:
                assert value in spec.feasible_space.list, (spec.name, value)
            else:
                assert (
                    float(spec.feasible_space.min) <= float(value) <= float(spec.feasible_space.max)
                )
        assert set(typed) == set(tuning.search_space)
    if algorithm == "grid":
        assert len({tuple(sorted(a.items())) for a in first}) == len(first)  # no repeats


def test_katibs_grid_is_ranges_with_steps_and_lists():
    tuning = _tuning(
        "tuning.algorithm=grid", "tuning.search_space.dropout.step=0.15",
        "tuning.search_space.cross_layers.type=int", "tuning.search_space.cross_layers.min=1",
        "tuning.search_space.cross_layers.max=3",
    )  # fmt: skip
    grid = grid_values(S.parameter_specs(tuning))
    assert grid["dropout"] == [0.05, 0.2, 0.35, 0.5]
    assert grid["cross_layers"] == [1, 2, 3]
    combinations = math.prod(len(values) for values in grid.values())
    assert combinations == 5 * 4 * 7 * 3 * 3
    # The config's own count (it refuses more trials than grid points, as Katib does) agrees.
    grid_args = [
        "tuning.algorithm=grid", "tuning.search_space.dropout.step=0.15",
        "tuning.search_space.cross_layers.type=int", "tuning.search_space.cross_layers.min=1",
        "tuning.search_space.cross_layers.max=3", "tuning.parallel_trials=1",
    ]  # fmt: skip
    load_config("local", [*grid_args, f"tuning.max_trials={combinations}"])
    with pytest.raises(ConfigError, match=f"all {combinations} grid combinations"):
        load_config("local", [*grid_args, f"tuning.max_trials={combinations + 1}"])


# --- metrics and medianstop -----------------------------------------------------------------


def test_metrics_are_parsed_with_katibs_default_filter():
    lines = [
        "epoch 1:",
        "auc=0.61 loss=0.3",
        "2026-11-29T10:00:00Z auc = 7.5e-1",
        "val_auc: 0.99 - auc: 0.98",  # Keras' progress format is not a report
        "loss=-1.5E-2",
        "steps=100",
    ]
    assert parse_metrics(lines, ["auc", "loss"]) == {"auc": [0.61, 0.75], "loss": [0.3, -0.015]}


def test_medianstop_compares_the_best_early_value_with_the_completed_trials_mean():
    completed = [[0.70, 0.72, 0.74], [0.60, 0.62, 0.80]]
    assert median_stop_rule(completed[:1], min_trials=2, start_step=2) is None
    rule = median_stop_rule(completed, min_trials=2, start_step=2)
    assert rule == pytest.approx((0.71 + 0.61) / 2)
    assert should_stop([0.50, 0.64], rule, start_step=2)
    assert not should_stop([0.50, 0.67], rule, start_step=2)
    assert not should_stop([0.50], rule, start_step=2)  # too early to judge


# --- the local backend, with a stand-in trial -----------------------------------------------


@pytest.fixture
def fake_trials(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "PYTHONPATH", f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    for name in (
        "FAKE_TRIAL_FAIL_ABOVE",
        "FAKE_TRIAL_HANG",
        "FAKE_TRIAL_REPORTS",
        "FAKE_TRIAL_PAUSE",
    ):
        monkeypatch.delenv(name, raising=False)

    def run(*overrides, **env):
        for name, value in env.items():
            monkeypatch.setenv(f"FAKE_TRIAL_{name.upper()}", str(value))
        config = load_config("local", ["tuning.seed=3", *overrides])
        log = []
        report = run_local_search(
            config.tuning, config.training, ["--transformed-examples=x", "--transform-graph=y"],
            tmp_path / "trials", log=log.append, poll_s=0.05, trial_module="fake_trial",
        )  # fmt: skip
        report.trials[0].log_dir = tmp_path / "trials"
        return report, log

    return run


def test_local_search_starts_from_the_config_and_records_a_failed_trial(fake_trials):
    report, log = fake_trials("tuning.max_trials=6", "tuning.max_failed_trials=6", fail_above=0.4)
    assert len(report.trials) == 6
    assert report.trials[0].start_point and report.trials[0].values["dropout"] == 0.3
    failed = [t for t in report.trials if t.status == "Failed"]
    assert failed and all(t.values["dropout"] > 0.4 for t in failed)
    assert "exit code 3" in failed[0].message and "dropout too high" in failed[0].message
    assert report.best.objective == max(
        t.objective for t in report.trials if t.status == "Succeeded"
    )
    assert report.best.objective >= report.trials[0].objective  # never worse than the config
    assert any("trial-6/6 started" in line for line in log)
    assert "auc=" in (Path(report.trials[0].log_dir) / "trial-1.log").read_text()


def test_too_many_failed_trials_stop_the_search_and_name_the_setting(fake_trials):
    with pytest.raises(TuningError, match=r"tuning.max_failed_trials=2.*dropout too high"):
        fake_trials(
            "tuning.max_trials=8",
            "tuning.max_failed_trials=2",
            "tuning.start_from_config=false",
            fail_above=0,
        )


def test_a_trial_past_its_timeout_is_stopped_and_recorded(fake_trials):
    report, _ = fake_trials(
        "tuning.max_trials=3", "tuning.parallel_trials=3", "tuning.trial_timeout_s=2", hang=1
    )
    statuses = {t.name: (t.status, t.message) for t in report.trials}
    assert statuses["trial-1"][0] == "Succeeded"  # the start trial (dropout 0.3) does not hang
    assert all(
        s == "Failed" and "trial_timeout_s=2" in m
        for n, (s, m) in statuses.items()
        if n != "trial-1"
    )
    assert report.best.name == "trial-1"


def test_medianstop_stops_a_trial_below_the_completed_trials(fake_trials):
    report, _ = fake_trials(
        "tuning.max_trials=8", "tuning.parallel_trials=1", "tuning.early_stopping=medianstop",
        "tuning.early_stopping_min_trials=2", "tuning.early_stopping_start_step=2",
        reports=5, pause=0.2,
    )  # fmt: skip
    stopped = [t for t in report.trials if t.status == "EarlyStopped"]
    assert stopped, [(t.name, t.status, t.objective) for t in report.trials]
    for trial in stopped:
        assert len(trial.reports) >= 2 and "medianstop" in trial.message


def test_reaching_the_goal_ends_the_search(fake_trials):
    report, _ = fake_trials("tuning.max_trials=8", "tuning.goal=0.79", "tuning.parallel_trials=1")
    assert report.trials[0].objective >= 0.79  # the config's values already reach it
    assert len(report.trials) == 1


def test_latest_under_finds_the_newest_transform_output_in_either_layout(tmp_path):
    from components.tuning.trial import latest_transform_outputs

    def make(graph: Path, examples: Path, mtime: int):
        (graph / "transform_fn").mkdir(parents=True)
        examples.mkdir(parents=True)
        os.utime(graph / "transform_fn", (mtime, mtime))

    local = tmp_path / "root" / "Transform"  # the local runner: <output>/<execution id>/
    make(local / "transform_graph" / "5", local / "transformed_examples" / "5", 1_000)
    make(local / "transform_graph" / "9", local / "transformed_examples" / "9", 2_000)
    assert latest_transform_outputs(str(tmp_path / "root")) == (
        str(local / "transformed_examples" / "9"),
        str(local / "transform_graph" / "9"),
    )
    kfp = tmp_path / "root" / "run-2" / "Transform"  # a KFP launcher: one folder per output
    make(kfp / "transform_graph", kfp / "transformed_examples", 3_000)
    assert latest_transform_outputs(str(tmp_path / "root"))[1] == str(kfp / "transform_graph")
    with pytest.raises(FileNotFoundError, match="no Transform outputs"):
        latest_transform_outputs(str(tmp_path / "empty"))
