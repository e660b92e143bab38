"""Smoke runs of the benchmark scripts on tiny sizes, so they cannot rot. No timing is asserted:
the figures they print are measurements for docs/benchmarks.md, not pass/fail criteria. The
pipeline-scaling run executes two pipelines (ours and TFX's taxi): it is marked `e2e`, which
tests/conftest.py lets win over this folder's `unit`."""

import json
import os
import subprocess
import sys

import pytest
from repo_paths import REPO_ROOT


def test_training_throughput_reports_both_inputs_and_their_ratio(tmp_path):
    out = tmp_path / "throughput.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.training_throughput", "--rows", "2000",
         "--steps", "4", "--batch", "64", "--warmup", "2", "--rounds", "2", "--json", str(out)],
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
    )  # fmt: skip
    result = json.loads(out.read_text())
    figures = result["examples_per_s"]
    assert figures["tfrecord"] > 0 and figures["in_memory"] > 0
    assert result["ratio_tfrecord_to_memory"] == round(
        figures["tfrecord"] / figures["in_memory"], 3
    )
    assert "CPU" in result["devices"]


def test_stage_groups_add_up_to_the_wall_time_and_slopes_are_per_extra_row():
    from benchmarks.pipeline_scaling import group_stages, slopes

    def stage(name, seconds, peak):
        return {"name": name, "seconds": seconds, "peak_rss_gb": peak}

    stages = [
        stage("BaselineExampleGen", 2.0, 1.0), stage("CsvExampleGen", 3.0, 1.2),
        stage("StatisticsGen", 4.0, 1.1), stage("Transform", 5.0, 1.5),
        stage("Trainer", 6.0, 1.4), stage("Evaluator", 7.0, 1.3), stage("Pusher", 0.5, 1.3),
    ]  # fmt: skip
    groups = group_stages(stages, wall_s=28.0)
    assert groups["ExampleGen"] == {"seconds": 5.0, "peak_rss_gb": 1.2}
    assert groups["rest"]["seconds"] == 0.5 + 0.5  # Pusher + the runner's time between stages
    assert sum(g["seconds"] for g in groups.values()) == 28.0
    small = {"rows": 1000, "variant": "after", "wall_s": 28.0, "groups": groups}
    large_groups = {k: {**v, "seconds": v["seconds"] * 2} for k, v in groups.items()}
    large = {"rows": 3000, "variant": "after", "wall_s": 56.0, "groups": large_groups}
    (slope,) = slopes([large, small])
    assert (slope["from_rows"], slope["to_rows"]) == (1000, 3000)
    assert slope["us_per_row"]["ExampleGen"] == 1e6 * 5.0 / 2000
    assert slope["us_per_row"]["total"] == 1e6 * 28.0 / 2000


@pytest.mark.e2e
def test_pipeline_scaling_measures_stages_beam_modes_and_the_taxi_peer(tmp_path):
    """The whole script on 300 rows: our pipeline, a partial re-run of StatisticsGen in each Beam
    mode, and TFX's taxi pipeline on its first 300 rows (which our 300-row run is compared with)."""
    out = tmp_path / "scaling.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline_scaling", "--sizes", "300",
         "--variants", "after", "--beam-stages", "StatisticsGen", "--peer-rows", "300",
         "--set", "training.train_steps=5", "--work", str(tmp_path / "work"), "--json", str(out)],
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["memory_gb"] > 0
    (run,) = report["runs"]
    assert (run["rows"], run["variant"]) == (300, "after")
    stages = {stage["name"] for stage in run["stages"]}
    assert {"CsvExampleGen", "BaselineExampleGen", "Transform", "Trainer", "Evaluator"} <= stages
    for group in ("ExampleGen", "StatisticsGen", "Transform", "Trainer", "Evaluator"):
        assert run["groups"][group]["seconds"] > 0 and run["groups"][group]["peak_rss_gb"] > 0.1
    assert abs(sum(g["seconds"] for g in run["groups"].values()) - run["wall_s"]) < 0.05
    assert run["peak_rss_gb"] >= max(g["peak_rss_gb"] for g in run["groups"].values())
    beam = report["beam_modes"]
    assert sorted(m["mode"] for m in beam["runs"]) == ["in_memory", "multi_processing_2"]
    times = {m["mode"]: m["seconds"] for m in beam["runs"]}
    assert beam["speedup_multi_processing_2"]["StatisticsGen"] == round(
        times["in_memory"] / times["multi_processing_2"], 2
    )
    taxi, ours = report["peer"]["taxi"], report["peer"]["ours"]
    assert taxi["rows"] == 300 and ours == run
    assert {"CsvExampleGen", "SchemaGen", "Transform", "Trainer", "Evaluator"} <= {
        stage["name"] for stage in taxi["stages"]
    }
    from benchmarks.pipeline_scaling import markdown  # docs/benchmarks.md's tables from this JSON

    tables = markdown(report)
    assert "| 300 | after |" in tables and "| TFX taxi | 300 |" in tables
    assert "| StatisticsGen |" in tables


@pytest.mark.e2e
def test_stream_throughput_measures_events_per_second_and_lag_through_the_real_broker(tmp_path):
    """One consumer, a 300-impression day, saturated and paced (RabbitMQ and Redis on loopback):
    the figures exist and are positive; their size is docs/benchmarks.md's business."""
    out = tmp_path / "stream.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.stream_throughput", "--rows", "300",
         "--consumers", "1", "--paced-rate", "1000", "--json", str(out)],
        check=True,
        cwd=REPO_ROOT,
    )  # fmt: skip
    figures = json.loads(out.read_text())["figures"]["1"]
    assert figures["events_per_s"] > 0
    assert 0 < figures["paced_lag_p50_ms"] <= figures["paced_lag_p99_ms"]
