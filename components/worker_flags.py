"""The command line of `python -m components.train_worker`, in one place for both its sides.

The launchers (run_fn's local worker processes and TFJob, components.trainer) build it with
worker_args(); the worker (components.train_worker) reads it with parse_args() and
worker_sections(). The Trainer's inputs and outputs travel as paths (the same in every pod: shared
storage), the training, transform and distribution sections as their models' JSON, validated
again on the worker's side: a flag left out, or `{}`, means the section's own defaults.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from settings import DistributionConfig, TrainingConfig, TransformConfig

PROG = "components.train_worker"


def worker_args(
    fn_args: Any,
    training: TrainingConfig,
    transform: TransformConfig,
    distribution: DistributionConfig,
) -> list[str]:
    """The worker's flags for a Trainer's inputs and outputs: what local workers and TFJob pods
    run, each under MultiWorkerMirroredStrategy (TF_CONFIG names the cluster)."""
    multi_worker = DistributionConfig.model_validate(
        {**distribution.model_dump(), "strategy": "multi_worker"}
    )
    return [
        "--transform-output", fn_args.transform_output,
        "--train-files", *_as_list(fn_args.train_files),
        "--eval-files", *_as_list(fn_args.eval_files),
        "--serving-model-dir", fn_args.serving_model_dir,
        "--model-run-dir", fn_args.model_run_dir,
        "--hparams", json.dumps(training.model_dump(mode="json")),
        "--transform-params", json.dumps(transform.model_dump(mode="json")),
        "--distribution", json.dumps(multi_worker.model_dump(mode="json")),
    ]  # fmt: skip


def _as_list(files: str | list[str]) -> list[str]:
    return [files] if isinstance(files, str) else list(files)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="One training process of a multi-worker job: the same train_and_export as "
        "the Trainer's run_fn, the cluster from TF_CONFIG; only the chief writes the model.",
    )
    parser.add_argument("--transform-output", required=True, help="Transform's transform_graph")
    parser.add_argument("--train-files", required=True, nargs="+", help="transformed train globs")
    parser.add_argument("--eval-files", required=True, nargs="+", help="transformed eval globs")
    parser.add_argument("--serving-model-dir", required=True)
    parser.add_argument("--model-run-dir", required=True)
    parser.add_argument(
        "--hparams", default="{}", help="JSON of the training section (TrainingConfig)"
    )
    parser.add_argument(
        "--transform-params", default="{}", help="JSON of the transform section (TransformConfig)"
    )
    parser.add_argument(
        "--distribution", default="{}", help="JSON of the distribution section (DistributionConfig)"
    )
    return parser.parse_args(argv)


def worker_sections(
    args: argparse.Namespace,
) -> tuple[TrainingConfig, TransformConfig, DistributionConfig]:
    """The three sections of the flags, validated (a bad value fails naming its field)."""
    return (
        TrainingConfig.model_validate(json.loads(args.hparams)),
        TransformConfig.model_validate(json.loads(args.transform_params)),
        DistributionConfig.model_validate(json.loads(args.distribution)),
    )
