"""`shop-serve`: start the model server from config, start the recommendation stack, replay a span
against it, report an A/B test, write the KServe InferenceServices.

Runs in the pipeline's environment and reads the one typed config (settings/conf/*.yaml + --set); `start`
hands over to the server in the serving environment (.venv-serving, serving/requirements.lock),
with every flag taken from config's `serving` section and paths.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from components.runtime import prepare_tensorflow_process
from pipelines.cli import add_config_args
from serving.commands import server_command, server_env
from settings import ConfigError, PipelineConfig, load_config


def _start(args: argparse.Namespace, config: PipelineConfig) -> int:
    cmd = server_command(config, args.port, args.model_version)
    print(
        f"serving {config.serving_dir} as http://127.0.0.1:{args.port}/v1/models/"
        f"{config.serving.model_name} (V1) and /v2/models/{config.serving.model_name} (V2)",
        flush=True,
    )
    os.execve(cmd[0], cmd, server_env())  # the server owns the process (signals, exit code)
    return 0  # not reached


def _recommend(args: argparse.Namespace, config: PipelineConfig) -> int:
    import json
    import signal

    from serving.stack import recommend_stack, wait_forever

    config_args = ["--config", args.config, *(f"--set={o}" for o in args.overrides)]
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the children in order
    served_log = config.served_log_path if config.recommend.log_served else None
    root = os.path.join(config.output_root, "services", "recommend")
    with recommend_stack(config, config_args, root, port=args.port, served_log=served_log) as stack:
        body = {
            "user_id": args.example_user or _a_user(config),
            "context": {"device": "mobile", "hour": 20, "referrer": "search", "country": "DE"},
            "k": 5,
        }
        print(
            f"recommendations: POST {stack.endpoint(config.serving.model_name)}\n"
            f"  curl -s {stack.endpoint(config.serving.model_name)} "
            f"-H 'content-type: application/json' -d '{json.dumps(body)}'\n"
            f"  served lists: {served_log}\n  logs: {stack.logs}\n(Ctrl-C stops everything)",
            flush=True,
        )
        wait_forever()
    return 0


def _a_user(config: PipelineConfig) -> str:
    """The first user of the lake's newest span, for the printed example."""
    import csv
    import glob
    import re

    spans = glob.glob(os.path.join(config.data.root, "span-*", "*.csv"))
    if not spans:
        return "u1"
    newest = max(spans, key=lambda p: int(re.search(r"span-(\d+)", p).group(1)))
    with open(newest, newline="") as f:
        return next(csv.DictReader(f))["user_id"]


def _replay(args: argparse.Namespace, config: PipelineConfig) -> int:
    from serving.contract import Contract
    from serving.loadgen import run_load, span_instances
    from serving.versions import numbered_versions

    versions = numbered_versions(config.serving_dir)
    if not versions:
        raise FileNotFoundError(f"{config.serving_dir}: no pushed model (run `make run` first)")
    contract = Contract.load(os.path.join(config.serving_dir, versions[-1]))
    span_dir = os.path.join(config.data.root, f"span-{args.span}")
    rows = span_instances(span_dir, contract, args.requests * args.batch)
    bodies = [{"instances": rows[i : i + args.batch]} for i in range(0, len(rows), args.batch)]
    url = f"{args.url.rstrip('/')}/v1/models/{config.serving.model_name}:predict"
    print(f"replaying {len(rows)} rows of {span_dir} to {url}, {args.concurrency} at a time")
    result = asyncio.run(
        run_load(
            url,
            bodies,
            len(bodies),
            args.concurrency,
            on_progress=lambda done, total: print(f"  {done}/{total} requests", flush=True),
        )
    )
    ok = sum(1 for s in result.statuses if s == 200)
    print(
        f"{ok}/{len(result.statuses)} answered 200; p50 {result.percentile(50) * 1000:.1f} ms, "
        f"p99 {result.percentile(99) * 1000:.1f} ms, {result.requests_per_s:.0f} requests/s"
    )
    return 0 if ok == len(result.statuses) else 1


def _ab_report(args: argparse.Namespace, config: PipelineConfig) -> int:
    from serving.ab_report import (
        build_report,
        read_outcomes,
        read_request_ids,
        render,
        write_report,
    )

    log = args.log or config.request_log_path
    span_dir = os.path.join(config.data.root, f"span-{args.span}")
    report = build_report(
        log,
        read_outcomes(span_dir),
        seed=args.seed,
        requests=read_request_ids(span_dir),
        ndcg_k=config.evaluation.ndcg_k,
    )
    print(render(report))
    output = args.output or str(Path(log).with_suffix(".ab_report.json"))
    write_report(report, output)
    print(f"report: {output}")
    return 0


def _kserve_manifest(args: argparse.Namespace, config: PipelineConfig) -> int:
    from serving.kserve_manifest import write_manifests

    source = args.config if args.config.endswith(".yaml") else f"settings/conf/{args.config}.yaml"
    command = ["shop-serve kserve-manifest", f"--config {args.config}"]
    command += [f"--set {override}" for override in args.overrides]
    for flag, value in (
        ("--model-version", args.model_version),
        ("--previous-version", args.previous_version),
    ):
        if value is not None:
            command.append(f"{flag} {value}")
    origin = (
        f"Generated from {source}'s serving section by\n  {' '.join(command)}\n"
        "manifests/kserve/ is `make kserve-manifest`'s output: do not edit it, "
        "tests/unit/test_kserve_manifests.py fails when it and the config disagree."
    )
    # a config that cannot give them (ConfigError) or bad versions (ValueError): nothing written
    paths = write_manifests(
        args.output_dir, config, origin, args.model_version, args.previous_version
    )
    print(f"wrote the KServe InferenceServices of {source} to {args.output_dir}/:")
    for path in paths:
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # The environment (inherited by the server) and the warning filters; TensorFlow loads here
    # only for an object-store serving_dir (serving.versions), so it is not imported up front.
    prepare_tensorflow_process(import_tensorflow=False)
    parser = argparse.ArgumentParser(
        prog="shop-serve", description=" ".join(__doc__.split("\n")[:2])
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="serve the pushed model (V1 + V2 REST, /metrics)")
    add_config_args(start)
    start.add_argument("--port", type=int, default=8080)
    start.add_argument("--model-version", help="pin one version instead of the newest")
    recommend = commands.add_parser(
        "recommend", help="the online store, feature server, predictor and transformer"
    )
    add_config_args(recommend)
    recommend.add_argument("--port", type=int, default=8090, help="the transformer's port")
    recommend.add_argument("--example-user", help="the user of the printed curl example")
    replay = commands.add_parser("replay", help="send a span's rows to a running server")
    add_config_args(replay)
    replay.add_argument("--span", type=int, required=True)
    replay.add_argument("--url", default="http://127.0.0.1:8080")
    replay.add_argument("--requests", type=int, default=1000)
    replay.add_argument("--batch", type=int, default=1, help="instances per request")
    replay.add_argument("--concurrency", type=int, default=8)
    report = commands.add_parser("ab-report", help="compare the A/B variants in the request log")
    add_config_args(report)
    report.add_argument("--span", type=int, required=True, help="span whose outcomes to join")
    report.add_argument("--log", help="request log (default: config's request_log_path)")
    report.add_argument("--output", help="JSON report (default: next to the log)")
    report.add_argument("--seed", type=int, default=0)
    kserve = commands.add_parser(
        "kserve-manifest",
        help="write the KServe InferenceServices of the serving section (YAML + kustomization)",
    )
    add_config_args(kserve, default="kubeflow")
    kserve.add_argument("--output-dir", default="manifests/kserve", help="where to write them")
    kserve.add_argument(
        "--model-version", type=int, help="pin the custom predictor to this pushed version"
    )
    kserve.add_argument(
        "--previous-version",
        type=int,
        help="the version serving now: a canary (serving.canary_traffic_percent to the new one)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        handler = {
            "start": _start,
            "recommend": _recommend,
            "replay": _replay,
            "ab-report": _ab_report,
            "kserve-manifest": _kserve_manifest,
        }[args.command]
        return handler(args, config)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
