"""TFX Trainer adapter: run_fn reads FnArgs, calls the train() core, exports the serving model."""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from absl import logging

from components.signatures import export_serving_model
from components.training import HParams, train
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
    hparams = hparams_from_fn_args(fn_args)
    logging.info("Training with %s", hparams)
    data, tf_transform_output = load_train_data(
        fn_args.transform_output,
        fn_args.train_files,
        fn_args.eval_files,
        hparams,
        (fn_args.custom_config or {}).get("transform"),
    )
    result = train(hparams, data)
    export_serving_model(result.model, tf_transform_output, fn_args.serving_model_dir)
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, METRICS_FILE), "w") as handle:
        json.dump(
            {
                "hparams": hparams.to_dict(),
                "eval": result.metrics,
                "seconds": result.seconds,
                "history": result.history,
            },
            handle,
            indent=2,
        )
    logging.info("Trained in %.1fs; eval %s", result.seconds, result.metrics)
