"""The sections composed into one PipelineConfig, loaded from settings/conf/<env>.yaml (or a
YAML file's path) with `section.key=value` overrides (from the CLI or a notebook).

The checks across sections live here (PipelineConfig's validators), and the paths every run
derives from output_root. Unknown keys and wrongly typed values fail with the field's dotted name.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from settings.data import BeamConfig, DataConfig, ObjectStoreConfig
from settings.kubeflow import KubeflowConfig
from settings.monitoring import MonitoringConfig
from settings.pusher import PusherConfig
from settings.recommend import RecommendConfig
from settings.section import Section
from settings.serving import ServingConfig
from settings.stream import StreamConfig
from settings.training import (
    DistributionConfig,
    EvaluationConfig,
    TrainingConfig,
    TransformConfig,
)
from settings.tuning import TuningConfig
from settings.validation import ValidationConfig

# The named configs ship inside the package (package data), so `--config kubeflow` works from an
# installed wheel or the image as well as from a checkout.
CONF_DIR = Path(__file__).resolve().parent / "conf"


class PipelineConfig(Section):
    """Everything a run needs; the same object feeds create_pipeline() and every runner."""

    name: str = "shop-ranking"
    output_root: str = "outputs"
    enable_cache: bool = True
    data: DataConfig = DataConfig()
    beam: BeamConfig = BeamConfig()
    object_store: ObjectStoreConfig = ObjectStoreConfig()
    validation: ValidationConfig = ValidationConfig()
    transform: TransformConfig = TransformConfig()
    training: TrainingConfig = TrainingConfig()
    tuning: TuningConfig = TuningConfig()
    distribution: DistributionConfig = DistributionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    pusher: PusherConfig = PusherConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    stream: StreamConfig = StreamConfig()
    recommend: RecommendConfig = RecommendConfig()

    @model_validator(mode="after")
    def _name_is_a_pipeline_name(self) -> PipelineConfig:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters, digits and '-'")
        return self

    @model_validator(mode="after")
    def _rollback_trains_on_its_span(self) -> PipelineConfig:
        rollback = self.pusher.rollback_to_span
        if rollback is not None and self.data.span != rollback:
            raise ValueError(
                f"pusher.rollback_to_span={rollback} pushes a model trained on span {rollback}: "
                f"set data.span={rollback} too (data.span is {self.data.span}); "
                f"`shop-pipeline rollback --to-span {rollback}` sets both"
            )
        return self

    # Paths derived from output_root, so one setting moves a whole run. Joined as strings: a
    # pathlib.Path would turn gs://bucket into gs:/bucket.
    def _under_output_root(self, *parts: str) -> str:
        return "/".join([self.output_root.rstrip("/"), *parts])

    def uses_s3(self) -> bool:
        return any(p.startswith("s3://") for p in (self.output_root, self.data.root))

    def beam_pipeline_args(self) -> list[str]:
        """Beam's arguments for every Beam stage: the runner's, plus the S3 options when a path
        is on s3://."""
        return self.beam.pipeline_args() + (self.object_store.beam_args() if self.uses_s3() else [])

    @property
    def pipeline_root(self) -> str:
        return self._under_output_root("pipeline_root", self.name)

    @property
    def metadata_path(self) -> str:
        return self._under_output_root("metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return self._under_output_root("serving", self.name)

    @property
    def request_log_path(self) -> str:
        """The model server's prediction log (JSON lines), read by the monitor."""
        return "/".join([self.request_log_dir, f"{self.serving.model_name}.jsonl"])

    @property
    def served_log_path(self) -> str:
        """The recommendation transformer's log of served lists (JSON lines): one line per
        answered request, the list, its positions and the model version."""
        return "/".join([self.served_log_dir, f"{self.serving.model_name}.jsonl"])

    @property
    def served_log_dir(self) -> str:
        """Every served-list log (one file per transformer process or pod), a folder of its own:
        the monitor reads request_log_dir's files as prediction logs."""
        return "/".join([self._monitoring_root(), "served_lists"])

    @property
    def request_log_dir(self) -> str:
        """Every prediction log of the model (one file per server process or pod)."""
        return "/".join([self._monitoring_root(), "serving_logs"])

    @property
    def monitoring_dir(self) -> str:
        """The monitor's history: one report per window, the trigger's state, metrics."""
        return "/".join([self._monitoring_root(), "monitoring", self.serving.model_name])

    def _monitoring_root(self) -> str:
        return (self.monitoring.root or self.output_root).rstrip("/")

    @property
    def outcomes_dir(self) -> str:
        return self.monitoring.outcomes_dir or "/".join([self.data.root.rstrip("/"), "outcomes"])

    @property
    def kserve_manifest_dir(self) -> str:
        """Where Pusher writes the InferenceService for the version it pushed."""
        return self._under_output_root("kserve")

    @property
    def feature_registry_path(self) -> str:
        """Feast's registry of the feature definitions (features/definitions.py)."""
        return self._under_output_root("features", "registry.db")

    @property
    def summary_path(self) -> str:
        return self._under_output_root("run_summary.json")

    def pod_object_store(self) -> ObjectStoreConfig | None:
        """The object store a pod outside the steps (a TFJob worker, a Katib trial) reaches as
        every step does: object_store when a root is on s3://; None when none is (a PVC or a
        gs:// root needs no S3 settings or keys)."""
        return self.object_store if self.uses_s3() else None


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the field."""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`training.train_steps=100` -> ("training.train_steps", 100); values are YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def load_config(
    env_or_path: str | Path = "local", overrides: list[str] | dict[str, Any] | None = None
) -> PipelineConfig:
    """Loads settings/conf/<env>.yaml (or a path) and applies overrides; errors name the file and field."""
    path = Path(env_or_path)
    if not path.suffix:
        path = CONF_DIR / f"{env_or_path}.yaml"
    if not path.exists():
        raise ConfigError(
            f"config file {path} not found (available: {sorted(p.stem for p in CONF_DIR.glob('*.yaml'))})"
        )
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    items = (
        overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    )
    for key, value in items:
        _set_dotted(tree, key, value)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            if e["loc"]
            # a check across sections (PipelineConfig's validators): its message names the fields
            else e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise ConfigError(f"{path}: {problems}") from err


def add_config_args(parser: argparse.ArgumentParser, default: str = "local") -> None:
    """`--config` and repeatable `--set KEY=VALUE`, the same on every command line."""
    parser.add_argument(
        "--config",
        default=default,
        help=f"settings/conf/<name>.yaml or a path (default: {default})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.train_steps=500",
    )
