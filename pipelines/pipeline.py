"""create_pipeline(config): the one definition of the DAG that every runner uses."""

from __future__ import annotations

import json
import os
from typing import Literal

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import range_config_pb2

from components import arrow_csv
from components.packaged_schema import PackagedImportSchemaGen
from components.pusher import ROLLBACK_TO_SPAN_KEY, TRAINING_SPAN_KEY, IdempotentPusher
from components.span_example_gen import SpanCsvExampleGen
from components.tuning.component import KatibTuner, TunerSettings
from components.validation_components import DriftValidator, ValidationGate
from contract import LABEL
from pipelines.kserve_push import pusher_custom_config
from pipelines.spans import SpanSelection, select_spans
from settings import ConfigError, PipelineConfig

# Referenced by import path of the installed package, so a Kubeflow pod needs no module file upload.
PREPROCESSING_FN = "components.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"
# The curated schema as shipped in the installed package (contract/), in every runner.
SCHEMA_FILE = "package://contract/schema.pbtxt"


Target = Literal["local", "kubeflow"]


class RunParameters:
    """Kubeflow run-time parameters (the KFP UI's run form), defaults from the config.

    Proto-valued ones are JSON, as TFX's RuntimeParameter requires; the local runner uses the
    config values directly. Beam args and resources are container settings: change them with
    `compile --set ...`.
    """

    def __init__(self, config: PipelineConfig):
        training = config.training
        self.data_root = tfx.dsl.experimental.RuntimeParameter(
            name="data_root", ptype=str, default=config.data.root
        )
        self.span = tfx.dsl.experimental.RuntimeParameter(
            name="span", ptype=int, default=config.data.span or 0
        )
        self.train_args = tfx.dsl.experimental.RuntimeParameter(
            name="train_args", ptype=str, default=json.dumps({"num_steps": training.train_steps})
        )
        self.eval_config = tfx.dsl.experimental.RuntimeParameter(
            name="eval_config",
            ptype=str,
            default=json_format.MessageToJson(
                eval_config(config), sort_keys=True, indent=None, preserving_proto_field_name=True
            ),
        )


def _split_configs(config: PipelineConfig) -> tuple[tfx.proto.Input, tfx.proto.Output]:
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
                ]
            )
        ),
    )


def _example_gen(config: PipelineConfig, span: int, component_id: str) -> FileBasedExampleGen:
    """Local: a file-based ExampleGen with the CSV reader of data.csv_reader; its driver resolves
    the span and skips unchanged inputs."""
    input_config, output_config = _split_configs(config)
    arguments = dict(
        input_base=_absolute(config.data.root),
        input_config=input_config,
        output_config=output_config,
        range_config=range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span)
        ),
    )
    if config.data.csv_reader == "tfx":
        return tfx.components.CsvExampleGen(**arguments).with_id(component_id)
    return FileBasedExampleGen(
        **arguments, custom_executor_spec=executor_spec.BeamExecutorSpec(arrow_csv.Executor)
    ).with_id(component_id)


def _kubeflow_example_gen(
    config: PipelineConfig, params: RunParameters, span_offset: int, component_id: str
) -> SpanCsvExampleGen:
    """Kubeflow: the span is a run parameter resolved inside the step (components/span_example_gen)."""
    input_config, output_config = _split_configs(config)
    return SpanCsvExampleGen(
        input_base=params.data_root,
        input_config=input_config,
        output_config=output_config,
        span=params.span,
        span_offset=span_offset,
        csv_reader=config.data.csv_reader,
    ).with_id(component_id)


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Blessing rules: overall AUC clears min_auc and drops at most max_auc_drop vs the blessed
    baseline; each slice (device) clears min_slice_auc when set. Thresholds are per slice in TFMA:
    a bare MetricConfig threshold would hold every small slice to the overall bar."""
    evaluation = config.evaluation
    overall = tfma.SlicingSpec()
    slices = [tfma.SlicingSpec(feature_keys=[name]) for name in evaluation.slice_features]
    auc_thresholds = [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[overall],
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": evaluation.min_auc}
                ),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                    absolute={"value": -evaluation.max_auc_drop},
                ),
            ),
        )
    ]
    if evaluation.min_slice_auc is not None and slices:
        auc_thresholds.append(
            tfma.PerSliceMetricThreshold(
                slicing_specs=slices,
                threshold=tfma.MetricThreshold(
                    value_threshold=tfma.GenericValueThreshold(
                        lower_bound={"value": evaluation.min_slice_auc}
                    )
                ),
            )
        )
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=LABEL)],
        slicing_specs=[overall, *slices],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name=name)
                    for name in (
                        "ExampleCount",
                        "AUC",
                        "BinaryCrossentropy",
                        "Calibration",
                        "MeanLabel",
                        "MeanPrediction",
                        "CalibrationPlot",
                    )
                ],
                per_slice_thresholds={
                    "auc": tfma.PerSliceMetricThresholds(thresholds=auc_thresholds)
                },
            )
        ],
    )


def create_pipeline(
    config: PipelineConfig,
    *,
    target: Target = "local",
    spans: SpanSelection | None = None,
    metadata_connection_config=None,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline for `config`.

    target="local": spans are read from data.root now (the newest and the one before).
    target="kubeflow": nothing TFX emits that open-source KFP v2 cannot run (no resolver nodes, no
    driver hooks); the span, data root, training steps and eval config are run parameters.
    """
    kubeflow = target == "kubeflow"
    if kubeflow and config.evaluation.compare_with_blessed_baseline:
        raise ConfigError(
            "evaluation.compare_with_blessed_baseline: open-source KFP v2 does not run resolver "
            "nodes, so Kubeflow mode has no latest-blessed-model baseline; set it to false "
            "(settings/conf/kubeflow.yaml does) and the absolute thresholds decide the blessing"
        )
    params = RunParameters(config) if kubeflow else None
    if kubeflow:
        example_gen = _kubeflow_example_gen(config, params, 0, "CsvExampleGen")
        previous_span = 1 if config.validation.compare_with_previous_span else None
    else:
        spans = spans or select_spans(config.data)
        example_gen = _example_gen(config, spans.current, "CsvExampleGen")
        previous_span = spans.previous if config.validation.compare_with_previous_span else None
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], stats_options=_stats_options(config)
    )
    schema_gen = PackagedImportSchemaGen(schema_file=SCHEMA_FILE).with_id("ImportSchemaGen")
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    components = [example_gen, statistics_gen, schema_gen, example_validator]

    drift_anomalies = None
    if previous_span is not None:
        baseline_gen = (
            _kubeflow_example_gen(config, params, 1, "BaselineExampleGen")
            if kubeflow
            else _example_gen(config, previous_span, "BaselineExampleGen")
        )
        baseline_statistics = tfx.components.StatisticsGen(
            examples=baseline_gen.outputs["examples"], stats_options=_stats_options(config)
        ).with_id("BaselineStatisticsGen")
        drift_validator = DriftValidator(
            statistics=statistics_gen.outputs["statistics"],
            baseline_statistics=baseline_statistics.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
        )
        drift_anomalies = drift_validator.outputs["anomalies"]
        components += [baseline_gen, baseline_statistics, drift_validator]

    gate_inputs = {"schema_anomalies": example_validator.outputs["anomalies"]}
    if drift_anomalies is not None:
        gate_inputs["drift_anomalies"] = drift_anomalies
    gate = ValidationGate(**gate_inputs, block_on_drift=config.validation.block_on_drift)

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=config.transform.model_dump(),
        disable_statistics=not config.validation.transform_statistics,
    )
    transform.add_upstream_node(gate)  # nothing downstream of the gate runs on bad data

    training = config.training
    tuner = None
    if config.tuning.enabled:
        tuner = KatibTuner(
            transformed_examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            settings=_tuner_settings(config).to_json(),
        )
    trainer_config = {
        # Steps travel in train_args/eval_args (a Kubeflow run parameter), not here.
        "hyperparameters": training.model_dump(exclude={"train_steps", "eval_steps"}),
        "transform": config.transform.model_dump(),
        "distribution": config.distribution.model_dump(exclude={"workers", "job_timeout_s"}),
    }
    if config.distribution.strategy == "multi_worker":
        if kubeflow:
            trainer_config["tfjob"] = _tfjob_settings(config)
        else:  # worker processes on this machine (components.local_workers)
            trainer_config["local_workers"] = config.distribution.workers
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=(
            params.train_args if kubeflow else tfx.proto.TrainArgs(num_steps=training.train_steps)
        ),
        eval_args=tfx.proto.EvalArgs(num_steps=training.eval_steps),
        custom_config=trainer_config,
        # run_fn prefers the tuner's values over custom_config["hyperparameters"].
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
    )

    evaluator_inputs = {}
    # A rollback goes back on the newer model by decision: the absolute thresholds still bless it,
    # the comparison with that newer (latest blessed) model does not apply.
    rollback = config.pusher.rollback_to_span
    if config.evaluation.compare_with_blessed_baseline and not kubeflow and rollback is None:
        baseline_model = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("LatestBlessedModelResolver")
        evaluator_inputs["baseline_model"] = baseline_model.outputs["model"]
        components.append(baseline_model)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=params.eval_config if kubeflow else eval_config(config),
        **evaluator_inputs,
    )
    pusher = IdempotentPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=_absolute(config.serving_dir)
            )
        ),
        # its KServe InferenceServices; the span trained on (locally known now) and a rollback
        custom_config=_pusher_config(config, None if kubeflow else spans.current),
        statistics=statistics_gen.outputs["statistics"],  # the monitor's skew baseline
    ).with_id("Pusher")
    components += [gate, transform, *([tuner] if tuner else []), trainer, evaluator, pusher]
    if kubeflow:
        for component in components:
            resources = config.kubeflow.resources.get(component.id)
            if component is trainer and "tfjob" in trainer_config:
                continue  # the pod only waits for the TFJob; its workers get these resources
            if component is tuner and config.tuning.backend == "cluster":
                continue  # the pod only waits for Katib; the trial pods get the Trainer's
            if resources is not None:
                component.with_platform_config(_resource_spec(resources))

    return tfx.dsl.Pipeline(
        pipeline_name=config.name,
        pipeline_root=_absolute(config.pipeline_root),
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args(),
    )


def _pusher_config(config: PipelineConfig, span: int | None) -> dict | None:
    """IdempotentPusher's custom_config: the KServe manifests' settings, the span the model is
    trained on (local runs; on Kubeflow the Pusher reads it from the statistics' metadata) and
    the span of an explicit rollback. Only what applies, so the compiled package stays as is."""
    custom = pusher_custom_config(config) or {}
    if span is not None:
        custom[TRAINING_SPAN_KEY] = span
    if config.pusher.rollback_to_span is not None:
        custom[ROLLBACK_TO_SPAN_KEY] = config.pusher.rollback_to_span
    return custom or None


def _stats_options(config: PipelineConfig) -> tfdv.StatsOptions | None:
    """TFDV options of both StatisticsGens (None: TFDV's defaults, exact top values)."""
    if not config.validation.sketch_statistics:
        return None
    return tfdv.StatsOptions(use_sketch_based_topk_uniques=True)


def _tfjob_settings(config: PipelineConfig) -> dict:
    """components.tfjob.TFJobSettings for the Trainer's TFJob: each worker gets the Trainer's
    resources, the image and the PVC every step uses."""
    return {
        **config.trainer_pod(),
        "workers": config.distribution.workers,
        "timeout_s": config.distribution.job_timeout_s,
    }


def _tuner_settings(config: PipelineConfig) -> TunerSettings:
    """KatibTuner's parameter: the search, the training values it starts from and, for the
    cluster backend, the trial pods (the Trainer's resources, the image and the PVC)."""
    return TunerSettings(
        pipeline_name=config.name,
        tuning=config.tuning.model_dump(),
        training=config.training.model_dump(),
        transform=config.transform.model_dump(),
        pod=config.trainer_pod() if config.tuning.backend == "cluster" else {},
    )


def _resource_spec(resources):
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


def _absolute(path: str) -> str:
    """Local paths become absolute (TFX records URIs); object-store URIs stay as they are."""
    return path if "://" in path else os.path.abspath(path)
