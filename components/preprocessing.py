"""tf.Transform preprocessing_fn: the one feature pipeline for training, evaluation and serving.

Full-pass statistics (vocabularies, means, quantiles) are computed by Beam over the training split
and baked into the transform graph, so serving applies exactly what training saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from components import features as F

DEFAULT_PARAMS = {
    "user_hash_buckets": 2000,
    "product_hash_buckets": 1000,
    "price_buckets": 10,
    "cross_hash_buckets": 200,
}


def params_from(custom_config: Mapping[str, Any] | None) -> dict[str, int]:
    """The config's TransformConfig values over the defaults (unknown keys are an error)."""
    params = dict(DEFAULT_PARAMS)
    unknown = set(custom_config or {}) - set(params)
    if unknown:
        raise ValueError(
            f"unknown transform parameter(s) {sorted(unknown)}; known: {sorted(params)}"
        )
    params.update({k: int(v) for k, v in (custom_config or {}).items()})
    return params


def _dense(tensor: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """Schema features are required with shape [1]; accept sparse input from ad-hoc callers too."""
    if isinstance(tensor, tf.SparseTensor):
        default = "" if tensor.dtype == tf.string else 0
        tensor = tf.sparse.to_dense(tf.sparse.reshape(tensor, [-1, 1]), default_value=default)
    return tf.reshape(tensor, [-1])


def _as_string(tensor: tf.Tensor) -> tf.Tensor:
    return tensor if tensor.dtype == tf.string else tf.strings.as_string(tensor)


def preprocessing_fn(
    inputs: dict[str, tf.Tensor], custom_config: Mapping[str, Any] | None = None
) -> dict[str, tf.Tensor]:
    """Raw shop columns -> model features (names end in `_xf`) and the label."""
    params = params_from(custom_config)
    raw = {name: _dense(inputs[name]) for name in F.RAW_FEATURES}
    out: dict[str, tf.Tensor] = {}

    out[F.xf("user_id")] = tf.strings.to_hash_bucket_fast(
        raw["user_id"], params["user_hash_buckets"]
    )
    out[F.xf("product_id")] = tf.strings.to_hash_bucket_fast(
        raw["product_id"], params["product_hash_buckets"]
    )
    for name in F.VOCABULARY:
        out[F.xf(name)] = tft.compute_and_apply_vocabulary(
            raw[name], num_oov_buckets=1, vocab_filename=name
        )
    for name, size in F.INTEGER_IDS.items():
        out[F.xf(name)] = tf.clip_by_value(tf.cast(raw[name], tf.int64), 0, size - 1)

    for name in F.LOG_NUMERIC:
        out[F.xf(name)] = tft.scale_to_z_score(tf.math.log1p(tf.cast(raw[name], tf.float32)))
    for name in F.NUMERIC:
        out[F.xf(name)] = tft.scale_to_z_score(tf.cast(raw[name], tf.float32))
    log_price = tf.math.log(tf.maximum(tf.cast(raw["price"], tf.float32), 1e-3))
    log_usual = tf.math.log(tf.maximum(tf.cast(raw["user_avg_price"], tf.float32), 1e-3))
    out[F.xf(F.PRICE_RATIO)] = tft.scale_to_z_score(log_price - log_usual)
    out[F.xf(F.PRICE_BUCKET)] = tft.bucketize(log_price, params["price_buckets"])

    for pair in F.CROSSES:
        joined = tf.strings.join(
            [_as_string(raw[pair[0]]), _as_string(raw[pair[1]])], separator="|"
        )
        out[F.xf(F.cross_name(pair))] = tf.strings.to_hash_bucket_fast(
            joined, params["cross_hash_buckets"]
        )

    if F.LABEL in inputs:
        out[F.LABEL] = tf.cast(_dense(inputs[F.LABEL]), tf.int64)
    return out


def categorical_sizes(
    tf_transform_output: tft.TFTransformOutput, params: Mapping[str, int]
) -> dict[str, int]:
    """Number of distinct ids of every categorical output: the embedding table sizes."""
    sizes = {
        F.xf("user_id"): params["user_hash_buckets"],
        F.xf("product_id"): params["product_hash_buckets"],
        F.xf(F.PRICE_BUCKET): params["price_buckets"],
    }
    for name in F.VOCABULARY:
        sizes[F.xf(name)] = tf_transform_output.vocabulary_size_by_name(name) + 1
    for name, size in F.INTEGER_IDS.items():
        sizes[F.xf(name)] = size
    for pair in F.CROSSES:
        sizes[F.xf(F.cross_name(pair))] = params["cross_hash_buckets"]
    return sizes
