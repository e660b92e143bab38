"""Reads Transform's output (gzipped tf.Example TFRecords) into the datasets train() consumes."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
import tensorflow_transform as tft

from components import features as F
from components.preprocessing import categorical_sizes, params_from
from components.training import TrainData
from settings import TrainingConfig


def make_dataset(
    file_pattern: str | list[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    *,
    repeat: bool,
    seed: int,
    cache: bool = False,
    shuffle_buffer: int = 1_000,
) -> tf.data.Dataset:
    """(features, label) batches: files read and parsed in parallel (autotuned), prefetched.

    cache=True (training data that fits in memory): the first pass decompresses, parses and
    batches the TFRecords once into memory; later epochs only reshuffle the batches, so the CPU
    spends its time on the model (figures: benchmarks/training_throughput.py, docs/benchmarks.md).
    """
    if cache and repeat:
        batches = tf.data.experimental.make_batched_features_dataset(
            file_pattern=file_pattern,
            batch_size=batch_size,
            features=tf_transform_output.transformed_feature_spec(),
            reader=lambda files: tf.data.TFRecordDataset(files, compression_type="GZIP"),
            label_key=F.LABEL,
            num_epochs=1,
            shuffle=True,  # examples shuffled once, on the way into the cache
            shuffle_seed=seed,
            sloppy_ordering=False,
            reader_num_threads=tf.data.AUTOTUNE,
            parser_num_threads=tf.data.AUTOTUNE,
        )
        # Cached as parsed batches; every epoch reshuffles the batch order (a batch keeps its
        # examples: the price of not re-batching each example every epoch).
        return (
            batches.cache()
            .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .prefetch(tf.data.AUTOTUNE)
        )
    return tf.data.experimental.make_batched_features_dataset(
        file_pattern=file_pattern,
        batch_size=batch_size,
        features=tf_transform_output.transformed_feature_spec(),
        reader=lambda files: tf.data.TFRecordDataset(files, compression_type="GZIP"),
        label_key=F.LABEL,
        num_epochs=None if repeat else 1,
        shuffle=repeat,
        shuffle_seed=seed,
        sloppy_ordering=False,  # deterministic order: runs are reproducible
        reader_num_threads=tf.data.AUTOTUNE,
        parser_num_threads=tf.data.AUTOTUNE,
        prefetch_buffer_size=tf.data.AUTOTUNE,
    )


def load_train_data(
    transform_output_dir: str,
    train_files: str | list[str],
    eval_files: str | list[str],
    hparams: TrainingConfig,
    transform_params: Mapping[str, int] | None = None,
    replicas: int = 1,
    cache: bool = False,
) -> tuple[TrainData, tft.TFTransformOutput]:
    """Datasets batched at the global batch: hparams.batch_size per replica x replicas."""
    tf_transform_output = tft.TFTransformOutput(transform_output_dir)
    batch = hparams.batch_size * replicas
    data = TrainData(
        train=make_dataset(
            train_files, tf_transform_output, batch, repeat=True, seed=hparams.seed, cache=cache
        ),
        eval=make_dataset(eval_files, tf_transform_output, batch, repeat=False, seed=hparams.seed),
        categorical_sizes=categorical_sizes(tf_transform_output, params_from(transform_params)),
    )
    return data, tf_transform_output


def holdout_datasets(
    file_pattern: str | list[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    *,
    every: int,
    seed: int,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, validation) from one split: every `every`-th record validates, the rest train.

    A tuning trial selects on this held-out share of the train split, so the eval split stays
    unseen until the Evaluator judges the tuned model. Records are read in file order (the split
    is the same for every trial) and kept in memory as serialized bytes after the first pass.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    spec = tf_transform_output.transformed_feature_spec()

    def parse(serialized):
        features = tf.io.parse_example(serialized, spec)
        return features, features.pop(F.LABEL)

    indexed = tf.data.TFRecordDataset(files, compression_type="GZIP").enumerate()
    train = indexed.filter(lambda i, _: i % every != 0).map(lambda _, record: record)
    validation = indexed.filter(lambda i, _: i % every == 0).map(lambda _, record: record)
    train = (
        train.cache()
        .shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = (
        validation.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).cache()
    )
    return train, validation
