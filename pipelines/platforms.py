"""What differs between running the DAG here and on Kubeflow, in one object per platform.

create_pipeline() asks its platform for the pieces that differ and reads straight through:

- the span: LocalPlatform selects it from data.root now (spans.select_spans); KubeflowPlatform
  makes it a run parameter that its ExampleGen resolves inside the step (components/span_example_gen);
- run parameters: on Kubeflow the data root, span, training steps and eval config are run-time
  parameters (the KFP UI's run form); locally they are the config's values;
- what open-source KFP v2 cannot run: no resolver node (no latest-blessed-model baseline), no
  ExampleGen driver;
- multi-worker training: worker processes on this machine, or a TFJob;
- per-step resources (kubeflow.resources), which only a cluster has.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal, Protocol

from google.protobuf import json_format
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import range_config_pb2

import contract
from components import arrow_csv
from components.span_example_gen import SpanCsvExampleGen
from components.tfjob import pod_sections_json
from pipelines.spans import SpanSelection, select_spans
from settings import ConfigError, PipelineConfig, StepResources

Target = Literal["local", "kubeflow"]


class Platform(Protocol):
    """The questions create_pipeline() asks; LocalPlatform and KubeflowPlatform answer them."""

    name: Target

    def check(self) -> None:
        """Raises ConfigError for settings this platform cannot run."""

    def example_gen(self, which: Literal["current", "previous"], component_id: str) -> Any:
        """The ExampleGen of the span being trained on, or of the one before (the drift baseline)."""

    @property
    def has_previous_span(self) -> bool: ...

    @property
    def trained_span(self) -> int | None:
        """The span the model trains on, when known at build time (the Pusher records it)."""

    def train_args(self) -> Any: ...

    def eval_config(self, config: Any) -> Any: ...

    def resolves_blessed_baseline(self) -> bool:
        """Whether a latest-blessed-model Resolver can run here."""

    def multi_worker_settings(self) -> dict[str, Any]:
        """The Trainer's custom_config entries for distribution.strategy=multi_worker."""

    def finish(self, components: list[base_component.BaseComponent], skip: set[str]) -> None:
        """Last touches on the built components (resources on a cluster)."""


def split_configs(config: PipelineConfig) -> tuple[tfx.proto.Input, tfx.proto.Output]:
    data = config.data
    return (
        tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name="single_split", pattern=data.file_pattern)]
        ),
        tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(name="train", hash_buckets=data.train_buckets),
                    tfx.proto.SplitConfig.Split(name="eval", hash_buckets=data.eval_buckets),
                ],
                # A request's impressions land in one split: NDCG@k is computed per request, and
                # a page split in two would leak its context from training into evaluation.
                partition_feature_name=contract.REQUEST_ID,
            )
        ),
    )


def absolute(path: str) -> str:
    """Local paths become absolute (TFX records URIs); object-store URIs stay as they are."""
    return path if "://" in path else os.path.abspath(path)


class LocalPlatform:
    """This machine: LocalDagRunner, spans chosen now, the config's values, worker processes."""

    name: Target = "local"

    def __init__(self, config: PipelineConfig, spans: SpanSelection | None = None):
        self.config = config
        self.spans = spans or select_spans(config.data)

    def check(self) -> None:
        pass

    @property
    def has_previous_span(self) -> bool:
        return self.config.validation.compare_with_previous_span and self.spans.previous is not None

    @property
    def trained_span(self) -> int | None:
        return self.spans.current

    def example_gen(self, which: Literal["current", "previous"], component_id: str) -> Any:
        """A file-based ExampleGen with the CSV reader of data.csv_reader; its driver resolves the
        span and skips unchanged inputs."""
        config = self.config
        span = self.spans.current if which == "current" else self.spans.previous
        input_config, output_config = split_configs(config)
        arguments = dict(
            input_base=absolute(config.data.root),
            input_config=input_config,
            output_config=output_config,
            range_config=range_config_pb2.RangeConfig(
                static_range=range_config_pb2.StaticRange(
                    start_span_number=span, end_span_number=span
                )
            ),
        )
        if config.data.csv_reader == "tfx":
            return tfx.components.CsvExampleGen(**arguments).with_id(component_id)
        return FileBasedExampleGen(
            **arguments, custom_executor_spec=executor_spec.BeamExecutorSpec(arrow_csv.Executor)
        ).with_id(component_id)

    def train_args(self) -> Any:
        return tfx.proto.TrainArgs(num_steps=self.config.training.train_steps)

    def eval_config(self, config: Any) -> Any:
        return config

    def resolves_blessed_baseline(self) -> bool:
        return True

    def multi_worker_settings(self) -> dict[str, Any]:
        # distribution.workers processes on this machine (components.local_workers)
        return {"local_workers": True}

    def finish(self, components: list[base_component.BaseComponent], skip: set[str]) -> None:
        pass


class KubeflowPlatform:
    """Open-source KFP v2: run parameters, the span resolved in the step, no resolver nodes, a
    TFJob for multi-worker training, and kubeflow.resources on each step's container."""

    name: Target = "kubeflow"

    def __init__(self, config: PipelineConfig):
        self.config = config
        training = config.training
        self.data_root = tfx.dsl.experimental.RuntimeParameter(
            name="data_root", ptype=str, default=config.data.root
        )
        self.span = tfx.dsl.experimental.RuntimeParameter(
            name="span", ptype=int, default=config.data.span or 0
        )
        self.train_steps = tfx.dsl.experimental.RuntimeParameter(
            name="train_args", ptype=str, default=json.dumps({"num_steps": training.train_steps})
        )
        self._eval_config: Any = None

    def check(self) -> None:
        if self.config.evaluation.compare_with_blessed_baseline:
            raise ConfigError(
                "evaluation.compare_with_blessed_baseline: open-source KFP v2 does not run "
                "resolver nodes, so Kubeflow mode has no latest-blessed-model baseline; set it to "
                "false (settings/conf/kubeflow.yaml does) and the absolute thresholds decide the "
                "blessing"
            )

    @property
    def has_previous_span(self) -> bool:
        return self.config.validation.compare_with_previous_span

    @property
    def trained_span(self) -> int | None:
        return None  # resolved in the step; the Pusher reads it from the statistics' metadata

    def example_gen(self, which: Literal["current", "previous"], component_id: str) -> Any:
        """The span is a run parameter resolved inside the step (components/span_example_gen);
        the baseline is the span before it (span_offset 1)."""
        input_config, output_config = split_configs(self.config)
        return SpanCsvExampleGen(
            input_base=self.data_root,
            input_config=input_config,
            output_config=output_config,
            span=self.span,
            span_offset=0 if which == "current" else 1,
            csv_reader=self.config.data.csv_reader,
        ).with_id(component_id)

    def train_args(self) -> Any:
        return self.train_steps

    def eval_config(self, config: Any) -> Any:
        """A run parameter (JSON, as TFX's RuntimeParameter requires for protos)."""
        if self._eval_config is None:
            self._eval_config = tfx.dsl.experimental.RuntimeParameter(
                name="eval_config",
                ptype=str,
                default=json_format.MessageToJson(
                    config, sort_keys=True, indent=None, preserving_proto_field_name=True
                ),
            )
        return self._eval_config

    def resolves_blessed_baseline(self) -> bool:
        return False  # "resolver not implemented yet" in KFP's Argo compiler

    def multi_worker_settings(self) -> dict[str, Any]:
        """The Trainer's TFJob: its workers' pods from the kubeflow and object_store sections
        (components.tfjob.pod_sections_json: the image, the PVC every step uses, the Trainer's
        resources); their number and the wait from the distribution section run_fn already has."""
        return {"tfjob": pod_sections_json(self.config)}

    def finish(self, components: list[base_component.BaseComponent], skip: set[str]) -> None:
        """kubeflow.resources on each step's container, except the steps in `skip` (a pod that
        only waits for a TFJob or a Katib experiment: the workers get the resources)."""
        for component in components:
            resources = self.config.kubeflow.resources.get(component.id)
            if resources is not None and component.id not in skip:
                component.with_platform_config(resource_spec(resources))


def platform_for(config: PipelineConfig, target: Target = "local") -> Platform:
    return KubeflowPlatform(config) if target == "kubeflow" else LocalPlatform(config)


def resource_spec(resources: StepResources):
    """StepResources -> the KFP ResourceSpec the v2 compiler copies into the step's container."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec()
    if resources.cpu:
        spec.cpu_limit = spec.cpu_request = resources.cpu
    if resources.memory_gb:
        spec.memory_limit = spec.memory_request = resources.memory_gb
    if resources.accelerator_type:
        spec.accelerator.type = resources.accelerator_type
        spec.accelerator.count = resources.accelerator_count
    return spec
