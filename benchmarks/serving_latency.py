"""Serving latency and throughput over loopback HTTP, next to the in-process model call (the floor).

    .venv/bin/python -m benchmarks.serving_latency --requests 2000 --concurrency 1 4 16 64 \
        --overload 64 256

Starts the model server (serving environment) on the newest pushed model once per batching mode,
all three at once: off (serving.batch_max_size=1: one model call per request), greedy (requests
queued during a call are merged into the next, no waiting: the default) and wait-2ms (a batch
waits up to 2 ms to fill). At each concurrency level the same bounded load of one-instance V1
requests (built from a span's rows) goes to each mode in turn, in interleaved rounds, so the
machine's drift hits all modes alike. Prints p50/p99 latency and requests/s per level and mode,
each mode's throughput relative to "off", and the in-process SavedModel call (same rows, one
instance per call) as the floor no server can beat. The load generator shares the machine's cores
with the servers, so the absolute figures are pessimistic; the ratios are what to compare.

Wide requests (--wide-rows, 100 by default): the same rows as 100-instance requests in each
format the server takes (V1 rows, V1 columns, V2 with JSON tensor data, V2 with binary tensor data
in both directions), on one greedy server with the request log on, formats interleaved in rounds;
next to the in-process call of the signature on the same 100-row columns (tensors built from
lists, as a client of the SavedModel would), so the ratio says what the server adds to the model.

The batching modes run without an admission limit, so they show what an unbounded queue does.
Then, at each --overload level, the greedy server without a limit and the one with config's
serving.max_concurrency take the same load side by side: p50/p99 of the admitted (200) requests,
the share shed with a 503 and the p99 of those 503s; "limited" with clients that wait the
Retry-After they are told, "limited-impatient" with clients that send their next request at once
(a retry storm: the worst case for the server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from components.runtime import prepare_tensorflow_process

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _say(text: str) -> None:
    print(f"[serving] {text}", flush=True)


def in_process_floor(model_dir: str, contract, rows: list[dict], calls: int) -> dict[str, float]:
    """One-instance calls of the serving signature in this process: p50/p99 in ms."""
    import tensorflow as tf

    from serving.loadgen import percentile

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
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "calls_per_s": len(latencies) / sum(latencies),
    }


def in_process_wide(model_dir: str, contract, batches: list[list[dict]], calls: int) -> dict:
    """Calls of the serving signature with `len(batch)` instances each, in this process (the
    floor of a wide request): p50/p99 in ms, calls/s and rows/s."""
    import tensorflow as tf

    from serving.loadgen import percentile

    fn = tf.saved_model.load(model_dir).signatures[contract.signature]
    dtypes = {"string": tf.string, "int": tf.int64, "float": tf.float32}
    columns = [{n: [r[n] for r in batch] for n in contract.features} for batch in batches]

    def call(cols):
        return fn(**{n: tf.constant(cols[n], dtype=dtypes[s["type"]])
                     for n, s in contract.features.items()})  # fmt: skip

    for cols in columns[:20]:
        call(cols)
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        call(columns[i % len(columns)])
        latencies.append(time.perf_counter() - start)
    rows = len(batches[0])
    return {
        "rows": rows,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "calls_per_s": len(latencies) / sum(latencies),
        "rows_per_s": rows * len(latencies) / sum(latencies),
    }


UNBOUNDED = "serving.max_concurrency=1000000"  # no admission limit: every request queues
GREEDY = ["serving.batch_max_size=64", "serving.batch_timeout_ms=0"]
MODES = {
    "off": ["serving.batch_max_size=1", UNBOUNDED],
    "greedy": [*GREEDY, UNBOUNDED],
    "wait-2ms": ["serving.batch_max_size=64", "serving.batch_timeout_ms=2", UNBOUNDED],
}
# The same load without a limit and with config's serving.max_concurrency; the shed clients either
# wait the Retry-After they were told (polite) or send their next request at once (impatient).
ADMISSION = {"unbounded": [*GREEDY, UNBOUNDED], "limited": GREEDY, "limited-impatient": GREEDY}
PATIENT = {"limited"}


def measure_servers(
    config,
    model_dir: str,
    rows,
    levels: list[int],
    requests: int,
    rounds: int,
    modes: dict[str, list[str]] = MODES,
) -> dict[str, dict[int, dict[str, float]]]:
    """All modes' servers run at once (idle ones cost nothing); at each level the load goes to
    one mode after the other, `rounds` times, so a slow minute of the machine hits every mode
    alike. Figures pool each mode's rounds; latencies are those of the 200s."""
    from serving.loadgen import percentile, run_load
    from serving.process import running_server
    from settings import load_config

    bodies = [{"instances": [r]} for r in rows]
    per_round = max(1, requests // rounds)
    figures: dict[str, dict[int, dict[str, float]]] = {mode: {} for mode in modes}
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        urls = {}
        for mode, overrides in modes.items():
            settings = load_config("local", [f"output_root={config.output_root}", *overrides])
            url = stack.enter_context(
                running_server(settings, model_dir, Path(work) / f"{mode}.log",
                               request_log=str(Path(work) / f"{mode}.jsonl"))
            )  # fmt: skip
            urls[mode] = f"{url}/v1/models/{settings.serving.model_name}:predict"
        for level in levels:
            pooled: dict[str, list] = {mode: [] for mode in modes}
            for mode in modes:  # warm-up
                asyncio.run(run_load(urls[mode], bodies, min(100, per_round), level))
            for _ in range(rounds):
                for mode in modes:
                    result = asyncio.run(
                        run_load(urls[mode], bodies, per_round, level,
                                 wait_retry_after=mode in PATIENT)
                    )  # fmt: skip
                    failed = sum(1 for s in result.statuses if s not in (200, 503))
                    if failed:
                        raise RuntimeError(f"{mode}: {failed} failed requests {result.errors[:3]}")
                    pooled[mode].append(result)
            for mode, results in pooled.items():
                wall = sum(r.wall_s for r in results)
                ok = [t for r in results for t in r.latencies_of(200)]
                shed = [t for r in results for t in r.latencies_of(503)]
                figures[mode][level] = {
                    "p50_ms": percentile(ok, 50) * 1000,
                    "p99_ms": percentile(ok, 99) * 1000,
                    "requests_per_s": len(ok) / wall,  # answered with scores (goodput)
                    "shed_share": len(shed) / (len(ok) + len(shed)),
                    "shed_p99_ms": percentile(shed, 99) * 1000,
                }
                f = figures[mode][level]
                _say(
                    f"{mode:<9} concurrency {level:>3}: p50 {f['p50_ms']:.1f} ms, "
                    f"p99 {f['p99_ms']:.1f} ms, {f['requests_per_s']:.0f} requests/s"
                    + (f", {f['shed_share']:.0%} shed" if shed else "")
                )
    return figures


WIDE_FORMATS = ("v1 rows", "v1 columns", "v2 json", "v2 binary")


def wide_bodies(batches: list[list[dict]], contract) -> dict[str, tuple[str, list]]:
    """format -> (protocol, one body per batch): the same instances in each request format."""
    from serving.loadgen import v2_binary_body, v2_body

    return {
        "v1 rows": ("v1", [{"instances": b} for b in batches]),
        "v1 columns": ("v1", [{"inputs": {n: [r[n] for r in b] for n in b[0]}} for b in batches]),
        "v2 json": ("v2", [v2_body(b, contract) for b in batches]),
        "v2 binary": ("v2", [v2_binary_body(b, contract) for b in batches]),
    }


def measure_wide(
    config, model_dir: str, bodies: dict[str, tuple[str, list]], rows: int, levels: list[int],
    requests: int, rounds: int,
) -> dict[str, dict[int, dict[str, float]]]:  # fmt: skip
    """One greedy server (request log on, no admission limit); at each level the load goes to
    one format after the other, `rounds` times. Figures pool each format's rounds."""
    from serving.loadgen import percentile, run_load
    from serving.process import running_server
    from settings import load_config

    per_round = max(1, requests // rounds)
    figures: dict[str, dict[int, dict[str, float]]] = {f: {} for f in bodies}
    settings = load_config("local", [f"output_root={config.output_root}", *GREEDY, UNBOUNDED])
    name = settings.serving.model_name
    paths = {"v1": f"/v1/models/{name}:predict", "v2": f"/v2/models/{name}/infer"}
    with tempfile.TemporaryDirectory() as work:
        with running_server(settings, model_dir, Path(work) / "wide.log",
                            request_log=str(Path(work) / "wide.jsonl")) as url:  # fmt: skip
            for level in levels:
                pooled: dict[str, list] = {f: [] for f in bodies}
                for protocol, sent in bodies.values():  # warm-up
                    asyncio.run(run_load(url + paths[protocol], sent, min(50, per_round), level))
                for _ in range(rounds):
                    for fmt, (protocol, sent) in bodies.items():
                        result = asyncio.run(
                            run_load(url + paths[protocol], sent, per_round, level)
                        )
                        failed = sum(1 for s in result.statuses if s != 200)
                        if failed:
                            raise RuntimeError(
                                f"{fmt}: {failed} failed requests {result.errors[:3]}"
                            )
                        pooled[fmt].append(result)
                for fmt, results in pooled.items():
                    wall = sum(r.wall_s for r in results)
                    ok = [t for r in results for t in r.latencies_s]
                    figures[fmt][level] = f = {
                        "p50_ms": percentile(ok, 50) * 1000,
                        "p99_ms": percentile(ok, 99) * 1000,
                        "requests_per_s": len(ok) / wall,
                        "rows_per_s": rows * len(ok) / wall,
                    }
                    _say(f"{rows}-row {fmt:<10} concurrency {level:>3}: p50 {f['p50_ms']:.1f} ms, "
                         f"p99 {f['p99_ms']:.1f} ms, {f['rows_per_s']:.0f} rows/s")  # fmt: skip
    return figures


def print_batching(figures: dict, floor: dict, levels: list[int]) -> dict[str, dict[int, float]]:
    """The one-instance table; returns each mode's requests/s relative to "off"."""
    print(f"\nin-process model call (1 instance): p50 {floor['p50_ms']:.2f} ms, "
          f"p99 {floor['p99_ms']:.2f} ms ({floor['calls_per_s']:.0f} calls/s)")  # fmt: skip
    print(f"{'':>11} | " + " | ".join(f"{m:^27}" for m in MODES) + " | req/s vs off")
    print(f"{'concurrency':>11} | " + " | ".join(
        f"{'p50':>8} {'p99':>8} {'req/s':>9}" for _ in MODES) + " | "
        + " ".join(f"{m:>8}" for m in MODES if m != "off"))  # fmt: skip
    ratios: dict[str, dict[int, float]] = {m: {} for m in MODES if m != "off"}
    for level in levels:
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
    return ratios


def print_wide(wide: dict, floor: dict, levels: list[int]) -> None:
    rows = floor["rows"]
    print(f"\n{rows}-instance requests, greedy server with the request log (p50 / p99, rows/s; "
          f"x floor = p50 / in-process p50, floor rows/s / rows/s)")  # fmt: skip
    print(f"in-process model call ({rows} instances): p50 {floor['p50_ms']:.2f} ms, "
          f"p99 {floor['p99_ms']:.2f} ms ({floor['rows_per_s']:.0f} rows/s)")  # fmt: skip
    print(f"{'format':>11} | {'concurrency':>11} | {'p50':>8} {'p99':>8} {'rows/s':>8} | "
          f"{'p50 x floor':>11} {'rows/s x':>8}")  # fmt: skip
    for fmt, by_level in wide.items():
        for level in levels:
            f = by_level[level]
            print(f"{fmt:>11} | {level:>11} | {f['p50_ms']:>6.2f}ms {f['p99_ms']:>6.2f}ms "
                  f"{f['rows_per_s']:>8.0f} | {f['p50_ms'] / floor['p50_ms']:>11.2f} "
                  f"{floor['rows_per_s'] / f['rows_per_s']:>8.2f}")  # fmt: skip


def plot(
    figures: dict,
    floor: dict[str, float],
    levels: list[int],
    path: str,
    admission: dict | None = None,
    overload: list[int] | None = None,
) -> None:
    """p50/p99 latency and requests/s against concurrency, one line per batching mode; with
    admission figures a third panel: admitted p99 without and with the limit, and the shed share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if admission else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    latency, throughput = axes[0], axes[1]
    if admission and overload:
        shed_axis = axes[2].twinx()
        for mode, marker in (("unbounded", "o"), ("limited", "s"), ("limited-impatient", "^")):
            axes[2].plot(overload, [admission[mode][n]["p99_ms"] for n in overload],
                         marker=marker, label=f"{mode}: p99 of 200s")  # fmt: skip
        shed_axis.plot(overload, [100 * admission["limited"][n]["shed_share"] for n in overload],
                       color="grey", linestyle=":", marker="x", label="limited: % shed")  # fmt: skip
        axes[2].set(xscale="log", yscale="log", xlabel="concurrent requests", ylabel="ms",
                    title="overload: admission limit vs none")  # fmt: skip
        shed_axis.set(ylabel="% answered 503", ylim=(0, 100))
        axes[2].legend(fontsize=7, loc="upper left")
        shed_axis.legend(fontsize=7, loc="lower right")
    for mode, by_level in figures.items():
        p50 = [by_level[level]["p50_ms"] for level in levels]
        p99 = [by_level[level]["p99_ms"] for level in levels]
        (line,) = latency.plot(levels, p50, marker="o", label=f"{mode} p50")
        latency.plot(levels, p99, marker="x", linestyle="--", color=line.get_color(),
                     label=f"{mode} p99")  # fmt: skip
        throughput.plot(levels, [by_level[level]["requests_per_s"] for level in levels],
                        marker="o", label=mode)  # fmt: skip
    latency.axhline(floor["p50_ms"], color="grey", linestyle=":", label="in-process p50")
    latency.set(xscale="log", yscale="log", xlabel="concurrent requests", ylabel="ms",
                title="latency (one-instance requests)")  # fmt: skip
    throughput.set(xscale="log", xlabel="concurrent requests", ylabel="requests/s",
                   title="throughput by batching mode")  # fmt: skip
    latency.legend(fontsize=7)
    throughput.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    prepare_tensorflow_process(import_tensorflow=False)  # environment and warning filters
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="local")
    parser.add_argument("--model-dir", help="Pusher's base dir (default: the config's serving_dir)")
    parser.add_argument("--span-dir", help="rows to send (default: the newest span of data.root)")
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument(
        "--concurrency", type=int, nargs="*", default=[1, 4, 16, 64],
        help="levels of the one-instance batching comparison; none = skip it",
    )  # fmt: skip
    parser.add_argument(
        "--overload",
        type=int,
        nargs="*",
        default=[64, 256],
        help="levels where the server without a limit and with serving.max_concurrency compete",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per level")
    parser.add_argument("--floor-calls", type=int, default=2000)
    parser.add_argument(
        "--wide-rows", type=int, default=100, help="instances per wide request; 0 = skip"
    )
    parser.add_argument("--wide-requests", type=int, default=1000, help="per format and level")
    parser.add_argument("--wide-concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--wide-floor-calls", type=int, default=500)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--plot",
        default="outputs/benchmarks/serving_latency.png",
        help="latency and throughput per concurrency and mode (PNG); '' = none",
    )
    args = parser.parse_args(argv)

    from pipelines.spans import available_spans
    from serving.contract import Contract
    from serving.loadgen import span_instances
    from serving.versions import numbered_versions
    from settings import load_config

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

    floor: dict[str, float] = {}
    figures: dict[str, dict[int, dict[str, float]]] = {}
    ratios: dict[str, dict[int, float]] = {}
    if args.concurrency:
        floor = in_process_floor(model_dir, contract, rows, args.floor_calls)
        _say(f"in-process floor: p50 {floor['p50_ms']:.2f} ms, p99 {floor['p99_ms']:.2f} ms")
        figures = measure_servers(
            config, model_base, rows, args.concurrency, args.requests, args.rounds
        )
        ratios = print_batching(figures, floor, args.concurrency)
    wide: dict = {}
    if args.wide_rows:
        n = args.wide_rows
        batches = [rows[i : i + n] for i in range(0, len(rows) - n + 1, n)] or [rows]
        wide_floor = in_process_wide(model_dir, contract, batches, args.wide_floor_calls)
        _say(f"in-process {n}-row floor: p50 {wide_floor['p50_ms']:.2f} ms")
        wide_figures = measure_wide(
            config, model_base, wide_bodies(batches, contract), wide_floor["rows"],
            args.wide_concurrency, args.wide_requests, args.rounds,
        )  # fmt: skip
        print_wide(wide_figures, wide_floor, args.wide_concurrency)
        wide = {
            "rows": wide_floor["rows"],
            "in_process_floor": wide_floor,
            "figures": wide_figures,
            "p50_vs_floor": {
                fmt: {level: f["p50_ms"] / wide_floor["p50_ms"] for level, f in by_level.items()}
                for fmt, by_level in wide_figures.items()
            },
        }
    admission = {}
    if args.overload:
        limit = config.serving.max_concurrency
        admission = measure_servers(
            config, model_base, rows, args.overload, args.requests, args.rounds, ADMISSION
        )
        print(f"\noverload, greedy batching: no limit vs serving.max_concurrency={limit} "
              "(p50 / p99 of the 200s, 200s per s, share answered 503, p99 of the 503s; "
              "p99 ratio = limited / no limit)")  # fmt: skip
        print(f"{'concurrency':>11} | " + " | ".join(f"{m:^40}" for m in ADMISSION)
              + " | p99 ratio")  # fmt: skip
        for level in args.overload:
            cells = []
            for mode in ADMISSION:
                f = admission[mode][level]
                cells.append(f"{f['p50_ms']:>6.0f} / {f['p99_ms']:>5.0f} ms {f['requests_per_s']:>4.0f}/s "
                             f"{f['shed_share']:>4.0%} {f['shed_p99_ms']:>5.0f} ms")  # fmt: skip
            ratio = admission["limited"][level]["p99_ms"] / admission["unbounded"][level]["p99_ms"]
            print(f"{level:>11} | " + " | ".join(cells) + f" | {ratio:>9.2f}")
    if args.plot and args.concurrency:
        plot(figures, floor, args.concurrency, args.plot, admission, args.overload)
        _say(f"plot: {args.plot}")
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
                    "max_concurrency": config.serving.max_concurrency,
                    "admission": admission,
                    "wide": wide,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
