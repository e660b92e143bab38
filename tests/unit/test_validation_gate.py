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
