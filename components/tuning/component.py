"""KatibTuner: the TFX step in Tuner's place. In: transformed examples, transform graph, schema.
Out: the HyperParameters artifact the Trainer consumes and a TunerResults artifact with the report.

A Python-function component, so it compiles for Kubeflow like any other step and the image runs
it by import path. Its one parameter is the JSON of TunerSettings (what pipelines.pipeline takes
from the config): the search, the training values it starts from, and for the cluster backend the
trial pods' image, namespace, resources and volume.
"""

# No `from __future__ import annotations`: TFX reads the real annotations of @component functions.
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
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

from components.tuning.report import REPORT_FILE, TuningReport
from settings import TrainingConfig, TuningConfig

# The file TFX's Trainer reads from a HyperParameters artifact (the only file in it), in the
# layout TFX's Tuner writes: {"space": ..., "values": {name: value}}.
HYPERPARAMETERS_FILE = "best_hyperparameters.txt"
TRIAL_LOGS = "trials"


@dataclass
class TunerSettings:
    pipeline_name: str
    tuning: dict[str, Any]
    training: dict[str, Any]
    transform: dict[str, int]
    pod: dict[str, Any] = field(default_factory=dict)  # components.tfjob.TFJobSettings fields

    def to_json(self) -> str:
        return json.dumps(asdict(self))  # keeps the search space in its declared order

    @classmethod
    def from_json(cls, text: str) -> "TunerSettings":
        return cls(**json.loads(text))


def trainer_hyperparameters(report: TuningReport, training: TrainingConfig) -> dict[str, Any]:
    """The Trainer's hyperparameters: training's values with the best trial's on top (steps stay
    with the Trainer's train_args)."""
    values = training.model_dump(exclude={"train_steps", "eval_steps"})
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

    parsed = TunerSettings.from_json(settings)
    tuning = TuningConfig.model_validate(parsed.tuning)
    training = TrainingConfig.model_validate(parsed.training)
    args = fixed_trial_args(
        tuning,
        training,
        parsed.transform,
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
                experiment=f"{parsed.pipeline_name} (local)",
            )
            if "://" in trial_logs:
                _copy_tree(local, trial_logs)
    else:
        from components.tfjob import TFJobSettings
        from components.tuning.cluster_backend import katib_client, run_cluster_search
        from components.tuning.experiment import build_experiment, experiment_name

        run_key = hashlib.sha256(tuning_report.uri.encode()).hexdigest()[:10]
        experiment = build_experiment(
            experiment_name(parsed.pipeline_name, run_key),
            tuning,
            TFJobSettings.from_mapping(parsed.pod),
            args,
        )
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
