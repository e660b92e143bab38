"""preprocessing_fn on tiny data with tf.Transform's Beam implementation, the model, and the
exported signatures (both must score the same rows the same)."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import metadata_io, schema_utils

import contract
from components import features as F
from components.preprocessing import DEFAULT_PARAMS, categorical_sizes, preprocessing_fn
from components.signatures import OUTPUT_KEY, RAW_SIGNATURE, export_serving_model
from components.training import TrainData, train
from contract.schema_tool import load_schema
from settings import TrainingConfig
from simulator.generate import SimulationOptions, generate_span


@pytest.fixture(scope="module")
def frame():
    return generate_span(SimulationOptions(rows_per_span=1500), 1)[0]


def _instances(frame):
    rows = frame.to_dict("records")
    return [{k: [v.encode() if isinstance(v, str) else v] for k, v in row.items()} for row in rows]


@pytest.fixture(scope="module")
def transformed(frame, tmp_path_factory):
    """Runs analyze + transform with Beam, writes the transform graph like TFX's Transform does."""
    out = tmp_path_factory.mktemp("tft")
    metadata = schema_utils.schema_as_feature_spec(load_schema())
    raw_metadata = tft.DatasetMetadata.from_feature_spec(metadata.feature_spec)
    with tft_beam.Context(temp_dir=str(out / "tmp"), force_tf_compat_v1=False):
        (data, _), transform_fn = (
            _instances(frame),
            raw_metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn, output_record_batches=False)
        _ = transform_fn | tft_beam.WriteTransformFn(str(out))
    metadata_io.write_metadata(raw_metadata, str(out / tft.TFTransformOutput.RAW_METADATA_DIR))
    return data, tft.TFTransformOutput(str(out))


def test_transformed_features_are_in_range(transformed):
    data, output = transformed
    sizes = categorical_sizes(output, DEFAULT_PARAMS)
    assert set(sizes) == set(F.CATEGORICAL_OUTPUTS)
    assert sizes[F.xf("device")] == 3 + 1  # vocabulary + one OOV bucket
    for name in F.CATEGORICAL_OUTPUTS:
        values = np.array([row[name] for row in data])
        assert values.min() >= 0 and values.max() < sizes[name], name
    for name in F.NUMERIC_OUTPUTS:
        values = np.array([row[name] for row in data], dtype=float)
        assert abs(values.mean()) < 0.05 and 0.9 < values.std() < 1.1, name  # z-scored
    assert set(np.unique([row[F.LABEL] for row in data])) <= {0, 1}


def _dataset(data, batch, repeat):
    features = {
        name: np.array([row[name] for row in data])
        for name in F.CATEGORICAL_OUTPUTS + F.NUMERIC_OUTPUTS
    }
    labels = np.array([row[F.LABEL] for row in data])
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    return (dataset.shuffle(2000, seed=1).repeat() if repeat else dataset).batch(batch)


@pytest.fixture(scope="module")
def trained(transformed):
    data, output = transformed
    training = TrainingConfig(
        train_steps=60, eval_steps=5, batch_size=64, hidden_units=[16], embedding_dim=4
    )
    train_data = TrainData(
        train=_dataset(data, 64, True),
        eval=_dataset(data, 64, False),
        categorical_sizes=categorical_sizes(output, DEFAULT_PARAMS),
    )
    return train(training, train_data, verbose=0), output


def test_train_core_learns_signal(trained):
    result, _ = trained
    assert set(result.metrics) == {"loss", "auc"}
    assert result.metrics["auc"] > 0.6  # the training rows: it must at least fit them
    assert len(result.history["loss"]) == 10


def test_the_training_section_types_its_values_and_rejects_unknown_names():
    """train() takes the config's TrainingConfig itself; JSON from a step's parameters or a
    worker's flags is validated into it."""
    t = TrainingConfig.model_validate(
        {"learning_rate": "0.01", "hidden_units": [32, 16], "train_steps": 5.0}
    )
    assert t.learning_rate == 0.01 and t.hidden_units == [32, 16] and t.train_steps == 5
    with pytest.raises(ValueError, match="bogus"):
        TrainingConfig.model_validate({"bogus": 1})


def test_signatures_score_raw_json_and_serialized_examples_the_same(trained, frame, tmp_path):
    result, output = trained
    export_serving_model(result.model, output, str(tmp_path / "model"))
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    assert {"serving_default", RAW_SIGNATURE} <= set(loaded.signatures)
    rows = frame.head(8)
    # JSON-friendly path: what a REST client sends (json round trip: plain lists).
    payload = json.loads(
        json.dumps(rows.drop(columns=list(contract.NOT_MODEL_INPUTS)).to_dict(orient="list"))
    )
    raw_spec = loaded.signatures[RAW_SIGNATURE].structured_input_signature[1]
    raw = {k: tf.constant(v, dtype=raw_spec[k].dtype) for k, v in payload.items()}
    raw_scores = loaded.signatures[RAW_SIGNATURE](**raw)[OUTPUT_KEY].numpy()
    # tf.Example path: what TF Serving, TFMA and BulkInferrer send.
    serialized = []
    for row in rows.to_dict("records"):
        feature = {}
        for key, value in row.items():
            if isinstance(value, str):
                feature[key] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[value.encode()])
                )
            elif isinstance(value, (int, np.integer)):
                feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
            else:
                feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        serialized.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    example_scores = loaded.signatures["serving_default"](examples=tf.constant(serialized))[
        OUTPUT_KEY
    ].numpy()
    assert raw_scores.shape == (8,)
    assert np.all((raw_scores > 0) & (raw_scores < 1))
    np.testing.assert_allclose(raw_scores, example_scores, rtol=1e-5)
