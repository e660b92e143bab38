"""create_pipeline(config): the one definition of the DAG that every runner uses."""

from __future__ import annotations

import os

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.proto import range_config_pb2

from components.pusher import IdempotentPusher
from components.validation_components import DriftValidator, ValidationGate
from pipelines.config import SCHEMA_PATH, PipelineConfig
from pipelines.spans import SpanSelection, select_spans
from simulator.catalog import LABEL

# Referenced by import path of the installed package, so a Kubeflow pod needs no module file upload.
PREPROCESSING_FN = "components.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"


def _example_gen(
    config: PipelineConfig, span: int, component_id: str
) -> tfx.components.CsvExampleGen:
    data = config.data
    return tfx.components.CsvExampleGen(
        input_base=_absolute(data.root),
        input_config=tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name="single_split", pattern=data.file_pattern)]
        ),
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(name="train", hash_buckets=data.train_buckets),
                    tfx.proto.SplitConfig.Split(name="eval", hash_buckets=data.eval_buckets),
                ]
            )
        ),
        range_config=range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span)
        ),
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
    spans: SpanSelection | None = None,
    metadata_connection_config=None,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline for `config`; the spans default to the newest and the one before."""
    spans = spans or select_spans(config.data)
    example_gen = _example_gen(config, spans.current, "CsvExampleGen")
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=str(SCHEMA_PATH))
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    components = [example_gen, statistics_gen, schema_gen, example_validator]

    drift_anomalies = None
    if config.validation.compare_with_previous_span and spans.previous is not None:
        baseline_gen = _example_gen(config, spans.previous, "BaselineExampleGen")
        baseline_statistics = tfx.components.StatisticsGen(
            examples=baseline_gen.outputs["examples"]
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
    )
    transform.add_upstream_node(gate)  # nothing downstream of the gate runs on bad data

    training = config.training
    # Tuner slot: when a tuner step exists, pass hyperparameters=tuner.outputs["best_hyperparameters"]
    # here; run_fn prefers those values over custom_config["hyperparameters"].
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=training.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=training.eval_steps),
        custom_config={
            "hyperparameters": training.model_dump(),
            "transform": config.transform.model_dump(),
        },
    )

    evaluator_inputs = {}
    if config.evaluation.compare_with_blessed_baseline:
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
        eval_config=eval_config(config),
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
    ).with_id("Pusher")
    components += [gate, transform, trainer, evaluator, pusher]

    return tfx.dsl.Pipeline(
        pipeline_name=config.name,
        pipeline_root=_absolute(config.pipeline_root),
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam.pipeline_args(),
    )


def _absolute(path: str) -> str:
    """Local paths become absolute (TFX records URIs); object-store URIs stay as they are."""
    return path if "://" in path else os.path.abspath(path)
