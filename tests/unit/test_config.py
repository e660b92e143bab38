import json

import pytest

from settings import (
    ConfigError,
    DistributionConfig,
    PipelineConfig,
    Section,
    TrainingConfig,
    TransformConfig,
    load_config,
)


def test_local_config_loads_and_overrides_are_typed():
    config = load_config(
        "local",
        ["training.train_steps=12", "training.hidden_units=[8, 4]", "beam.direct_num_workers=2"],
    )
    assert isinstance(config, PipelineConfig)
    assert config.training.train_steps == 12 and config.training.hidden_units == [8, 4]
    assert "--direct_num_workers=2" in config.beam.pipeline_args()


@pytest.mark.parametrize(
    "override, named",
    [
        ("training.train_steps=abc", "training.train_steps"),
        ("training.learning_rate=-1", "training.learning_rate"),
        ("training.typo=1", "training.typo"),
        ("beam.direct_running_mode=fast", "beam.direct_running_mode"),
        ("name=Bad_Name", "name"),
    ],
)
def test_bad_values_name_the_field(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config("local", [override])


def test_a_server_limit_below_the_autoscaling_target_is_refused():
    with pytest.raises(ConfigError, match="max_concurrency 4 is below scale_target 8"):
        load_config("local", ["serving.max_concurrency=4"])
    assert load_config("local", ["serving.max_concurrency=8"]).serving.max_concurrency == 8


def test_missing_file_and_malformed_override_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-env")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("local", ["training.train_steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_paths_derive_from_output_root():
    config = load_config("local", ["output_root=/tmp/x"])
    assert config.metadata_path == "/tmp/x/metadata.sqlite"
    assert config.serving_dir == "/tmp/x/serving/shop-ranking"


def test_the_train_workers_defaults_are_the_training_sections():
    """`python -m components.train_worker --hparams {}` (or no --hparams) trains with
    TrainingConfig()'s values: the worker has no defaults of its own."""
    from components.worker_flags import parse_args, worker_sections

    paths = ["--transform-output=t", "--train-files=a", "--eval-files=b"]
    paths += ["--serving-model-dir=m", "--model-run-dir=r"]
    for extra in (["--hparams", "{}"], []):
        training, transform, distribution = worker_sections(parse_args(paths + extra))
        assert training == TrainingConfig()
        assert (transform, distribution) == (TransformConfig(), DistributionConfig())
    with pytest.raises(ValueError, match="learning_rate"):
        worker_sections(parse_args([*paths, "--hparams", '{"learning_rate": -1}']))


@pytest.mark.parametrize(
    ("env", "overrides"),
    [
        ("local", []),
        ("kubeflow", []),
        (
            "kubeflow",
            [
                "tuning.search_space.l2=null",  # a default parameter taken out of the search
                "tuning.search_space.dropout.max=0.4",
                "kubeflow.resources.Trainer.cpu=null",
                "kubeflow.resources.Pusher.cpu=1",
                "distribution.strategy=multi_worker",
                "training.hidden_units=[16]",
            ],
        ),
    ],
)
def test_a_config_validated_again_from_its_json_is_the_same_config(env, overrides):
    """What crosses a process boundary (custom_config, a step's parameter, a worker's flags) is
    a section's model_dump(mode="json"); validated again, it must be the same section."""
    config = load_config(env, overrides)
    again = PipelineConfig.model_validate(json.loads(json.dumps(config.model_dump(mode="json"))))
    assert again == config
    for name in PipelineConfig.model_fields:
        section = getattr(config, name)
        if isinstance(section, Section):
            assert type(section).model_validate(section.model_dump(mode="json")) == section, name
    if "tuning.search_space.l2=null" in overrides:
        assert "l2" not in again.tuning.search_space


def test_each_section_is_defined_once_in_its_module():
    import settings

    sections = {n: v for n, v in vars(settings).items() if isinstance(v, type)}
    sections = {n: v for n, v in sections.items() if issubclass(v, Section) and v is not Section}
    assert {v.__module__ for v in sections.values()} <= {
        f"settings.{m}"
        for m in (
            "data", "validation", "training", "tuning", "pusher", "serving", "monitoring",
            "kubeflow", "stream", "recommend", "compose",
        )
    }  # fmt: skip
    assert set(settings.__all__) <= set(vars(settings))
    for name, field in PipelineConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            assert sections[field.annotation.__name__] is field.annotation, name


def test_step_resource_overrides_keep_the_other_defaults():
    config = load_config(
        "kubeflow",
        [
            "kubeflow.resources.Trainer.accelerator_type=nvidia.com/gpu",
            "kubeflow.resources.Trainer.accelerator_count=1",
        ],
    )
    trainer = config.kubeflow.resources["Trainer"]
    assert (trainer.cpu, trainer.accelerator_count) == (4, 1)
    assert config.kubeflow.resources["Transform"].memory_gb == 16


def test_accelerator_type_and_count_come_together():
    with pytest.raises(ConfigError, match="kubeflow.resources.Trainer"):
        load_config("kubeflow", ["kubeflow.resources.Trainer.accelerator_count=1"])


def test_object_store_roots_keep_their_scheme():
    config = load_config("kubeflow", ["output_root=gs://bucket/shop"])
    assert config.pipeline_root == "gs://bucket/shop/pipeline_root/shop-ranking"
