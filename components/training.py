"""Framework-free training core: train(training, data) knows Keras and tf.data, not TFX or Katib.

Thin adapters feed it: the TFX Trainer's run_fn (components.trainer), the multi-worker entry point
(components.train_worker) and the Katib trial (components.tuning.trial), so a tuned trial and the
pipeline's model are trained by the same code. The hyperparameters are the config's own
TrainingConfig, validated again in each of those processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import tensorflow as tf

from components.distribution import shard_by_data
from components.keras_autograph import exempt_tf_keras
from components.model import build_model
from settings import TrainingConfig


@dataclass
class TrainData:
    """Batched (features, label) datasets and the size of every categorical feature."""

    train: tf.data.Dataset  # repeated, shuffled
    eval: tf.data.Dataset  # one pass
    categorical_sizes: dict[str, int]


@dataclass
class TrainResult:
    model: tf.keras.Model
    metrics: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def train(
    training: TrainingConfig,
    data: TrainData,
    *,
    strategy: tf.distribute.Strategy | None = None,
    steps_per_execution: int = 1,
    backup_dir: str | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    verbose: int = 2,
) -> TrainResult:
    """Trains for training.train_steps and evaluates on training.eval_steps eval batches.

    `data` must be batched at the global batch (distribution.global_batch_size); each worker of a
    multi-worker strategy reads its own shard. With `backup_dir`, a preempted worker resumes from
    the last finished epoch (Keras BackupAndRestore) instead of starting over. `callbacks` run
    at every epoch end (a Katib trial reports its objective there).
    """
    exempt_tf_keras()  # idempotent; ~20 s less on the first step (components/keras_autograph.py)
    strategy = strategy or tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(training.seed)
    with strategy.scope():
        model = build_model(
            data.categorical_sizes,
            embedding_dim=training.embedding_dim,
            hidden_units=training.hidden_units,
            cross_layers=training.cross_layers,
            dropout=training.dropout,
            l2=training.l2,
            learning_rate=training.learning_rate,
            steps_per_execution=steps_per_execution,
        )
    callbacks = [
        *([tf.keras.callbacks.BackupAndRestore(backup_dir)] if backup_dir else []),
        *callbacks,
    ]
    # Up to 10 "epochs" of equal steps: progress lines without changing the total step count.
    epochs = min(10, training.train_steps)
    steps_per_epoch = math.ceil(training.train_steps / epochs)
    epochs = math.ceil(training.train_steps / steps_per_epoch)
    started = time.perf_counter()
    history = model.fit(
        shard_by_data(data.train),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    evaluation = model.evaluate(
        shard_by_data(data.eval.take(training.eval_steps)), return_dict=True, verbose=0
    )
    return TrainResult(
        model=model,
        metrics={k: float(v) for k, v in evaluation.items()},
        history={k: [float(x) for x in v] for k, v in history.history.items()},
        seconds=time.perf_counter() - started,
    )
