"""TFX Trainer adapter: run_fn reads FnArgs, calls the train() core, exports the serving model.

custom_config carries the config's sections as their models' JSON (pipelines/pipeline.py): the
training section without its step counts (those come from train_args/eval_args, a run parameter on
Kubeflow), transform and distribution; for multi-worker training on Kubeflow also "tfjob" (the
kubeflow and object_store sections of the workers' pods), locally "local_workers". Each section
is validated again here.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import tensorflow as tf
from absl import logging

from components.distribution import is_chief, make_strategy, resolve
from components.signatures import export_serving_model
from components.training import TrainResult, train
from components.transformed_data import load_train_data
from components.worker_flags import worker_args
from settings import DistributionConfig, TrainingConfig, TransformConfig

METRICS_FILE = "training_metrics.json"


def training_from_fn_args(fn_args: Any) -> TrainingConfig:
    """The training section this Trainer trains with: custom_config's, the tuner's best values
    over it when the pipeline has a KatibTuner (its HyperParameters artifact), and the steps of
    train_args/eval_args, merged and validated as one TrainingConfig."""
    custom = fn_args.custom_config or {}
    values = dict(custom.get("training", {}))
    tuned = getattr(fn_args, "hyperparameters", None)
    if tuned:
        values.update(tuned.get("values", tuned) if isinstance(tuned, dict) else {})
    for name in ("train_steps", "eval_steps"):
        if getattr(fn_args, name, None):
            values[name] = getattr(fn_args, name)
    return TrainingConfig.model_validate(values)


def run_fn(fn_args: Any) -> None:
    """Entry point TFX's Trainer calls (by import path: components.trainer.run_fn)."""
    custom = fn_args.custom_config or {}
    training = training_from_fn_args(fn_args)
    transform = TransformConfig.model_validate(custom.get("transform", {}))
    distribution = DistributionConfig.model_validate(custom.get("distribution", {}))
    if custom.get("tfjob"):  # Kubeflow + multi_worker: the workers run in a TFJob
        args = worker_args(fn_args, training, transform, distribution)
        launch_tfjob(fn_args, args, distribution, custom["tfjob"])
        return
    if custom.get("local_workers"):  # local + multi_worker: worker processes on this machine
        from components.local_workers import run_local_workers

        run_local_workers(
            distribution.workers, worker_args(fn_args, training, transform, distribution)
        )
        return
    train_and_export(
        training,
        distribution,
        transform,
        transform_output=fn_args.transform_output,
        train_files=fn_args.train_files,
        eval_files=fn_args.eval_files,
        serving_model_dir=fn_args.serving_model_dir,
        model_run_dir=fn_args.model_run_dir,
    )


def launch_tfjob(
    fn_args: Any, args: list[str], distribution: DistributionConfig, pods: dict[str, Any]
) -> None:
    """Runs this Trainer's training as a TFJob (components.tfjob): distribution.workers workers
    of `args` in pods of the kubeflow and object_store sections in `pods`; checks the chief's
    export."""
    from kubernetes import client, config

    from components import tfjob

    kubeflow, object_store = tfjob.pod_sections(pods)
    manifest = tfjob.tfjob_manifest(
        tfjob.job_name(fn_args.model_run_dir), kubeflow, object_store, distribution.workers, args
    )
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    tfjob.run_tfjob(
        client.CustomObjectsApi(),
        manifest,
        timeout_s=distribution.job_timeout_s,
        log=logging.info,
    )
    if not tf.io.gfile.exists(os.path.join(fn_args.serving_model_dir, "saved_model.pb")):
        raise tfjob.TFJobError(
            f"TFJob {manifest['metadata']['name']} succeeded but wrote no model to "
            f"{fn_args.serving_model_dir}: do the workers mount the same storage?"
        )


def train_and_export(
    training: TrainingConfig,
    distribution: DistributionConfig,
    transform: TransformConfig,
    *,
    transform_output: str,
    train_files: str | list[str],
    eval_files: str | list[str],
    serving_model_dir: str,
    model_run_dir: str,
) -> TrainResult:
    """The one training path of run_fn and of every worker of a multi-worker job: strategy from
    config, global-batch input, train(), and the export only the chief's copy of survives."""
    kind = resolve(distribution.strategy, tpu_address=distribution.tpu_address)
    strategy = make_strategy(kind, tpu_address=distribution.tpu_address)
    logging.info(
        "Training with %s on %s (%d replicas)",
        training,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    data, tf_transform_output = load_train_data(
        transform_output,
        train_files,
        eval_files,
        training,
        transform.model_dump(),
        replicas=strategy.num_replicas_in_sync,
        cache=distribution.cache_examples,
    )
    chief = is_chief()
    # One path for all workers: Keras' BackupAndRestore gives non-chief workers their own copy.
    backup_dir = os.path.join(model_run_dir, "backup") if distribution.backup else None
    result = train(
        training,
        data,
        strategy=strategy,
        steps_per_execution=distribution.steps_per_execution,
        backup_dir=backup_dir,
    )
    # Every worker must take part in saving a multi-worker model; only the chief's copy is kept.
    export_dir = serving_model_dir if chief else tempfile.mkdtemp(prefix="worker-export-")
    export_serving_model(result.model, tf_transform_output, export_dir)
    if not chief:
        tf.io.gfile.rmtree(export_dir)
        return result
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, METRICS_FILE), "w") as handle:
        json.dump(
            {
                "hparams": training.model_dump(mode="json"),
                "strategy": kind,
                "replicas": strategy.num_replicas_in_sync,
                "eval": result.metrics,
                "seconds": result.seconds,
                "history": result.history,
            },
            handle,
            indent=2,
        )
    logging.info("Trained in %.1fs; eval %s", result.seconds, result.metrics)
    return result
