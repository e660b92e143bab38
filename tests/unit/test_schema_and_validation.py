"""The curated schema against the shop's catalogue, and the validation logic on real TFDV statistics."""

import pytest
import tensorflow_data_validation as tfdv

from components import validation as V
from pipelines.config import SCHEMA_PATH
from pipelines.schema_tool import build_schema, load_schema, render
from simulator import catalog
from simulator.generate import SimulationOptions, build_shop, generate_span


def test_checked_in_schema_is_what_the_tool_builds():
    assert SCHEMA_PATH.read_text() == render(build_schema()), (
        "run `make schema` and review the diff"
    )


def test_schema_covers_every_column_with_the_catalogue_domains():
    schema = load_schema()
    assert [f.name for f in schema.feature] == list(catalog.COLUMNS)
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert domains["device"] == list(catalog.DEVICES) and domains["country"] == list(
        catalog.COUNTRIES
    )
    label = next(f for f in schema.feature if f.name == catalog.LABEL)
    assert "SERVING" in label.not_in_environment


def _stats(frame):
    return tfdv.generate_statistics_from_dataframe(frame)


@pytest.fixture(scope="module")
def spans():
    options = SimulationOptions(
        rows_per_span=3000,
        spans=3,
        drift=0.6,
        drift_from_span=3,
        corrupt_fraction=0.01,
        corrupt_spans=(4,),
    )
    shop = build_shop(options)
    return {span: generate_span(options, span, shop)[0] for span in (1, 2, 3, 4)}


def test_clean_span_has_no_schema_anomalies_and_no_drift(spans):
    schema = load_schema()
    assert not tfdv.validate_statistics(_stats(spans[2]), schema).anomaly_info
    assert not V.detect_drift(_stats(spans[2]), _stats(spans[1]), schema).anomaly_info


def test_drifted_span_is_reported_with_its_features(spans):
    drift = V.detect_drift(_stats(spans[3]), _stats(spans[2]), load_schema())
    assert {"device", "referrer"} <= set(drift.anomaly_info)
    found = V.findings(drift, "train")
    assert all(f.is_drift for f in found)


def test_corrupt_span_anomalies_name_the_bad_features(spans):
    frame = spans[4].astype(str).replace({"": None})
    # Read back as a CSV reader would: numbers where parseable, strings elsewhere.
    import pandas as pd

    for column in frame.columns:
        converted = pd.to_numeric(frame[column], errors="coerce")
        if converted.notna().sum() == frame[column].notna().sum():
            frame[column] = converted
    anomalies = tfdv.validate_statistics(_stats(frame), load_schema())
    assert {"price", "device"} <= set(anomalies.anomaly_info)
    message = V.gate_message(V.findings(anomalies, "train"), [])
    assert "price" in message and "device" in message and "stops before Transform" in message
