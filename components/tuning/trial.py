"""`python -m components.tuning.trial`: one Katib trial, trained by the same train() as run_fn.

Every TrainingConfig field is a flag of its own name (`--learning_rate=0.003`), which is what the
Experiment's trial template fills in from Katib's trialParameters. The trial trains on the
transformed train split minus every n-th record, validates on those, and prints the objective
after every epoch as `auc=<value>` lines: the format Katib's StdOut metrics collector parses
(`([\\w|-]+)\\s*=\\s*([+-]?\\d*(\\.\\d+)?([Ee][+-]?\\d+)?)`), read the same way by the local backend.
"""

from __future__ import annotations

import argparse
import os
import re

from components.filesystems import exit_process, register_filesystems
from components.runtime import prepare_tensorflow_process
from settings import TrainingConfig

OBJECTIVE, LOSS = "auc", "loss"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="components.tuning.trial", description=__doc__)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--transformed-examples", help="Transform's transformed_examples URI")
    data.add_argument(
        "--latest-under", help="a pipeline root: use its newest Transform outputs (standalone)"
    )
    parser.add_argument("--transform-graph", help="Transform's transform_graph URI")
    parser.add_argument("--transform-params", default="", help="k=v,... of TransformConfig")
    parser.add_argument("--validation-every", type=int, default=5)
    for name in TrainingConfig.model_fields:
        parser.add_argument(f"--{name}", help=f"TrainingConfig.{name}")
    args = parser.parse_args(argv)
    if args.transformed_examples and not args.transform_graph:
        parser.error("--transformed-examples needs --transform-graph")
    return args


def latest_transform_outputs(root: str) -> tuple[str, str]:
    """(transformed_examples, transform_graph) of the newest Transform run under `root`.

    Works for both layouts: the local runner's <Transform>/<output>/<execution id>/ and a KFP
    launcher's <...>/<output>/ (each a directory holding both outputs)."""
    import tensorflow as tf

    best: tuple[float, str, str] | None = None
    for directory, subdirs, _ in tf.io.gfile.walk(root):
        names = {d.rstrip("/") for d in subdirs}
        if not {"transform_graph", "transformed_examples"} <= names:
            continue
        graph_root = os.path.join(directory, "transform_graph")
        examples_root = os.path.join(directory, "transformed_examples")
        if tf.io.gfile.exists(os.path.join(graph_root, "transform_fn")):
            pairs = [(graph_root, examples_root)]
        else:  # one numbered folder per execution
            ids = [d.rstrip("/") for d in tf.io.gfile.listdir(graph_root)]
            pairs = [
                (os.path.join(graph_root, i), os.path.join(examples_root, i))
                for i in ids
                if tf.io.gfile.exists(os.path.join(examples_root, i))
            ]
        for graph, examples in pairs:
            fn = os.path.join(graph, "transform_fn")
            if tf.io.gfile.exists(fn):
                mtime = tf.io.gfile.stat(fn).mtime_nsec
                if best is None or mtime > best[0]:
                    best = (mtime, examples, graph)
    if best is None:
        raise FileNotFoundError(f"no Transform outputs under {root}")
    return best[1], best[2]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_tensorflow_process()  # before TensorFlow loads (tensorflow-io below imports it)
    register_filesystems(vars(args).values())  # the transformed examples may be on s3://
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.preprocessing import categorical_sizes, params_from
    from components.training import TrainData, train
    from components.transformed_data import holdout_datasets
    from components.tuning.search_space import typed_assignments

    given = {
        name: getattr(args, name)
        for name in TrainingConfig.model_fields
        if getattr(args, name) is not None
    }
    # The flags Katib and fixed_trial_args give, typed; a field without a flag keeps its default.
    hparams = TrainingConfig.model_validate(typed_assignments(given))
    if args.latest_under:
        examples, graph = latest_transform_outputs(args.latest_under)
    else:
        examples, graph = args.transformed_examples, args.transform_graph
    transform_params = {
        k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", args.transform_params or "")
    }
    tf_transform_output = tft.TFTransformOutput(graph)
    train_ds, validation = holdout_datasets(
        os.path.join(examples, "Split-train", "*"),
        tf_transform_output,
        hparams.batch_size,
        every=args.validation_every,
        seed=hparams.seed,
    )
    data = TrainData(
        train=train_ds,
        eval=validation,
        categorical_sizes=categorical_sizes(tf_transform_output, params_from(transform_params)),
    )
    print(f"trial: {hparams} on {examples}", flush=True)

    class ReportObjective(tf.keras.callbacks.Callback):
        """Evaluates the held-out share after each epoch and prints it for the collector."""

        def on_epoch_end(self, epoch, logs=None):
            result = self.model.evaluate(validation, return_dict=True, verbose=0)
            print(f"epoch {epoch + 1}:", flush=True)
            print(f"{OBJECTIVE}={result[OBJECTIVE]:.6f}", flush=True)
            print(f"{LOSS}={result[LOSS]:.6f}", flush=True)

    # Every validation batch counts (take() with a count above the batches takes them all).
    result = train(
        TrainingConfig.model_validate({**hparams.model_dump(), "eval_steps": 2**31 - 1}),
        data,
        callbacks=[ReportObjective()],
        verbose=0,
    )
    print(f"trial done in {result.seconds:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    exit_process(main())
