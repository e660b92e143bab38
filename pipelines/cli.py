"""`shop-pipeline`: run the pipeline locally, or compile it for Kubeflow Pipelines and submit it."""

from __future__ import annotations

import argparse
import os
import sys
import time

from components.runtime import prepare_tensorflow_process
from settings import ConfigError, add_config_args, load_config


def main(argv: list[str] | None = None) -> int:
    # TF_USE_LEGACY_KERAS and the warning filters before anything can import TensorFlow.
    prepare_tensorflow_process(import_tensorflow=False)
    parser = argparse.ArgumentParser(prog="shop-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the whole pipeline locally (LocalDagRunner)")
    add_config_args(run)
    run.add_argument("--verbose", action="store_true", help="show TFX's full log")
    rollback = commands.add_parser(
        "rollback",
        help="an explicit rollback: run on an older span and push its model as the newest "
        "version, over one trained on newer data (docs/data-versions.md)",
    )
    add_config_args(rollback)
    rollback.add_argument(
        "--to-span",
        type=int,
        required=True,
        metavar="N",
        help="the span to go back to (sets data.span and pusher.rollback_to_span)",
    )
    rollback.add_argument("--verbose", action="store_true", help="show TFX's full log")
    score = commands.add_parser(
        "score",
        help="batch inference: score a span's CSVs with a pushed model (Beam, beam.runner)",
    )
    add_config_args(score)
    score.add_argument(
        "--span", type=int, help="span to score (default: data.span, else the newest span-N)"
    )
    score.add_argument(
        "--model-version",
        metavar="VERSION",
        help="pushed version under serving_dir to score with (default: the newest)",
    )
    show = commands.add_parser("config", help="print the resolved configuration")
    add_config_args(show)
    compile_ = commands.add_parser(
        "compile", help="write the KFP v2 pipeline package (YAML) for the Kubeflow Pipelines UI"
    )
    add_config_args(compile_, default="kubeflow")
    compile_.add_argument("--output", help="package path (default: kubeflow.package_path)")
    manifest = commands.add_parser(
        "katib-manifest", help="write the Katib Experiment of the tuning section (YAML)"
    )
    add_config_args(manifest, default="kubeflow")
    manifest.add_argument(
        "--output",
        default="manifests/katib/experiment.yaml",
        help="where to write it ('-': stdout)",
    )
    submit = commands.add_parser(
        "submit", help="upload the package as a new pipeline version and start a run"
    )
    add_config_args(submit, default="kubeflow")
    submit.add_argument("--package", help="compiled package (default: kubeflow.package_path)")
    submit.add_argument("--host", help="KFP API endpoint (default: kubeflow.host)")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run parameter, e.g. --param span=3 --param data_root=/mnt/shop/data/shop",
    )
    submit.add_argument(
        "--schedule", help="create a recurring run instead, KFP cron with seconds: '0 0 3 * * *'"
    )
    submit.add_argument("--version-name", help="pipeline version name (default: name-timestamp)")
    args = parser.parse_args(argv)
    if args.command == "rollback":
        span = args.to_span
        args.overrides = [*args.overrides, f"data.span={span}", f"pusher.rollback_to_span={span}"]

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"shop-pipeline: {err}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(config.model_dump_json(indent=2))
        return 0
    if args.command == "submit":
        return _submit(config, args)
    if args.command == "katib-manifest":
        return _katib_manifest(config, args)

    prepare_tensorflow_process()  # the commands below load TensorFlow (through TFX or Beam)
    if args.command == "compile":
        return _compile(config, args.output)
    if args.command == "score":
        return _score(config, args)

    from components.arrow_csv import CsvFormatError
    from components.validation import DataValidationError
    from pipelines.local_runner import run_local
    from pipelines.spans import SpanError
    from pipelines.summary import render, summarize

    started = time.perf_counter()
    rollback = config.pusher.rollback_to_span
    print(
        f"shop-pipeline: running {config.name} locally; outputs under {config.output_root}/"
        + (
            f"\n  rollback to span {rollback}: its model becomes the newest version if blessed "
            "(absolute thresholds only)"
            if rollback is not None
            else ""
        ),
        flush=True,
    )
    try:
        summary, seconds = run_local(config, verbose=args.verbose)
    except SpanError as err:
        print(f"shop-pipeline: {err}", file=sys.stderr)
        return 2
    except (DataValidationError, CsvFormatError) as err:  # bad data: the summary says STOPPED
        summary = summarize(config, error=err)
        _write(config.summary_path, summary.to_json())
        print(render(summary, time.perf_counter() - started), flush=True)
        return 1
    _write(config.summary_path, summary.to_json())
    print(render(summary, seconds), flush=True)
    print(f"summary written to {config.summary_path}")
    if args.command == "rollback" and not summary.pushed:
        print(f"shop-pipeline: rollback to span {rollback} pushed nothing", file=sys.stderr)
        return 1  # the explicit action did not happen
    return 0  # a model the Evaluator did not bless is a result too: the summary says so


def _compile(config, output: str | None) -> int:
    from pipelines.kfp_spec import UnsupportedSpecError
    from pipelines.kubeflow_runner import compile_package

    try:
        path = compile_package(config, output)
    except (ConfigError, UnsupportedSpecError) as err:
        print(f"shop-pipeline: {err}", file=sys.stderr)
        return 2
    print(f"compiled {config.name} for Kubeflow Pipelines v2: {path}")
    print(f"  image {config.kubeflow.image}; upload it in the KFP UI or `shop-pipeline submit`")
    return 0


def _score(config, args) -> int:
    from pipelines.batch_scoring import BatchScoringError, score_span

    try:
        score_span(
            config,
            span=args.span,
            model_version=args.model_version,
            progress=lambda line: print(f"shop-pipeline: {line}", flush=True),
        )
    except BatchScoringError as err:
        print(f"shop-pipeline: {err}", file=sys.stderr)
        return 2
    return 0


def _katib_manifest(config, args) -> int:
    from components.tuning.experiment import manifest_text

    source = args.config if args.config.endswith(".yaml") else f"settings/conf/{args.config}.yaml"
    text = manifest_text(config, source)
    if args.output == "-":
        print(text, end="")
    else:
        _write(args.output, text)
        print(f"wrote the Katib Experiment of {source} to {args.output}")
    return 0


def _submit(config, args) -> int:
    from pipelines.submit import SubmitError, parse_parameters, submit

    package = args.package or config.kubeflow.package_path
    host = args.host or config.kubeflow.host
    if not host:
        print(
            "shop-pipeline: submit needs --host (or kubeflow.host in the config)", file=sys.stderr
        )
        return 2
    if not os.path.exists(package):
        print(
            f"shop-pipeline: package {package} not found: run `shop-pipeline compile` first",
            file=sys.stderr,
        )
        return 2
    try:
        result = submit(
            package,
            host,
            pipeline_name=config.name,
            version_name=args.version_name,
            experiment=config.kubeflow.experiment,
            namespace=config.kubeflow.namespace,
            parameters=parse_parameters(args.param),
            schedule=args.schedule,
            pipeline_root=config.pipeline_root,
        )
    except (SubmitError, ValueError) as err:
        print(f"shop-pipeline: {err}", file=sys.stderr)
        return 1
    kind = "recurring run" if result.recurring_run_id else "run"
    print(f"submitted {config.name} version {result.version_id} as a {kind}: {result.url}")
    return 0


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    sys.exit(main())
