"""One typed configuration for the pipeline, its runners, the compiler and the notebooks.

Each section is defined once, in the module of its topic; compose.py puts them together into
PipelineConfig (with the checks across sections) and loads it from settings/conf/<env>.yaml with
`section.key=value` overrides. A section crosses a process boundary as its own JSON
(`model_dump(mode="json")`) and is validated again on the other side (`model_validate`).

    section.py      Section, the base of every section (unknown keys fail, values are frozen)
    data.py         DataConfig, BeamConfig, ObjectStoreConfig
    validation.py   ValidationConfig
    training.py     TransformConfig, TrainingConfig, DistributionConfig, EvaluationConfig
    tuning.py       SearchParameter, TuningConfig (and the rules of a Katib search space)
    pusher.py       PusherConfig
    serving.py      ServingConfig and the model server's flags
    monitoring.py   MonitoringConfig
    stream.py       StreamConfig (the broker, the online store, the consumer)
    recommend.py    RecommendConfig and the recommendation transformer's flags
    kubeflow.py     StepResources, KubeflowConfig
    compose.py      PipelineConfig, load_config, parse_override, ConfigError, CONF_DIR
    kserve.py       what KServe needs, derived from a PipelineConfig (imported as settings.kserve)

`from settings import X` works for every public name below.
"""

from settings.compose import (
    CONF_DIR,
    ConfigError,
    PipelineConfig,
    add_config_args,
    load_config,
    parse_override,
)
from settings.data import BeamConfig, DataConfig, ObjectStoreConfig
from settings.kubeflow import DEFAULT_RESOURCES, KubeflowConfig, StepResources
from settings.monitoring import MonitoringConfig
from settings.pusher import PusherConfig
from settings.recommend import TRANSFORMER_FLAG_FIELDS, RecommendConfig, transformer_flags
from settings.section import Section
from settings.serving import SERVER_FLAG_FIELDS, ServingConfig, number_text, server_flags
from settings.stream import StreamConfig
from settings.training import (
    DistributionConfig,
    EvaluationConfig,
    TrainingConfig,
    TransformConfig,
)
from settings.tuning import ALGORITHM_SETTINGS, NOT_TUNABLE, SearchParameter, TuningConfig
from settings.validation import ValidationConfig

__all__ = [
    "ALGORITHM_SETTINGS",
    "CONF_DIR",
    "DEFAULT_RESOURCES",
    "NOT_TUNABLE",
    "SERVER_FLAG_FIELDS",
    "TRANSFORMER_FLAG_FIELDS",
    "BeamConfig",
    "ConfigError",
    "DataConfig",
    "DistributionConfig",
    "EvaluationConfig",
    "KubeflowConfig",
    "MonitoringConfig",
    "ObjectStoreConfig",
    "PipelineConfig",
    "PusherConfig",
    "RecommendConfig",
    "SearchParameter",
    "Section",
    "StreamConfig",
    "ServingConfig",
    "StepResources",
    "TrainingConfig",
    "TransformConfig",
    "TuningConfig",
    "add_config_args",
    "ValidationConfig",
    "load_config",
    "number_text",
    "parse_override",
    "server_flags",
    "transformer_flags",
]
