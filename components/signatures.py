"""Serving signatures: the Transform graph and the model in one SavedModel.

- serving_default: serialized tf.Example strings (`examples`), as TF Serving, TFMA and BulkInferrer
  send them;
- serving_raw: one named tensor per raw feature, for JSON clients (KServe V1 `inputs`, V2 infer).
Both return `purchase_probability` with shape [batch]. `score_raw_rows` calls serving_raw in
process (notebooks, tests, batch scoring): the model server's answer without the server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

import contract
from components.serving_contract import build_contract, write_contract

OUTPUT_KEY = "purchase_probability"
RAW_SIGNATURE = "serving_raw"


def serving_feature_spec(
    tf_transform_output: tft.TFTransformOutput,
) -> dict[str, tf.io.FixedLenFeature]:
    """Raw features a request carries: the schema's, minus the label and the ids
    (contract.NOT_MODEL_INPUTS)."""
    spec = dict(tf_transform_output.raw_feature_spec())
    for name in contract.NOT_MODEL_INPUTS:
        spec.pop(name, None)
    return spec


def export_serving_model(
    model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput, path: str
) -> None:
    """Saves `model` with both signatures to `path` (a SavedModel directory)."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    spec = serving_feature_spec(tf_transform_output)
    input_names = list(model.input_names)

    def predict(raw_features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(raw_features)
        scores = model({name: transformed[name] for name in input_names})
        return {OUTPUT_KEY: tf.reshape(scores, [-1])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict(tf.io.parse_example(serialized, spec))

    raw_specs = {
        name: tf.TensorSpec([None], feature.dtype, name=name) for name, feature in spec.items()
    }

    @tf.function(input_signature=[raw_specs])
    def serve_raw(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return predict({name: tf.reshape(value, [-1, 1]) for name, value in features.items()})

    model.save(
        path,
        save_format="tf",
        signatures={"serving_default": serve_examples, RAW_SIGNATURE: serve_raw},
    )
    schema = tf_transform_output.raw_metadata.schema
    write_contract(path, build_contract(schema, sorted(spec), RAW_SIGNATURE, OUTPUT_KEY))


def score_raw_rows(
    model: str | os.PathLike | Any, rows: Mapping[str, Sequence[Any]] | Any
) -> np.ndarray:
    """Scores raw rows with a SavedModel's serving_raw signature: P(purchase), one per row.

    `model` is a SavedModel directory (a pushed version folder) or one tf.saved_model.load
    returned; `rows` a pandas DataFrame or a mapping of column -> values. Columns the signature
    does not take (the label, the event id) are ignored; each value is cast to the dtype the
    signature declares. A missing column is a KeyError naming every missing one.
    """
    if isinstance(model, str | os.PathLike):
        model = tf.saved_model.load(os.fspath(model))
    signature = model.signatures[RAW_SIGNATURE]
    spec = signature.structured_input_signature[1]
    columns = set(rows.keys())
    missing = sorted(name for name in spec if name not in columns)
    if missing:
        raise KeyError(f"rows lack the column(s) {missing} that {RAW_SIGNATURE} takes")
    inputs = {
        name: tf.constant(np.asarray(rows[name]), dtype=spec[name].dtype) for name in sorted(spec)
    }
    return signature(**inputs)[OUTPUT_KEY].numpy().reshape(-1)
