"""Framework-free training core: train(hparams, data) knows Keras and tf.data, not TFX or Katib.

Thin adapters feed it: the TFX Trainer's run_fn (components.trainer) and, later, the Katib trial
entry point, so a tuned trial and the pipeline's model are trained by the same code.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from components.distribution import shard_by_data
from components.model import build_model


@dataclass(frozen=True)
class HParams:
    """Hyperparameters of one training run (names match TrainingConfig's fields)."""

    train_steps: int = 2000
    eval_steps: int = 100
    batch_size: int = 512
    learning_rate: float = 0.003
    embedding_dim: int = 8
    hidden_units: tuple[int, ...] = (64, 32)
    cross_layers: int = 2
    dropout: float = 0.3
    l2: float = 1e-3
    seed: int = 42

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> HParams:
        """Typed values from config dicts, tuner output or CLI flags; unknown names are an error."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(known)}")
        typed: dict[str, Any] = {}
        for name, value in values.items():
            default = getattr(cls, name)
            if isinstance(default, tuple):
                items = value.split(",") if isinstance(value, str) else value
                typed[name] = tuple(int(v) for v in items)
            else:
                typed[name] = type(default)(value)
        return cls(**typed)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden_units"] = list(self.hidden_units)
        return values


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
    hparams: HParams,
    data: TrainData,
    *,
    strategy: tf.distribute.Strategy | None = None,
    steps_per_execution: int = 1,
    backup_dir: str | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    verbose: int = 2,
) -> TrainResult:
    """Trains for hparams.train_steps and evaluates on hparams.eval_steps eval batches.

    `data` must be batched at the global batch (distribution.global_batch_size); each worker of a
    multi-worker strategy reads its own shard. With `backup_dir`, a preempted worker resumes from
    the last finished epoch (Keras BackupAndRestore) instead of starting over. `callbacks` run
    at every epoch end (a Katib trial reports its objective there).
    """
    strategy = strategy or tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(hparams.seed)
    with strategy.scope():
        model = build_model(
            data.categorical_sizes,
            embedding_dim=hparams.embedding_dim,
            hidden_units=hparams.hidden_units,
            cross_layers=hparams.cross_layers,
            dropout=hparams.dropout,
            l2=hparams.l2,
            learning_rate=hparams.learning_rate,
            steps_per_execution=steps_per_execution,
        )
    callbacks = [
        *([tf.keras.callbacks.BackupAndRestore(backup_dir)] if backup_dir else []),
        *callbacks,
    ]
    # Up to 10 "epochs" of equal steps: progress lines without changing the total step count.
    epochs = min(10, hparams.train_steps)
    steps_per_epoch = math.ceil(hparams.train_steps / epochs)
    epochs = math.ceil(hparams.train_steps / steps_per_epoch)
    started = time.perf_counter()
    history = model.fit(
        shard_by_data(data.train),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    evaluation = model.evaluate(
        shard_by_data(data.eval.take(hparams.eval_steps)), return_dict=True, verbose=0
    )
    return TrainResult(
        model=model,
        metrics={k: float(v) for k, v in evaluation.items()},
        history={k: [float(x) for x in v] for k, v in history.history.items()},
        seconds=time.perf_counter() - started,
    )
