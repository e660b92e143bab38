import pytest

from settings import ConfigError, PipelineConfig, load_config


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


def test_training_config_and_hparams_agree():
    """The trainer's HParams and the config's TrainingConfig declare the same names and defaults."""
    from components.training import HParams

    config = PipelineConfig().training.model_dump()
    hparams = HParams.from_mapping(config).to_dict()
    assert hparams == config


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
