"""`python -m components.train_worker`: one training process, the same train_and_export as run_fn.

This is what every replica of a multi-worker job runs: a TFJob's pods on Kubeflow, or the processes
components.local_workers starts on this machine. The strategy comes from --distribution (JSON of
DistributionConfig) and the cluster from TF_CONFIG; only the chief writes the model.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from components.filesystems import exit_process, register_filesystems

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def worker_args(
    fn_args: Any, hparams: dict, transform: dict | None, distribution: dict
) -> list[str]:
    """This entry point's flags for a Trainer's inputs and outputs: what local workers and TFJob
    pods run (the paths are the same in the pods: shared storage)."""
    return [
        "--transform-output", fn_args.transform_output,
        "--train-files", *_as_list(fn_args.train_files),
        "--eval-files", *_as_list(fn_args.eval_files),
        "--serving-model-dir", fn_args.serving_model_dir,
        "--model-run-dir", fn_args.model_run_dir,
        "--hparams", json.dumps(hparams),
        "--transform-params", json.dumps(transform or {}),
        "--distribution", json.dumps({**distribution, "strategy": "multi_worker"}),
    ]  # fmt: skip


def _as_list(files: str | list[str]) -> list[str]:
    return [files] if isinstance(files, str) else list(files)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="components.train_worker", description=__doc__)
    parser.add_argument("--transform-output", required=True, help="Transform's transform_graph")
    parser.add_argument("--train-files", required=True, nargs="+", help="transformed train globs")
    parser.add_argument("--eval-files", required=True, nargs="+", help="transformed eval globs")
    parser.add_argument("--serving-model-dir", required=True)
    parser.add_argument("--model-run-dir", required=True)
    parser.add_argument("--hparams", default="{}", help="JSON of HParams fields")
    parser.add_argument("--transform-params", default="{}", help="JSON of TransformConfig fields")
    parser.add_argument("--distribution", default="{}", help="JSON of DistributionConfig fields")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    register_filesystems(vars(args).values())  # inputs and outputs may be on s3://
    from components.trainer import train_and_export
    from components.training import HParams

    result = train_and_export(
        HParams.from_mapping(json.loads(args.hparams)),
        json.loads(args.distribution),
        transform_output=args.transform_output,
        train_files=args.train_files,
        eval_files=args.eval_files,
        transform_params=json.loads(args.transform_params) or None,
        serving_model_dir=args.serving_model_dir,
        model_run_dir=args.model_run_dir,
    )
    print(json.dumps({"eval": result.metrics, "seconds": round(result.seconds, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    exit_process(main())
