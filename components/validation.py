"""Data validation beyond TFX's ExampleValidator: drift against the previous span, and the gate.

TFX 1.16's ExampleValidator checks statistics against the schema only (its executor never passes
previous-span statistics to TFDV), so drift is checked here with the same curated schema's
drift_comparator thresholds (the label's too: a label shift is reported with both spans' rates),
and the gate reads both anomaly artifacts. When the data's columns are not the shop's (another
dataset's file in a span folder), the gate's first line says which are missing and which unexpected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import tensorflow_data_validation as tfdv
from tensorflow_data_validation.utils.anomalies_util import load_anomalies_binary
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import types
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.features import LABEL

ANOMALIES_FILE = "SchemaDiff.pb"  # the name ExampleValidator writes
STATS_FILE = "FeatureStats.pb"  # the name StatisticsGen writes
DRIFT_PREFIX = "COMPARATOR_"  # TFDV anomaly types of drift/skew comparators
MISSING_COLUMN, NEW_COLUMN = "SCHEMA_MISSING_COLUMN", "SCHEMA_NEW_COLUMN"  # a whole column


def split_names(artifact: types.Artifact) -> list[str]:
    return artifact_utils.decode_split_names(artifact.split_names)


def load_split_statistics(
    artifact: types.Artifact, split: str
) -> statistics_pb2.DatasetFeatureStatisticsList:
    return tfdv.load_stats_binary(
        os.path.join(artifact_utils.get_split_uri([artifact], split), STATS_FILE)
    )


def load_split_anomalies(artifact: types.Artifact, split: str) -> anomalies_pb2.Anomalies:
    return load_anomalies_at(artifact_utils.get_split_uri([artifact], split))


def load_anomalies_at(split_uri: str) -> anomalies_pb2.Anomalies:
    """Anomalies of one split from its folder (e.g. an artifact URI read from ML Metadata + /Split-x)."""
    return load_anomalies_binary(os.path.join(split_uri, ANOMALIES_FILE))


def drift_only(anomalies: anomalies_pb2.Anomalies) -> anomalies_pb2.Anomalies:
    """Keeps the comparator (drift/skew) reasons; schema reasons are ExampleValidator's job."""
    kept = anomalies_pb2.Anomalies()
    kept.CopyFrom(anomalies)
    kept.ClearField("anomaly_info")
    for feature, info in anomalies.anomaly_info.items():
        reasons = [
            r
            for r in info.reason
            if anomalies_pb2.AnomalyInfo.Type.Name(r.type).startswith(DRIFT_PREFIX)
        ]
        if reasons:
            target = kept.anomaly_info[feature]
            target.CopyFrom(info)
            del target.reason[:]
            target.reason.extend(reasons)
    kept.ClearField("dataset_anomaly_info")
    return kept


def detect_drift(
    current: statistics_pb2.DatasetFeatureStatisticsList,
    previous: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
) -> anomalies_pb2.Anomalies:
    """Features whose distribution moved past the schema's drift_comparator thresholds; a drifted
    label's description adds its rate in both spans (a divergence alone does not say how far)."""
    drift = drift_only(tfdv.validate_statistics(current, schema, previous_statistics=previous))
    if LABEL in drift.anomaly_info:
        now, before = label_rate(current), label_rate(previous)
        if now is not None and before is not None:
            info = drift.anomaly_info[LABEL]
            ratio = f" ({now / before:.1f}x)" if before else ""
            info.description = (
                f"label rate (share of {LABEL} = 1) {now:.4f} vs {before:.4f} in the previous "
                f"span{ratio}. {info.description}"
            )
    return drift


def label_rate(statistics: statistics_pb2.DatasetFeatureStatisticsList) -> float | None:
    """The mean of the 0/1 label in a split's statistics (its positive rate), if it is there."""
    for dataset in statistics.datasets[:1]:
        for feature in dataset.features:
            if (list(feature.path.step) or [feature.name]) == [LABEL]:
                if feature.HasField("num_stats"):
                    return float(feature.num_stats.mean)
    return None


@dataclass(frozen=True)
class Finding:
    """One anomalous feature in one split, in words a person can act on."""

    split: str
    feature: str
    kinds: tuple[str, ...]
    description: str
    is_drift: bool

    def line(self) -> str:
        kind = "drift" if self.is_drift else "schema"
        return (
            f"  [{self.split}] {self.feature} ({kind}: {', '.join(self.kinds)}): {self.description}"
        )


def findings(anomalies: anomalies_pb2.Anomalies, split: str) -> list[Finding]:
    out = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        kinds = tuple(anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason)
        out.append(
            Finding(
                split=split,
                feature=feature,
                kinds=kinds,
                description=info.description or "; ".join(r.description for r in info.reason),
                is_drift=all(k.startswith(DRIFT_PREFIX) for k in kinds),
            )
        )
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        kinds = tuple(anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason)
        out.append(Finding(split, "<dataset>", kinds, info.description, False))
    return out


class DataValidationError(RuntimeError):
    """The gate found anomalies: nothing after it runs, the pushed model stays as it was."""


def column_mismatch(found: list[Finding]) -> tuple[list[str], list[str]]:
    """(schema columns absent from the data, data columns absent from the schema), any split."""
    missing = sorted({f.feature for f in found if MISSING_COLUMN in f.kinds})
    unexpected = sorted({f.feature for f in found if NEW_COLUMN in f.kinds})
    return missing, unexpected


def gate_message(blocking: list[Finding], reported: list[Finding]) -> str:
    features = sorted({f.feature for f in blocking})
    stops = "the run stops before Transform and the pushed model is unchanged."
    anomalies = f"{len(blocking)} anomal{'y' if len(blocking) == 1 else 'ies'}"
    missing, unexpected = column_mismatch(blocking)
    if missing or unexpected:
        lines = [
            "Data validation gate: the columns do not match the shop's schema: "
            f"missing [{', '.join(missing)}], unexpected [{', '.join(unexpected)}]; {stops}",
            f"Per feature: {anomalies} in {len(features)} feature(s):",
        ]
    else:
        lines = [f"Data validation gate: {anomalies} in feature(s) {', '.join(features)}; {stops}"]
    lines += [f.line() for f in blocking]
    if reported:
        lines += ["Reported, not blocking:", *[f.line() for f in reported]]
    return "\n".join(lines)


def write_anomalies(
    artifact: types.Artifact, split: str, anomalies: anomalies_pb2.Anomalies
) -> None:
    directory = artifact_utils.get_split_uri([artifact], split)
    io_utils.write_bytes_file(
        os.path.join(directory, ANOMALIES_FILE), anomalies.SerializeToString()
    )
