"""The ranking model: a Deep & Cross Network (DCN-v2) over embedded ids and scaled numerics.

Cross layers learn explicit feature interactions (price x affinity, device x hour) that a plain MLP
needs many more steps to find; the deep tower learns the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from components import features as F


def require_keras_2() -> None:
    """TFX 1.16 (Transform layer, Evaluator) needs Keras 2; fail clearly under Keras 3."""
    version = getattr(tf.keras, "__version__", "2")
    if not version.startswith("2"):
        raise RuntimeError(
            f"tf.keras is Keras {version}; TFX 1.16 needs Keras 2. Set TF_USE_LEGACY_KERAS=1 "
            "before TensorFlow is imported (the Makefile and components.runtime's "
            "prepare_tensorflow_process, which the entry points call, do)."
        )


class CrossLayer(tf.keras.layers.Layer):
    """DCN-v2 cross: x_{l+1} = x0 * (W x_l + b) + x_l."""

    def __init__(self, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.l2 = l2

    def build(self, input_shape):
        self.dense = tf.keras.layers.Dense(
            int(input_shape[0][-1]), kernel_regularizer=tf.keras.regularizers.l2(self.l2)
        )
        super().build(input_shape)

    def call(self, inputs):
        x0, x = inputs
        return x0 * self.dense(x) + x

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def build_model(
    categorical_sizes: Mapping[str, int],
    *,
    embedding_dim: int,
    hidden_units: Sequence[int],
    cross_layers: int,
    dropout: float,
    l2: float,
    learning_rate: float,
    steps_per_execution: int = 1,
) -> tf.keras.Model:
    """A compiled Keras model whose inputs are the transformed features (names ending `_xf`)."""
    require_keras_2()
    missing = set(F.CATEGORICAL_OUTPUTS) - set(categorical_sizes)
    if missing:
        raise ValueError(f"no size for categorical feature(s) {sorted(missing)}")
    inputs: dict[str, tf.keras.Input] = {}
    parts = []
    for name in F.CATEGORICAL_OUTPUTS:
        inputs[name] = tf.keras.Input(shape=(), name=name, dtype=tf.int64)
        embedding = tf.keras.layers.Embedding(
            categorical_sizes[name],
            embedding_dim,
            embeddings_regularizer=tf.keras.regularizers.l2(l2),
            name=f"embed_{name}",
        )(inputs[name])
        parts.append(embedding)
    numerics = []
    for name in F.NUMERIC_OUTPUTS:
        inputs[name] = tf.keras.Input(shape=(), name=name, dtype=tf.float32)
        numerics.append(tf.keras.layers.Reshape((1,))(inputs[name]))
    parts.append(tf.keras.layers.Concatenate(name="numerics")(numerics))
    x0 = tf.keras.layers.Concatenate(name="stack")(parts)

    cross = x0
    for i in range(cross_layers):
        cross = CrossLayer(l2=l2, name=f"cross_{i}")([x0, cross])
    deep = x0
    for i, units in enumerate(hidden_units):
        deep = tf.keras.layers.Dense(
            units,
            activation="relu",
            kernel_regularizer=tf.keras.regularizers.l2(l2),
            name=f"deep_{i}",
        )(deep)
        if dropout:
            deep = tf.keras.layers.Dropout(dropout)(deep)
    joined = tf.keras.layers.Concatenate(name="cross_and_deep")([cross, deep])
    output = tf.keras.layers.Dense(1, activation="sigmoid", name="purchase_probability")(joined)
    model = tf.keras.Model(inputs=inputs, outputs=output, name="dcn_ranker")
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
        loss=tf.keras.losses.BinaryCrossentropy(),
        metrics=[tf.keras.metrics.AUC(name="auc", num_thresholds=2000)],
        steps_per_execution=steps_per_execution,
    )
    return model
