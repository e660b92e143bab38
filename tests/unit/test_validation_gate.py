"""The gate component on real anomaly artifacts: schema anomalies always stop it, drift only when asked."""

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from components import validation as V
from components.validation_components import ValidationGate


def _artifact(tmp_path, name, per_split):
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path / name)
    artifact.split_names = artifact_utils.encode_split_names(list(per_split))
    for split, anomalies in per_split.items():
        (tmp_path / name / f"Split-{split}").mkdir(parents=True)
        V.write_anomalies(artifact, split, anomalies)
    return artifact


def _anomalies(feature, kind, text):
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info[feature]
    info.description = text
    reason = info.reason.add()
    reason.type = anomalies_pb2.AnomalyInfo.Type.Value(kind)
    reason.description = text
    return anomalies


def test_clean_data_passes(tmp_path):
    clean = _artifact(
        tmp_path, "schema", {"train": anomalies_pb2.Anomalies(), "eval": anomalies_pb2.Anomalies()}
    )
    ValidationGate.test_call(schema_anomalies=clean, drift_anomalies=None, block_on_drift=True)


def test_schema_anomaly_stops_the_run_and_names_the_feature(tmp_path):
    bad = _artifact(
        tmp_path,
        "schema",
        {"train": _anomalies("price", "UNEXPECTED_DATA_TYPE", "Expected FLOAT, got BYTES")},
    )
    with pytest.raises(
        V.DataValidationError, match=r"feature\(s\) price.*\n.*UNEXPECTED_DATA_TYPE"
    ):
        ValidationGate.test_call(schema_anomalies=bad, drift_anomalies=None, block_on_drift=False)


def test_drift_is_reported_and_blocks_only_when_configured(tmp_path, capsys):
    clean = _artifact(tmp_path, "schema", {"train": anomalies_pb2.Anomalies()})
    drift = _artifact(
        tmp_path, "drift", {"train": _anomalies("device", "COMPARATOR_L_INFTY_HIGH", "Linfty 0.34")}
    )
    ValidationGate.test_call(schema_anomalies=clean, drift_anomalies=drift, block_on_drift=False)
    assert "drift reported, not blocking" in capsys.readouterr().out
    with pytest.raises(V.DataValidationError, match="device"):
        ValidationGate.test_call(schema_anomalies=clean, drift_anomalies=drift, block_on_drift=True)


def test_columns_of_another_dataset_are_named_before_the_per_feature_detail(tmp_path):
    """What TFDV reports for another dataset's CSV: each shop column dropped, each of its own new."""
    per_split = {}
    for split in ("train", "eval"):
        anomalies = anomalies_pb2.Anomalies()
        for feature, kind, text in (
            ("price", "SCHEMA_MISSING_COLUMN", "Column is completely missing"),
            ("device", "SCHEMA_MISSING_COLUMN", "Column is completely missing"),
            ("fare", "SCHEMA_NEW_COLUMN", "New column (column in data but not in schema)"),
        ):
            anomalies.anomaly_info[feature].CopyFrom(
                _anomalies(feature, kind, text).anomaly_info[feature]
            )
        per_split[split] = anomalies
    bad = _artifact(tmp_path, "schema", per_split)
    with pytest.raises(V.DataValidationError) as stopped:
        ValidationGate.test_call(schema_anomalies=bad, drift_anomalies=None, block_on_drift=False)
    first, second, *detail = str(stopped.value).splitlines()
    assert first.startswith(
        "Data validation gate: the columns do not match the shop's schema: "
        "missing [device, price], unexpected [fare]; the run stops before Transform"
    )
    assert second == "Per feature: 6 anomalies in 3 feature(s):" and len(detail) == 6
