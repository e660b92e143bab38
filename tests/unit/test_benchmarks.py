"""Smoke runs of the benchmark scripts on tiny sizes, so they cannot rot. No timing is asserted:
the figures they print are measurements for BENCHMARKS/README, not pass/fail criteria."""

import json
import os
import subprocess
import sys

from pipelines.config import REPO_ROOT


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
