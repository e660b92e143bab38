"""Recommendation latency: the whole request (feature lookup, retrieval, 100 candidates scored,
ranking) next to the predictor's 100-row request alone and the in-process model call, one run.

    .venv/bin/python -m benchmarks.recommend_latency --requests 2000 --concurrency 1 8

Needs a lake with feature logs and a model pushed from it: `make stream` makes both (data/stream,
outputs/stream; --set moves them). Starts the stack `shop-serve recommend` starts (serving/stack.py:
Redis filled from the lake, Feast's feature server, the predictor, the transformer) and, at each
concurrency level, alternates rounds of two loads so the machine's drift hits both alike:
- "recommend": POST /v1/models/<name>:predict on the transformer, one user (of the newest span)
  and a random context per request, k=10, candidates from retrieval
  (recommend.retrieval_candidates, 100 by default);
- "predictor": the predictor's V2 request with 100 rows as binary tensors, both ways, as the
  transformer sends it.
The floor is the SavedModel's signature called in this process on the same 100-row columns.
The split of a recommendation's time comes from the served log: online lookup, building the rows,
the predictor call (transport, the predictor's validation and the model), and what is left of the
client's latency (HTTP, JSON, kserve's request path in the transformer, the load generator).
The load generator shares the 2 cores with every server: absolute figures are pessimistic, the
ratios within one run are what to compare. Prints the issue's goals beside the figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import glob
import json
import os
import random
import re
import sys
import time
from pathlib import Path

from components.runtime import prepare_tensorflow_process

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONTEXTS = {
    "device": ("mobile", "desktop", "tablet"),
    "referrer": ("direct", "search", "email", "social", "ads"),
    "country": ("US", "DE", "GB", "FR", "JP"),
}
STAGES = ("lookup_ms", "build_ms", "predict_ms")


def _say(text: str) -> None:
    print(f"[recommend] {text}", flush=True)


def newest_span_csv(data_root: str) -> str:
    files = glob.glob(os.path.join(data_root, "span-*", "*.csv"))
    if not files:
        raise FileNotFoundError(f"{data_root}: no span (run `make stream` first)")
    return max(files, key=lambda p: int(re.search(r"span-(\d+)", p).group(1)))


def recommend_bodies(span_csv: str, n: int, seed: int) -> list[dict]:
    with open(span_csv, newline="") as f:
        users = sorted({row["user_id"] for row in csv.DictReader(f)})
    rng = random.Random(seed)
    return [
        {
            "user_id": rng.choice(users),
            "context": {
                **{name: rng.choice(values) for name, values in CONTEXTS.items()},
                "hour": rng.randrange(24),
            },
            "k": 10,
        }
        for _ in range(n)
    ]


def stage_split(served_log: str, since: float) -> dict[str, float]:
    """Medians of the transformer's own timings of the requests answered after `since`."""
    from serving.loadgen import percentile

    records = []
    with open(served_log) as f:
        for line in f:
            record = json.loads(line)
            if record["ts"] >= since and not record["cold_start"]:
                records.append(record["timings_ms"])
    return {s: percentile([r[s] for r in records], 50) for s in (*STAGES, "total_ms")}


def measure(stack, config, bodies, predictor_bodies, levels, total, rounds) -> dict:
    from serving.loadgen import run_load

    endpoint = stack.endpoint(config.serving.model_name)
    infer = f"{stack.predictor_url}/v2/models/{config.serving.model_name}/infer"
    asyncio.run(run_load(endpoint, bodies, 200, 4))  # warm both (connections, tracing)
    asyncio.run(run_load(infer, predictor_bodies, 200, 4))
    figures: dict[int, dict] = {}
    for level in levels:
        runs: dict[str, list] = {"recommend": [], "predictor": []}
        split_since = time.time()
        for _ in range(rounds):
            for name, (url, load) in {
                "recommend": (endpoint, bodies),
                "predictor": (infer, predictor_bodies),
            }.items():
                result = asyncio.run(run_load(url, load, total // rounds, level))
                bad = [s for s in result.statuses if s != 200]
                if bad:
                    raise RuntimeError(f"{name} at {level}: {len(bad)} non-200 answers {bad[:5]}")
                runs[name].append(result)
        figures[level] = {name: _summary(results) for name, results in runs.items()}
        figures[level]["split_ms"] = stage_split(stack.served_log, split_since)
        _say(f"concurrency {level}: " + ", ".join(
            f"{n} p50 {f['p50_ms']:.1f} ms p99 {f['p99_ms']:.1f} ms {f['requests_per_s']:.0f}/s"
            for n, f in figures[level].items() if n != "split_ms"
        ))  # fmt: skip
    return figures


def _summary(results) -> dict[str, float]:
    from serving.loadgen import percentile

    latencies = [t for r in results for t in r.latencies_s]
    wall = sum(r.wall_s for r in results)
    return {
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "requests_per_s": len(latencies) / wall,
    }


def report(figures: dict, floor: dict, candidates: int) -> None:
    print(f"\nin-process model call, {floor['rows']} rows: p50 {floor['p50_ms']:.2f} ms "
          f"({floor['rows_per_s']:,.0f} rows/s)")  # fmt: skip
    print(f"\n{'concurrency':>11} {'load':>10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} "
          f"{'rows/s':>8} {'p50/in-process':>15}")  # fmt: skip
    for level, by_load in figures.items():
        for name in ("predictor", "recommend"):
            f = by_load[name]
            print(f"{level:>11} {name:>10} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} "
                  f"{f['requests_per_s']:7.0f} {f['requests_per_s'] * candidates:8.0f} "
                  f"{f['p50_ms'] / floor['p50_ms']:14.1f}x")  # fmt: skip
    print(
        "\nsplit of a recommendation (medians, ms; 'rest' = client latency p50 - transformer total)"
    )
    for level, by_load in figures.items():
        split = by_load["split_ms"]
        rest = by_load["recommend"]["p50_ms"] - split["total_ms"]
        print(f"  concurrency {level}: lookup {split['lookup_ms']:.2f} | build {split['build_ms']:.2f}"
              f" | predictor call {split['predict_ms']:.2f} (in-process model {floor['p50_ms']:.2f})"
              f" | transformer total {split['total_ms']:.2f} | rest {rest:.2f}")  # fmt: skip
    low, high = min(figures), max(figures)
    print("\ngoals (issue 21), measured here:")
    ratio = figures[low]["predictor"]["p50_ms"] / floor["p50_ms"]
    print(f"  100-candidate predictor request p50 within 2x the in-process call: {ratio:.1f}x")
    p99 = figures[high]["recommend"]["p99_ms"]
    print(f"  whole recommendation p99 <= 25 ms at concurrency {high}: {p99:.1f} ms")
    rows = figures[high]["recommend"]["requests_per_s"] * candidates
    print(f"  scored rows/s >= 29,000 at concurrency {high}: {rows:,.0f}")


def main(argv: list[str] | None = None) -> int:
    prepare_tensorflow_process()
    p = argparse.ArgumentParser(prog="benchmarks.recommend_latency", description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="per load and level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=4, help="alternations of the two loads")
    p.add_argument("--floor-calls", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--model-dir", help="the Pusher's base folder (default: config's serving_dir)")
    p.add_argument(
        "--set", dest="overrides", action="append",
        default=["data.root=data/stream", "output_root=outputs/stream"],
        help="config overrides (default: make stream's lake and outputs)",
    )  # fmt: skip
    args = p.parse_args(argv)
    from benchmarks.serving_latency import in_process_wide
    from serving.contract import Contract
    from serving.loadgen import span_instances, v2_binary_body
    from serving.stack import recommend_stack
    from serving.versions import newest_version_dir
    from settings import load_config

    config = load_config("local", args.overrides)
    serving_dir = args.model_dir or config.serving_dir
    try:
        model_dir = newest_version_dir(serving_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"{err} (run `make stream` first)") from None
    contract = Contract.load(model_dir)
    span_csv = newest_span_csv(config.data.root)
    candidates = config.recommend.retrieval_candidates
    rows = span_instances(os.path.dirname(span_csv), contract, candidates * 20)
    batches = [rows[i : i + candidates] for i in range(0, len(rows), candidates)]
    _say(f"in-process floor: {args.floor_calls} calls of {candidates} rows ({model_dir})")
    floor = in_process_wide(model_dir, contract, batches, args.floor_calls)
    predictor_bodies = [v2_binary_body(batch, contract) for batch in batches]
    bodies = recommend_bodies(span_csv, 500, args.seed)
    root = Path(config.output_root) / "benchmarks" / "recommend"
    served_log = root / "served.jsonl"
    served_log.parent.mkdir(parents=True, exist_ok=True)
    served_log.unlink(missing_ok=True)
    config_args = [f"--set={o}" for o in args.overrides]
    with recommend_stack(
        config,
        config_args,
        root / "stack",
        model_dir=serving_dir,
        served_log=str(served_log),
        say=_say,
    ) as stack:
        figures = measure(
            stack, config, bodies, predictor_bodies, args.concurrency, args.requests, args.rounds
        )
    report(figures, floor, candidates)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"floor": floor, "candidates": candidates, "levels": figures}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
