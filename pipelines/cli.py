"""`shop-pipeline`: run the pipeline locally (and, later, compile and submit it to Kubeflow)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from pipelines.config import ConfigError, load_config


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="local", help="conf/<name>.yaml or a path (default: local)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.train_steps=500",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shop-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the whole pipeline locally (LocalDagRunner)")
    _add_config_args(run)
    run.add_argument("--verbose", action="store_true", help="show TFX's full log")
    show = commands.add_parser("config", help="print the resolved configuration")
    _add_config_args(show)
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"shop-pipeline: {err}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(config.model_dump_json(indent=2))
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Google client libraries warn about Python 3.10 on import; TFX 1.16 needs 3.10 (DESIGN.md).
    warnings.filterwarnings("ignore", category=FutureWarning)
    from components.validation import DataValidationError
    from pipelines.local_runner import run_local
    from pipelines.spans import SpanError
    from pipelines.summary import render, summarize

    started = time.perf_counter()
    print(
        f"shop-pipeline: running {config.name} locally; outputs under {config.output_root}/",
        flush=True,
    )
    try:
        summary, seconds = run_local(config, verbose=args.verbose)
    except SpanError as err:
        print(f"shop-pipeline: {err}", file=sys.stderr)
        return 2
    except DataValidationError as err:
        summary = summarize(config, error=err)
        _write(config.summary_path, summary.to_json())
        print(render(summary, time.perf_counter() - started), flush=True)
        return 1
    _write(config.summary_path, summary.to_json())
    print(render(summary, seconds), flush=True)
    print(f"summary written to {config.summary_path}")
    return 0  # a model the Evaluator did not bless is a result too: the summary says so


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    sys.exit(main())
