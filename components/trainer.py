"""TFX Trainer adapter: run_fn reads FnArgs, calls the train() core, exports the serving model."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import tensorflow as tf
from absl import logging

from components.distribution import is_chief, make_strategy, resolve
from components.signatures import export_serving_model
from components.training import HParams, TrainResult, train
from components.transformed_data import load_train_data

METRICS_FILE = "training_metrics.json"


def hparams_from_fn_args(fn_args: Any) -> HParams:
    """A tuner's HyperParameters artifact wins over the config's values when the pipeline has one."""
    custom = fn_args.custom_config or {}
    values = dict(custom.get("hyperparameters", {}))
    tuned = getattr(fn_args, "hyperparameters", None)
    if tuned:
        tuned_values = tuned.get("values", tuned) if isinstance(tuned, dict) else {}
        values.update(tuned_values)
    values.setdefault("train_steps", fn_args.train_steps)
    values.setdefault("eval_steps", fn_args.eval_steps)
    return HParams.from_mapping(values)


def run_fn(fn_args: Any) -> None:
    """Entry point TFX's Trainer calls (by import path: components.trainer.run_fn)."""
    custom = fn_args.custom_config or {}
    hparams = hparams_from_fn_args(fn_args)
    if custom.get("tfjob"):  # Kubeflow + multi_worker: the workers run in a TFJob
        launch_tfjob(fn_args, hparams, custom)
        return
    if custom.get("local_workers"):  # local + multi_worker: worker processes on this machine
        from components.local_workers import run_local_workers
        from components.train_worker import worker_args

        run_local_workers(
            int(custom["local_workers"]),
            worker_args(
                fn_args, hparams.to_dict(), custom.get("transform"), custom["distribution"]
            ),
        )
        return
    train_and_export(
        hparams,
        custom.get("distribution", {}),
        transform_output=fn_args.transform_output,
        train_files=fn_args.train_files,
        eval_files=fn_args.eval_files,
        transform_params=custom.get("transform"),
        serving_model_dir=fn_args.serving_model_dir,
        model_run_dir=fn_args.model_run_dir,
    )


def launch_tfjob(fn_args: Any, hparams: HParams, custom: dict[str, Any]) -> None:
    """Runs this Trainer's training as a TFJob (components.tfjob) and checks the chief's export."""
    from kubernetes import client, config

    from components import tfjob
    from components.train_worker import worker_args

    settings = tfjob.TFJobSettings.from_mapping(custom["tfjob"])
    manifest = tfjob.tfjob_manifest(
        tfjob.job_name(fn_args.model_run_dir),
        settings,
        worker_args(
            fn_args, hparams.to_dict(), custom.get("transform"), custom.get("distribution", {})
        ),
    )
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    tfjob.run_tfjob(client.CustomObjectsApi(), manifest, settings, log=logging.info)
    if not tf.io.gfile.exists(os.path.join(fn_args.serving_model_dir, "saved_model.pb")):
        raise tfjob.TFJobError(
            f"TFJob {manifest['metadata']['name']} succeeded but wrote no model to "
            f"{fn_args.serving_model_dir}: do the workers mount the same storage?"
        )


def train_and_export(
    hparams: HParams,
    distribution: dict[str, Any],
    *,
    transform_output: str,
    train_files: str | list[str],
    eval_files: str | list[str],
    transform_params: dict[str, int] | None,
    serving_model_dir: str,
    model_run_dir: str,
) -> TrainResult:
    """The one training path of run_fn and of every worker of a multi-worker job: strategy from
    config, global-batch input, train(), and the export only the chief's copy of survives."""
    kind = resolve(
        distribution.get("strategy", "default"), tpu_address=distribution.get("tpu_address")
    )
    strategy = make_strategy(kind, tpu_address=distribution.get("tpu_address"))
    logging.info(
        "Training with %s on %s (%d replicas)",
        hparams,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    data, tf_transform_output = load_train_data(
        transform_output,
        train_files,
        eval_files,
        hparams,
        transform_params,
        replicas=strategy.num_replicas_in_sync,
        cache=bool(distribution.get("cache_examples", False)),
    )
    chief = is_chief()
    # One path for all workers: Keras' BackupAndRestore gives non-chief workers their own copy.
    backup_dir = os.path.join(model_run_dir, "backup") if distribution.get("backup", True) else None
    result = train(
        hparams,
        data,
        strategy=strategy,
        steps_per_execution=int(distribution.get("steps_per_execution", 1)),
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
                "hparams": hparams.to_dict(),
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
