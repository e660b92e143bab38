"""Local runner: LocalDagRunner + Beam DirectRunner + SQLite ML Metadata under one output folder."""

from __future__ import annotations

import os
import time

from tfx import v1 as tfx

from pipelines.config import PipelineConfig
from pipelines.pipeline import create_pipeline
from pipelines.progress import stage_progress
from pipelines.summary import RunSummary, summarize


def run_local(config: PipelineConfig, *, verbose: bool = False) -> tuple[RunSummary, float]:
    """Runs the pipeline; on failure the summary carries the error and the exception is re-raised."""
    os.makedirs(config.output_root, exist_ok=True)
    pipeline = create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.abspath(config.metadata_path)
        ),
    )
    started = time.perf_counter()
    with stage_progress(verbose=verbose):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return summarize(config), time.perf_counter() - started
