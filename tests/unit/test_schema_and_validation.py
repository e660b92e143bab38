"""The curated schema against the shop's catalogue, and the validation logic on real TFDV statistics."""

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

import contract
from components import validation as V
from contract import SCHEMA_PATH
from contract.schema_tool import build_schema, load_schema, render
from simulator.generate import SimulationOptions, build_shop, generate_span


def test_checked_in_schema_is_what_the_tool_builds():
    assert SCHEMA_PATH.read_text() == render(build_schema()), (
        "run `make schema` and review the diff"
    )


def test_schema_covers_every_column_with_the_catalogue_domains():
    schema = load_schema()
    assert [f.name for f in schema.feature] == list(contract.COLUMNS)
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert domains["device"] == list(contract.DEVICES) and domains["country"] == list(
        contract.COUNTRIES
    )
    label = next(f for f in schema.feature if f.name == contract.LABEL)
    assert "SERVING" in label.not_in_environment


def _stats(frame):
    return tfdv.generate_statistics_from_dataframe(frame)


@pytest.fixture(scope="module")
def spans():
    options = SimulationOptions(
        rows_per_span=6000,  # 600 pages: a page's context is one draw (simulator PAGE_SIZE)
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
    for column in frame.columns:
        converted = pd.to_numeric(frame[column], errors="coerce")
        if converted.notna().sum() == frame[column].notna().sum():
            frame[column] = converted
    anomalies = tfdv.validate_statistics(_stats(frame), load_schema())
    assert {"price", "device"} <= set(anomalies.anomaly_info)
    message = V.gate_message(V.findings(anomalies, "train"), [])
    assert "price" in message and "device" in message and "stops before Transform" in message


def test_label_shift_is_reported_as_label_drift_with_both_rates():
    """A span whose purchase rate is a few times the previous span's: the label drifts, and
    nothing else does (the simulator's label shift changes only the labels)."""
    options = SimulationOptions(rows_per_span=3000, spans=2, label_shift=5.0)
    shop = build_shop(options)
    previous, current = (generate_span(options, span, shop)[0] for span in (1, 2))
    drift = V.detect_drift(_stats(current), _stats(previous), load_schema())
    assert set(drift.anomaly_info) == {contract.LABEL}
    (finding,) = V.findings(drift, "train")
    assert finding.is_drift and finding.kinds == ("COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",)
    rates = (current[contract.LABEL].mean(), previous[contract.LABEL].mean())
    assert rates[0] > 2.5 * rates[1]
    assert f"label rate (share of purchased = 1) {rates[0]:.4f} vs {rates[1]:.4f}" in finding.line()


# The header of TFX's Chicago taxi example CSV (tfx/examples/chicago_taxi_pipeline/data/simple/
# data.csv, in the tfx wheel) and a few rows of its shape.
TAXI_CSV = """pickup_community_area,fare,trip_start_month,trip_start_hour,trip_start_day,\
trip_start_timestamp,pickup_latitude,pickup_longitude,dropoff_latitude,dropoff_longitude,trip_miles,\
pickup_census_tract,dropoff_census_tract,payment_type,company,trip_seconds,dropoff_community_area,tips
,12.45,5,19,6,1400269500,,,,,0.0,,,Credit Card,Chicago Elite Cab Corp.,0,,0.0
,0,3,19,5,1362683700,,,,,0,,,Unknown,Chicago Elite Cab Corp.,300,,0
60,27.05,10,2,3,1380593700,41.836150155,-87.648787952,,,12.6,,,Cash,Taxi Affiliation Services,1380,,0
10,5.85,10,1,2,1382319000,41.985015101,-87.804532006,,,0.0,,,Cash,Taxi Affiliation Services,180,,0
14,16.65,5,7,5,1369897200,41.968069,-87.721559063,,,0.0,,,Cash,Dispatch Taxi Affiliation,1080,,0
"""


def test_another_datasets_file_is_named_as_a_column_mismatch_first(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(TAXI_CSV)
    taxi = pd.read_csv(path)
    anomalies = tfdv.validate_statistics(_stats(taxi), load_schema())
    found = V.findings(anomalies, "train") + V.findings(anomalies, "eval")
    assert len(found) == 2 * (len(contract.COLUMNS) + len(taxi.columns))  # one line each, as before
    first, second, *detail = V.gate_message(found, []).splitlines()
    missing = ", ".join(sorted(contract.COLUMNS))
    unexpected = ", ".join(sorted(taxi.columns))
    assert first == (
        "Data validation gate: the columns do not match the shop's schema: "
        f"missing [{missing}], unexpected [{unexpected}]; "
        "the run stops before Transform and the pushed model is unchanged."
    )
    assert second == f"Per feature: {len(found)} anomalies in 36 feature(s):"
    assert len(detail) == len(found)
    assert "  [train] company (schema: SCHEMA_NEW_COLUMN): New column" in "\n".join(detail)
    assert "  [eval] price (schema: SCHEMA_MISSING_COLUMN): Column is completely missing" in detail


def test_one_renamed_column_is_named_on_the_first_line(spans):
    frame = spans[2].rename(columns={"price": "unit_price"})
    anomalies = tfdv.validate_statistics(_stats(frame), load_schema())
    first = V.gate_message(V.findings(anomalies, "train"), []).splitlines()[0]
    assert "do not match the shop's schema: missing [price], unexpected [unit_price];" in first
