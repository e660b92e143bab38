"""Serving latency and throughput over loopback HTTP, next to the in-process model call (the floor).

    .venv/bin/python -m benchmarks.serving_latency --requests 2000 --concurrency 1 4 16 64

Starts the model server (serving environment) on the newest pushed model once per batching mode,
one after the other: off (serving.batch_max_size=1: one model call per request), greedy (requests
queued during a call are merged into the next, no waiting: the default) and wait-2ms (a batch
waits up to 2 ms to fill). Each gets the same bounded load of one-instance V1 requests built from
a span's rows at each concurrency level. Prints p50/p99 latency and requests/s per level and mode,
each mode's throughput relative to "off", and the in-process SavedModel call (same rows, one
instance per call) as the floor no server can beat. The load generator shares the machine's cores with the server, so the
absolute figures are pessimistic; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _say(text: str) -> None:
    print(f"[serving] {text}", flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def in_process_floor(model_dir: str, contract, rows: list[dict], calls: int) -> dict[str, float]:
    """One-instance calls of the serving signature in this process: p50/p99 in ms."""
    import tensorflow as tf

    fn = tf.saved_model.load(model_dir).signatures[contract.signature]
    dtypes = {"string": tf.string, "int": tf.int64, "float": tf.float32}

    def call(row):
        return fn(**{n: tf.constant([row[n]], dtype=dtypes[s["type"]])
                     for n, s in contract.features.items()})  # fmt: skip

    for row in rows[:20]:
        call(row)
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        call(rows[i % len(rows)])
        latencies.append(time.perf_counter() - start)
    return {
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "calls_per_s": len(latencies) / sum(latencies),
    }


MODES = {
    "off": ["serving.batch_max_size=1"],
    "greedy": ["serving.batch_max_size=64", "serving.batch_timeout_ms=0"],
    "wait-2ms": ["serving.batch_max_size=64", "serving.batch_timeout_ms=2"],
}


def measure_server(
    config, model_dir: str, rows, levels: list[int], requests: int, mode_name: str
) -> dict[int, dict[str, float]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from serving_process import running_server

    from pipelines.config import load_config
    from serving.loadgen import run_load

    mode = load_config("local", [f"output_root={config.output_root}", *MODES[mode_name]])
    bodies = [{"instances": [r]} for r in rows]
    figures: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as work:
        log = Path(work) / "requests.jsonl"
        with running_server(
            mode, model_dir, Path(work) / "server.log", request_log=str(log)
        ) as url:
            predict = f"{url}/v1/models/{mode.serving.model_name}:predict"
            for level in levels:
                asyncio.run(run_load(predict, bodies, min(200, requests), level))  # warm-up
                result = asyncio.run(run_load(predict, bodies, requests, level))
                ok = sum(1 for s in result.statuses if s == 200)
                if ok != requests:
                    raise RuntimeError(f"{requests - ok} failed requests: {result.errors[:3]}")
                figures[level] = {
                    "p50_ms": result.percentile(50) * 1000,
                    "p99_ms": result.percentile(99) * 1000,
                    "requests_per_s": result.requests_per_s,
                }
                _say(
                    f"batching {mode_name:<8} concurrency {level:>3}: "
                    f"p50 {figures[level]['p50_ms']:.1f} ms, p99 {figures[level]['p99_ms']:.1f} ms,"
                    f" {figures[level]['requests_per_s']:.0f} requests/s"
                )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="local")
    parser.add_argument("--model-dir", help="Pusher's base dir (default: the config's serving_dir)")
    parser.add_argument("--span-dir", help="rows to send (default: the newest span of data.root)")
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--floor-calls", type=int, default=2000)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    from pipelines.config import load_config
    from pipelines.spans import available_spans
    from serving.contract import Contract
    from serving.loadgen import span_instances
    from serving.model_store import numbered_versions

    config = load_config(args.config)
    model_base = args.model_dir or config.serving_dir
    versions = numbered_versions(model_base)
    if not versions:
        _say(f"{model_base}: no pushed model; run `make run` first")
        return 2
    model_dir = os.path.join(model_base, versions[-1])
    contract = Contract.load(model_dir)
    span_dir = args.span_dir or os.path.join(
        config.data.root, f"span-{available_spans(config.data)[-1]}"
    )
    rows = span_instances(span_dir, contract, 1000)
    _say(f"model {model_dir}, {len(rows)} distinct rows from {span_dir}, {os.cpu_count()} cores")

    floor = in_process_floor(model_dir, contract, rows, args.floor_calls)
    _say(f"in-process floor: p50 {floor['p50_ms']:.2f} ms, p99 {floor['p99_ms']:.2f} ms")
    figures = {
        mode: measure_server(config, model_base, rows, args.concurrency, args.requests, mode)
        for mode in MODES
    }

    print(f"\nin-process model call (1 instance): p50 {floor['p50_ms']:.2f} ms, "
          f"p99 {floor['p99_ms']:.2f} ms ({floor['calls_per_s']:.0f} calls/s)")  # fmt: skip
    print(f"{'':>11} | " + " | ".join(f"{m:^27}" for m in MODES) + " | req/s vs off")
    print(f"{'concurrency':>11} | " + " | ".join(
        f"{'p50':>8} {'p99':>8} {'req/s':>9}" for _ in MODES) + " | "
        + " ".join(f"{m:>8}" for m in MODES if m != "off"))  # fmt: skip
    ratios: dict[str, dict[int, float]] = {m: {} for m in MODES if m != "off"}
    for level in args.concurrency:
        cells = []
        for mode in MODES:
            f = figures[mode][level]
            cells.append(f"{f['p50_ms']:>6.1f}ms {f['p99_ms']:>6.1f}ms {f['requests_per_s']:>9.0f}")
        for mode in ratios:
            ratios[mode][level] = (
                figures[mode][level]["requests_per_s"] / figures["off"][level]["requests_per_s"]
            )
        print(f"{level:>11} | " + " | ".join(cells) + " | "
              + " ".join(f"{ratios[m][level]:>8.2f}" for m in ratios))  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": model_dir,
                    "cores": os.cpu_count(),
                    "requests_per_level": args.requests,
                    "in_process_floor": floor,
                    "modes": {m: " ".join(o) for m, o in MODES.items()},
                    "figures": figures,
                    "throughput_vs_off": ratios,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
