"""Custom TFX components of the validation stage (Python-function components, so they compile for
Kubeflow like any other step: the image runs them by import path)."""

import os

from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies, ExampleStatistics, Schema
from tfx.utils import io_utils

from components import validation as V

SCHEMA_FILE = "schema.pbtxt"  # the name ImportSchemaGen and SchemaGen write


@component
def DriftValidator(
    statistics: InputArtifact[ExampleStatistics],
    baseline_statistics: InputArtifact[ExampleStatistics],
    schema: InputArtifact[Schema],
    anomalies: OutputArtifact[ExampleAnomalies],
) -> None:
    """Compares each split's statistics with the same split of the previous span."""
    schema_proto = _read_schema(schema)
    baseline_splits = V.split_names(baseline_statistics)
    splits = [s for s in V.split_names(statistics) if s in baseline_splits]
    anomalies.split_names = artifact_utils.encode_split_names(splits)
    for split in splits:
        result = V.detect_drift(
            V.load_split_statistics(statistics, split),
            V.load_split_statistics(baseline_statistics, split),
            schema_proto,
        )
        V.write_anomalies(anomalies, split, result)


@component
def ValidationGate(
    schema_anomalies: InputArtifact[ExampleAnomalies],
    drift_anomalies: InputArtifact[ExampleAnomalies] = None,  # absent on the first span
    block_on_drift: Parameter[bool] = False,
) -> None:
    """Stops the run (raises) when the data has anomalies; drift blocks only if configured."""
    found = [
        f
        for s in V.split_names(schema_anomalies)
        for f in V.findings(V.load_split_anomalies(schema_anomalies, s), s)
    ]
    if drift_anomalies is not None:
        found += [
            f
            for s in V.split_names(drift_anomalies)
            for f in V.findings(V.load_split_anomalies(drift_anomalies, s), s)
        ]
    blocking = [f for f in found if block_on_drift or not f.is_drift]
    reported = [f for f in found if f not in blocking]
    for finding in reported:
        print(f"ValidationGate: drift reported, not blocking:{finding.line()}", flush=True)
    if blocking:
        raise V.DataValidationError(V.gate_message(blocking, reported))


def _read_schema(schema: Schema) -> schema_pb2.Schema:
    return io_utils.SchemaReader().read(os.path.join(schema.uri, SCHEMA_FILE))
