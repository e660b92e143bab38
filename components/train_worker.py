"""`python -m components.train_worker`: one training process, the same train_and_export as run_fn.

This is what every replica of a multi-worker job runs: a TFJob's pods on Kubeflow, or the processes
components.local_workers starts on this machine. Its flags are components.worker_flags': the
training, transform and distribution sections as JSON, validated again here; the cluster comes
from TF_CONFIG and only the chief writes the model.
"""

from __future__ import annotations

import json

from components.filesystems import exit_process, register_filesystems
from components.runtime import prepare_tensorflow_process
from components.worker_flags import parse_args, worker_sections


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_tensorflow_process()  # before TensorFlow loads (tensorflow-io below imports it)
    register_filesystems(vars(args).values())  # inputs and outputs may be on s3://
    from components.trainer import train_and_export

    training, transform, distribution = worker_sections(args)
    result = train_and_export(
        training,
        distribution,
        transform,
        transform_output=args.transform_output,
        train_files=args.train_files,
        eval_files=args.eval_files,
        serving_model_dir=args.serving_model_dir,
        model_run_dir=args.model_run_dir,
    )
    print(json.dumps({"eval": result.metrics, "seconds": round(result.seconds, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    exit_process(main())
