"""`shop-serve`: start the model server from config, replay a span against it, report an A/B test,
write the KServe InferenceServices.

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
from settings import ConfigError, PipelineConfig, load_config, server_flags

# Where the serving package is importable from (the checkout for an editable install): the server
# process gets it on PYTHONPATH, and the serving venv is looked for beside it.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

SERVING_PYTHON_ENV = "SHOP_SERVING_PYTHON"


def serving_python() -> str:
    """The serving environment's interpreter: $SHOP_SERVING_PYTHON or .venv-serving."""
    path = os.environ.get(SERVING_PYTHON_ENV) or str(
        PACKAGE_ROOT / ".venv-serving" / "bin" / "python"
    )
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no serving environment; create it with `make serving-env` "
            f"(or point {SERVING_PYTHON_ENV} at one)"
        )
    return path


def server_command(
    config: PipelineConfig,
    port: int,
    model_version: str | None = None,
    model_dir: str | None = None,
    request_log: str | None = None,
) -> list[str]:
    """The serving.server command line for this config (tests and the benchmark use it too)."""
    s = config.serving
    log = request_log or (config.request_log_path if s.log_requests else None)
    cmd = [
        serving_python(), "-m", "serving.server",
        "--model-dir", os.path.abspath(model_dir or config.serving_dir),
        "--model-name", s.model_name,
        "--http-port", str(port),
        "--ab-candidate-percent", str(s.ab_candidate_percent),
        "--ab-key", s.ab_key,
        *server_flags(s.model_dump()),
    ]  # fmt: skip
    if log:
        cmd += ["--request-log", os.path.abspath(log) if log != "-" else log]
    if model_version:
        cmd += ["--model-version", model_version]
    return cmd


def server_env() -> dict[str, str]:
    """The serving package importable from the checkout, TensorFlow quiet."""
    return {
        **os.environ,
        "PYTHONPATH": str(PACKAGE_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }


def _start(args: argparse.Namespace, config: PipelineConfig) -> int:
    cmd = server_command(config, args.port, args.model_version)
    print(
        f"serving {config.serving_dir} as http://localhost:{args.port}/v1/models/"
        f"{config.serving.model_name} (V1) and /v2/models/{config.serving.model_name} (V2)",
        flush=True,
    )
    os.execve(cmd[0], cmd, server_env())  # the server owns the process (signals, exit code)
    return 0  # not reached


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
    from serving.ab_report import build_report, read_outcomes, render, write_report

    log = args.log or config.request_log_path
    span_dir = os.path.join(config.data.root, f"span-{args.span}")
    report = build_report(log, read_outcomes(span_dir), seed=args.seed)
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
    replay = commands.add_parser("replay", help="send a span's rows to a running server")
    add_config_args(replay)
    replay.add_argument("--span", type=int, required=True)
    replay.add_argument("--url", default="http://localhost:8080")
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
