"""Serving signatures: the Transform graph and the model in one SavedModel.

- serving_default: serialized tf.Example strings (`examples`), as TF Serving, TFMA and BulkInferrer
  send them;
- serving_raw: one named tensor per raw feature, for JSON clients (KServe V1 `inputs`, V2 infer).
Both return `purchase_probability` with shape [batch].
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from components import features as F
from components.keras_autograph import exempt_tf_keras
from components.serving_contract import build_contract, write_contract

exempt_tf_keras()  # ~20 s less per process: see components/keras_autograph.py

OUTPUT_KEY = "purchase_probability"
RAW_SIGNATURE = "serving_raw"


def serving_feature_spec(
    tf_transform_output: tft.TFTransformOutput,
) -> dict[str, tf.io.FixedLenFeature]:
    """Raw features a request carries: the schema's, minus the label and the event id."""
    spec = dict(tf_transform_output.raw_feature_spec())
    spec.pop(F.LABEL, None)
    spec.pop(F.EXAMPLE_ID, None)
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
