"""KatibTuner: the TFX step in Tuner's place. In: transformed examples, transform graph, schema.
Out: the HyperParameters artifact the Trainer consumes and a TunerResults artifact with the report.

A Python-function component, so it compiles for Kubeflow like any other step and the image runs
it by import path. Its one parameter, `settings`, is tuner_settings(config): the config's sections
the search reads, each as its model's JSON (tuning; training, the values it starts from;
transform; for the cluster backend the trial pods' kubeflow and object_store sections), validated
again in the step.
"""

# No `from __future__ import annotations`: TFX reads the real annotations of @component functions.
import hashlib
import json
import os
import tempfile
from typing import Any

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import (
    Examples,
    HyperParameters,
    Schema,
    TransformGraph,
    TunerResults,
)

from components.tfjob import pod_sections, pod_sections_json
from components.tuning.report import REPORT_FILE, TuningReport
from settings import (
    KubeflowConfig,
    ObjectStoreConfig,
    PipelineConfig,
    TrainingConfig,
    TransformConfig,
    TuningConfig,
)

# The file TFX's Trainer reads from a HyperParameters artifact (the only file in it), in the
# layout TFX's Tuner writes: {"space": ..., "values": {name: value}}.
HYPERPARAMETERS_FILE = "best_hyperparameters.txt"
TRIAL_LOGS = "trials"


def tuner_settings(config: PipelineConfig) -> str:
    """KatibTuner's `settings` parameter: the pipeline's name and the sections the search reads,
    as their models' JSON (the search space keeps its declared order); the trial pods' sections
    (components.tfjob.pod_sections_json) only for the cluster backend."""
    cluster = config.tuning.backend == "cluster"
    return json.dumps(
        {
            "pipeline_name": config.name,
            "tuning": config.tuning.model_dump(mode="json"),
            "training": config.training.model_dump(mode="json"),
            "transform": config.transform.model_dump(mode="json"),
            "pods": pod_sections_json(config) if cluster else None,
        }
    )


def read_tuner_settings(
    text: str,
) -> tuple[
    str,
    TuningConfig,
    TrainingConfig,
    TransformConfig,
    tuple[KubeflowConfig, ObjectStoreConfig | None] | None,
]:
    """tuner_settings()'s JSON back as the validated sections: (pipeline name, tuning, training,
    transform, the trial pods' (kubeflow, object_store) or None for the local backend)."""
    values = json.loads(text)
    return (
        values["pipeline_name"],
        TuningConfig.model_validate(values["tuning"]),
        TrainingConfig.model_validate(values["training"]),
        TransformConfig.model_validate(values["transform"]),
        pod_sections(values["pods"]) if values.get("pods") is not None else None,
    )


def trainer_hyperparameters(report: TuningReport, training: TrainingConfig) -> dict[str, Any]:
    """The Trainer's hyperparameters: training's values with the best trial's on top (steps stay
    with the Trainer's train_args)."""
    values = training.model_dump(mode="json", exclude={"train_steps", "eval_steps"})
    values.update(report.best.values)
    return {"space": report.parameters, "values": values}


@component
def KatibTuner(
    transformed_examples: InputArtifact[Examples],
    transform_graph: InputArtifact[TransformGraph],
    best_hyperparameters: OutputArtifact[HyperParameters],
    tuning_report: OutputArtifact[TunerResults],
    settings: Parameter[str],
    schema: InputArtifact[Schema] = None,  # lineage, as TFX's Tuner; the graph holds the spec
) -> None:
    """Runs the search with the configured backend and writes the best trial's values."""
    from components.tuning.experiment import fixed_trial_args

    pipeline_name, tuning, training, transform, pods = read_tuner_settings(settings)
    args = fixed_trial_args(
        tuning,
        training,
        transform.model_dump(),
        [
            f"--transformed-examples={transformed_examples.uri}",
            f"--transform-graph={transform_graph.uri}",
        ],
    )
    if tuning.backend == "local":
        from components.tuning.local_backend import run_local_search

        trial_logs = os.path.join(tuning_report.uri, TRIAL_LOGS)
        # Trials write their logs as local files: on an object store they are made in a local
        # folder and copied into the report artifact once the search is over.
        with tempfile.TemporaryDirectory(prefix="trials-") as local:
            report = run_local_search(
                tuning,
                training,
                args,
                trial_logs if "://" not in trial_logs else local,
                experiment=f"{pipeline_name} (local)",
            )
            if "://" in trial_logs:
                _copy_tree(local, trial_logs)
    else:
        from components.tuning.cluster_backend import katib_client, run_cluster_search
        from components.tuning.experiment import build_experiment, experiment_name

        run_key = hashlib.sha256(tuning_report.uri.encode()).hexdigest()[:10]
        if pods is None:
            raise ValueError("tuning.backend=cluster needs the trial pods' sections in settings")
        experiment = build_experiment(experiment_name(pipeline_name, run_key), tuning, *pods, args)
        report = run_cluster_search(tuning, experiment, katib_client())
    print(report.table(), flush=True)
    _write(os.path.join(tuning_report.uri, REPORT_FILE), report.to_json())
    values = trainer_hyperparameters(report, training)
    _write(os.path.join(best_hyperparameters.uri, HYPERPARAMETERS_FILE), json.dumps(values))
    best_hyperparameters.set_float_custom_property("best_objective", report.best.objective or 0.0)
    best_hyperparameters.set_string_custom_property("best_trial", report.best.name)
    tuning_report.set_int_custom_property("trials", len(report.trials))
    tuning_report.set_string_custom_property("backend", report.backend)
    print(f"KatibTuner: best {report.best.name} {values['values']}", flush=True)


def _copy_tree(local: str, uri: str) -> None:
    from tfx.dsl.io import fileio

    for folder, _, files in os.walk(local):
        relative = os.path.relpath(folder, local)
        target = uri if relative == "." else os.path.join(uri, relative)
        fileio.makedirs(target)
        for name in files:
            fileio.copy(os.path.join(folder, name), os.path.join(target, name), overwrite=True)


def _write(path: str, text: str) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(text)


def read_report(tuning_report_uri: str) -> TuningReport:
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(tuning_report_uri, REPORT_FILE)) as handle:
        return TuningReport.from_json(handle.read())
