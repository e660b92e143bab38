"""Local runner: LocalDagRunner + Beam DirectRunner + SQLite ML Metadata under one output folder."""

from __future__ import annotations

import os
import time

from tfx import v1 as tfx

from pipelines.pipeline import create_pipeline
from pipelines.progress import StageProgress, stage_progress
from pipelines.summary import RunSummary, summarize
from settings import PipelineConfig


def run_local(
    config: PipelineConfig,
    *,
    verbose: bool = False,
    progress: StageProgress | None = None,
    run_options=None,
) -> tuple[RunSummary, float]:
    """Runs the pipeline; on failure the summary carries the error and the exception is re-raised.
    `progress` replaces the default stage printer (the benchmark's meter is one); `run_options`
    (tfx.orchestration.pipeline.RunOptions) runs some stages only."""
    os.makedirs(config.output_root, exist_ok=True)
    pipeline = create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.abspath(config.metadata_path)
        ),
    )
    started = time.perf_counter()
    with stage_progress(verbose=verbose, handler=progress):
        tfx.orchestration.LocalDagRunner().run(pipeline, run_options=run_options)
    return summarize(config), time.perf_counter() - started
