"""create_pipeline(config): the one definition of the DAG that every runner uses."""

from __future__ import annotations

import json

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.packaged_schema import PackagedImportSchemaGen
from components.pusher import ROLLBACK_TO_SPAN_KEY, TRAINING_SPAN_KEY, IdempotentPusher
from components.tuning.component import KatibTuner, tuner_settings
from components.validation_components import DriftValidator, ValidationGate
from contract import LABEL, REQUEST_ID
from pipelines.kserve_push import pusher_custom_config
from pipelines.platforms import LocalPlatform, Platform, absolute
from settings import PipelineConfig

# Referenced by import path of the installed package, so a Kubeflow pod needs no module file upload.
PREPROCESSING_FN = "components.preprocessing.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"
# The curated schema as shipped in the installed package (contract/), in every runner.
SCHEMA_FILE = "package://contract/schema.pbtxt"


def _bar(lower: float, max_drop: float) -> tfma.MetricThreshold:
    """At least `lower`, and at most `max_drop` below the blessed baseline on the same rows."""
    return tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lower}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_drop}
        ),
    )


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Blessing rules, on both what the model scores and what the shop shows: overall AUC clears
    min_auc and drops at most max_auc_drop vs the blessed baseline; each slice (device) clears
    min_slice_auc when set; NDCG@k per request (query_key = request_id, gain = the label) clears
    min_ndcg and drops at most max_ndcg_drop. Thresholds are per slice in TFMA: a bare
    MetricConfig threshold would hold every small slice to the overall bar. NDCG has its own
    MetricsSpec because a query_key groups every metric of its spec by request."""
    evaluation = config.evaluation
    overall = tfma.SlicingSpec()
    slices = [tfma.SlicingSpec(feature_keys=[name]) for name in evaluation.slice_features]
    auc_thresholds = [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[overall], threshold=_bar(evaluation.min_auc, evaluation.max_auc_drop)
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
    # k goes in the spec's binarize.top_k_list, not the metric's config: TFMA keys thresholds by
    # the spec's sub keys, and a bare "ndcg" key is never computed ("Metric not found").
    ndcg = tfma.MetricConfig(
        class_name="NDCG",
        config=json.dumps({"gain_key": LABEL}),
        per_slice_thresholds=[
            tfma.PerSliceMetricThreshold(
                slicing_specs=[overall],
                threshold=_bar(evaluation.min_ndcg, evaluation.max_ndcg_drop),
            )
        ],
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
            ),
            tfma.MetricsSpec(
                query_key=REQUEST_ID,
                binarize=tfma.BinarizationOptions(top_k_list={"values": [evaluation.ndcg_k]}),
                metrics=[ndcg],
            ),
        ],
    )


def create_pipeline(
    config: PipelineConfig,
    platform: Platform | None = None,
    *,
    metadata_connection_config=None,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline for `config` on `platform` (default: LocalPlatform, spans read
    from data.root now). KubeflowPlatform gives nothing that open-source KFP v2 cannot run (no
    resolver nodes, no driver hooks), with the span, data root, training steps and eval config as
    run parameters (pipelines/platforms.py)."""
    platform = platform or LocalPlatform(config)
    platform.check()
    example_gen = platform.example_gen("current", "CsvExampleGen")
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], stats_options=_stats_options(config)
    )
    schema_gen = PackagedImportSchemaGen(schema_file=SCHEMA_FILE).with_id("ImportSchemaGen")
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    components = [example_gen, statistics_gen, schema_gen, example_validator]

    gate_inputs = {"schema_anomalies": example_validator.outputs["anomalies"]}
    if platform.has_previous_span:
        baseline_gen = platform.example_gen("previous", "BaselineExampleGen")
        baseline_statistics = tfx.components.StatisticsGen(
            examples=baseline_gen.outputs["examples"], stats_options=_stats_options(config)
        ).with_id("BaselineStatisticsGen")
        drift_validator = DriftValidator(
            statistics=statistics_gen.outputs["statistics"],
            baseline_statistics=baseline_statistics.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
        )
        gate_inputs["drift_anomalies"] = drift_validator.outputs["anomalies"]
        components += [baseline_gen, baseline_statistics, drift_validator]
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
            settings=tuner_settings(config),
        )
    trainer_config = {
        # The sections as their models' JSON, validated again by run_fn (components/trainer.py);
        # the steps travel in train_args/eval_args (a Kubeflow run parameter), not here.
        "training": training.model_dump(mode="json", exclude={"train_steps", "eval_steps"}),
        "transform": config.transform.model_dump(mode="json"),
        "distribution": config.distribution.model_dump(mode="json"),
    }
    if config.distribution.strategy == "multi_worker":
        trainer_config.update(platform.multi_worker_settings())
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=platform.train_args(),
        eval_args=tfx.proto.EvalArgs(num_steps=training.eval_steps),
        custom_config=trainer_config,
        # run_fn prefers the tuner's values over custom_config["training"].
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
    )

    evaluator_inputs = {}
    # A rollback goes back on the newer model by decision: the absolute thresholds still bless it,
    # the comparison with that newer (latest blessed) model does not apply.
    if (
        config.evaluation.compare_with_blessed_baseline
        and platform.resolves_blessed_baseline()
        and config.pusher.rollback_to_span is None
    ):
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
        eval_config=platform.eval_config(eval_config(config)),
        **evaluator_inputs,
    )
    pusher = IdempotentPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=absolute(config.serving_dir)
            )
        ),
        # its KServe InferenceServices; the span trained on (locally known now) and a rollback
        custom_config=_pusher_config(config, platform.trained_span),
        statistics=statistics_gen.outputs["statistics"],  # the monitor's skew baseline
    ).with_id("Pusher")
    components += [gate, transform, *([tuner] if tuner else []), trainer, evaluator, pusher]
    # A pod that only waits for a TFJob or a Katib experiment: its workers get the resources.
    waiting = {trainer.id} if "tfjob" in trainer_config else set()
    if tuner and config.tuning.backend == "cluster":
        waiting.add(tuner.id)
    platform.finish(components, skip=waiting)

    return tfx.dsl.Pipeline(
        pipeline_name=config.name,
        pipeline_root=absolute(config.pipeline_root),
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
