"""The Katib Experiment (kubeflow.org/v1beta1) built from TuningConfig with the Katib SDK's models.

The KatibTuner step creates it on a cluster; `shop-pipeline katib-manifest` writes the same object
to manifests/katib/experiment.yaml for review and for `kubectl apply` on the newest Transform
output (trial flag --latest-under). Trials are batch/v1 Jobs running `python -m
components.tuning.trial`; Katib's StdOut collector reads the `auc=<value>` lines they print.
"""

from __future__ import annotations

import re
from typing import Any

from kubeflow.katib import models as katib
from kubernetes.client import ApiClient, V1ObjectMeta

from components.tfjob import pod_spec
from components.tuning.search_space import parameter_specs, trial_flags
from settings import KubeflowConfig, ObjectStoreConfig, PipelineConfig, TrainingConfig, TuningConfig

API_VERSION, KIND = "kubeflow.org/v1beta1", "Experiment"
TRIAL_MODULE = "components.tuning.trial"
PRIMARY_CONTAINER = "training-container"  # Katib's default primaryContainerName
ADDITIONAL_METRICS = ["loss"]
# Katib joins command and args into one `sh -c` line for its StdOut collector, so every fixed
# argument must survive the shell unquoted.
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./:=,+@%-]*")


def algorithm_settings(tuning: TuningConfig) -> list[katib.V1beta1AlgorithmSetting]:
    """The configured settings plus random_state (every Katib service takes it): searches repeat."""
    settings = {**tuning.algorithm_settings, "random_state": tuning.seed}
    return [katib.V1beta1AlgorithmSetting(name=k, value=str(v)) for k, v in settings.items()]


def fixed_trial_args(
    tuning: TuningConfig,
    training: TrainingConfig,
    transform: dict[str, int],
    data_args: list[str],
) -> list[str]:
    """Flags every trial shares: where the data is, the Transform sizes, the trial's steps and
    validation share, and each untuned TrainingConfig field at its configured value."""
    steps = tuning.trial_train_steps or training.train_steps
    args = [
        *data_args,
        "--transform-params=" + ",".join(f"{k}={v}" for k, v in sorted(transform.items())),
        f"--validation-every={tuning.validation_every}",
        f"--train_steps={steps}",
    ]
    for name, value in training.model_dump(exclude={"train_steps", "eval_steps"}).items():
        if name not in tuning.search_space:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            args.append(f"--{name}={text}")
    unsafe = [a for a in args if not _SHELL_SAFE.fullmatch(a)]
    if unsafe:
        raise ValueError(f"trial arguments must be shell-safe for Katib's collector: {unsafe}")
    return args


def build_experiment(
    name: str,
    tuning: TuningConfig,
    kubeflow: KubeflowConfig,
    object_store: ObjectStoreConfig | None,
    fixed_args: list[str],
) -> katib.V1beta1Experiment:
    """One Experiment in kubeflow.namespace: the search (parameters, algorithm, budget, early
    stopping), the objective (maximize the trials' last reported `auc`) and the trial Job template
    (components.tfjob.pod_spec: the image, the volume, the training step's resources and the
    object store's settings and keys)."""
    spec = pod_spec(
        kubeflow,
        object_store,
        PRIMARY_CONTAINER,
        ["python", "-m", TRIAL_MODULE],
        fixed_args + trial_flags(tuning),
    )
    spec["restartPolicy"] = "Never"  # a failed trial is recorded; Katib starts the next one
    early_stopping = None
    if tuning.early_stopping == "medianstop":
        early_stopping = katib.V1beta1EarlyStoppingSpec(
            algorithm_name="medianstop",
            algorithm_settings=[
                katib.V1beta1EarlyStoppingSetting(
                    name="min_trials_required", value=str(tuning.early_stopping_min_trials)
                ),
                katib.V1beta1EarlyStoppingSetting(
                    name="start_step", value=str(tuning.early_stopping_start_step)
                ),
            ],
        )
    return katib.V1beta1Experiment(
        api_version=API_VERSION,
        kind=KIND,
        metadata=V1ObjectMeta(
            name=name,
            namespace=kubeflow.namespace,
            labels={"app.kubernetes.io/part-of": "shop-ranking"},
        ),
        spec=katib.V1beta1ExperimentSpec(
            objective=katib.V1beta1ObjectiveSpec(
                type="maximize",
                goal=tuning.goal,
                objective_metric_name=tuning.objective_metric,
                additional_metric_names=ADDITIONAL_METRICS,
                # The model the Trainer will train is the one at the end of a trial, so the
                # trial's last report counts, not its best epoch (Katib's default is max).
                metric_strategies=[
                    katib.V1beta1MetricStrategy(name=tuning.objective_metric, value="latest")
                ],
            ),
            algorithm=katib.V1beta1AlgorithmSpec(
                algorithm_name=tuning.algorithm, algorithm_settings=algorithm_settings(tuning)
            ),
            early_stopping=early_stopping,
            parameters=parameter_specs(tuning),
            max_trial_count=tuning.max_trials,
            parallel_trial_count=tuning.parallel_trials,
            max_failed_trial_count=tuning.max_failed_trials,
            metrics_collector_spec=katib.V1beta1MetricsCollectorSpec(
                collector=katib.V1beta1CollectorSpec(kind="StdOut")
            ),
            resume_policy="Never",
            trial_template=katib.V1beta1TrialTemplate(
                primary_container_name=PRIMARY_CONTAINER,
                trial_parameters=[
                    katib.V1beta1TrialParameterSpec(
                        name=name_, reference=name_, description=f"TrainingConfig.{name_}"
                    )
                    for name_ in tuning.search_space
                ],
                trial_spec={
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            # Istio sidecars keep a Job's pod alive after the trial exits.
                            "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                            "spec": spec,
                        },
                    },
                },
            ),
        ),
    )


def to_manifest(experiment: katib.V1beta1Experiment) -> dict[str, Any]:
    """The Kubernetes JSON form (camelCase keys, no nulls) of an SDK Experiment."""
    return ApiClient().sanitize_for_serialization(experiment)


def experiment_name(pipeline_name: str, run_key: str) -> str:
    """A DNS-1123 name, unique per pipeline run, short enough for Katib's trial Job names."""
    suffix = re.sub(r"[^a-z0-9]", "", run_key.lower())[-10:] or "0"
    return f"{pipeline_name[:28].rstrip('-')}-tune-{suffix}"


MANIFEST_HEADER = """\
# Generated from {source}'s tuning section by `make katib-manifest`
# (shop-pipeline katib-manifest --config kubeflow). Do not edit: tests/unit/test_tuning_manifests.py
# fails when this file and the config disagree.
# The Experiment the KatibTuner step creates (there with the Transform outputs of its run); as it is
# here, its trials tune on the newest Transform output under the pipeline root (--latest-under):
#   kubectl create -f manifests/katib/experiment.yaml    (needs Katib 0.16+, the PVC, the image)
"""


def standalone_trial_args(config: PipelineConfig) -> list[str]:
    """Every trial's fixed arguments for a search outside a pipeline run: config's tuning,
    training and transform sections, on the newest Transform output under config.pipeline_root
    (--latest-under). The standalone Experiment's trials take them, and so does a local search
    started by hand (run_local_search(config.tuning, config.training, these, workdir))."""
    return fixed_trial_args(
        config.tuning,
        config.training,
        config.transform.model_dump(),
        [f"--latest-under={config.pipeline_root}"],
    )


def standalone_experiment(config: PipelineConfig) -> katib.V1beta1Experiment:
    """The Experiment as the pipeline step would create it, reading the newest Transform output
    under config.pipeline_root instead of one run's artifacts."""
    return build_experiment(
        f"{config.name[:28].rstrip('-')}-tune",
        config.tuning,
        config.kubeflow,
        config.pod_object_store(),
        standalone_trial_args(config),
    )


def manifest_text(config: PipelineConfig, source: str) -> str:
    import yaml

    body = yaml.safe_dump(to_manifest(standalone_experiment(config)), sort_keys=False)
    return MANIFEST_HEADER.format(source=source) + body
