"""The transformer's hop to the predictor: V2 over REST with binary tensors (what
serving/transformer.py sends) against V2 over gRPC, through kserve's own clients, one run.

    PYTHONPATH=. .venv-serving/bin/python -m benchmarks.predictor_transport \\
        --set output_root=outputs/stream --span-dir data/stream/span-2

Runs in the serving environment (kserve's clients live there). One predictor (serving/server.py,
the config's flags) serves both protocols on loopback; the same 100-row requests go both ways, in
interleaved rounds so the machine's drift hits both alike, at each concurrency level; every
answer's scores are checked equal between the two. Each call builds its request from numpy
columns (InferInput.set_data_from_numpy, binary) and reads the answer back to numpy, as the
transformer does, so the figures are the hop's whole cost to the caller; the predictor writes its
request log (to a temporary folder) as it does behind the transformer. Prints p50/p99 and requests/s per
protocol and level and the gRPC/REST ratios; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NUMPY = {"BYTES": object, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32}


def _say(text: str) -> None:
    print(f"[transport] {text}", flush=True)


def columns(rows: list[dict], inputs: dict[str, str]) -> dict[str, np.ndarray]:
    """One numpy column per predictor input, typed as its V2 metadata says."""
    out = {}
    for name, datatype in inputs.items():
        values = [row[name] for row in rows]
        if datatype == "BYTES":
            out[name] = np.array([str(v).encode() for v in values], dtype=object)
        else:
            out[name] = np.asarray(values).astype(NUMPY[datatype])
    return out


def infer_request(model_name: str, cols: dict[str, np.ndarray], inputs: dict[str, str]):
    from kserve.protocol.infer_type import InferInput, InferRequest

    tensors = []
    for name, datatype in inputs.items():
        tensor = InferInput(name, [len(cols[name])], datatype)
        tensor.set_data_from_numpy(cols[name], binary_data=True)
        tensors.append(tensor)
    return InferRequest(
        model_name, tensors, request_id="bench", parameters={"binary_data_output": True}
    )


async def run_level(call, batches: list, total: int, concurrency: int) -> tuple[list, list]:
    """`total` calls spread over `concurrency` workers; (latencies in s, the scores of each
    distinct batch)."""
    latencies: list[float] = []
    scores: dict[int, np.ndarray] = {}
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            batch = i % len(batches)
            started = time.perf_counter()
            got = await call(batches[batch])
            latencies.append(time.perf_counter() - started)
            scores.setdefault(batch, got)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, [scores[b] for b in sorted(scores)]


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "requests_per_s": len(ordered) / wall,
    }


async def measure(
    rest_url: str, grpc_target: str, model_name: str, inputs: dict, batches: list, args
) -> dict:
    from kserve.inference_client import InferenceGRPCClient, InferenceRESTClient, RESTConfig

    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    grpc = InferenceGRPCClient(grpc_target, timeout=30)

    async def over_rest(cols):
        request = infer_request(model_name, cols, inputs)
        answer = await rest.infer(rest_url, request, model_name=model_name)
        return np.asarray(answer.outputs[0].as_numpy()).reshape(-1)

    async def over_grpc(cols):
        answer = await grpc.infer(infer_request(model_name, cols, inputs))
        return np.asarray(answer.outputs[0].as_numpy()).reshape(-1)

    calls = {"rest": over_rest, "grpc": over_grpc}
    for call in calls.values():  # warm both: connections, the model's first calls
        await run_level(call, batches, 100, 4)
    figures: dict[int, dict] = {}
    for level in args.concurrency:
        runs = {name: ([], 0.0) for name in calls}
        answers = {}
        for _ in range(args.rounds):
            for name, call in calls.items():
                started = time.perf_counter()
                latencies, scores = await run_level(
                    call, batches, args.requests // args.rounds, level
                )
                wall = time.perf_counter() - started
                runs[name] = (runs[name][0] + latencies, runs[name][1] + wall)
                answers[name] = scores
        for a, b in zip(answers["rest"], answers["grpc"], strict=True):
            if not np.array_equal(a, b):
                raise SystemExit("REST and gRPC answered different scores for the same rows")
        figures[level] = {name: summary(lat, wall) for name, (lat, wall) in runs.items()}
        _say(
            f"concurrency {level}: "
            + ", ".join(f"{n} p50 {f['p50_ms']:.2f} ms" for n, f in figures[level].items())
        )
    await grpc.close()
    return figures


def report(figures: dict, rows: int) -> None:
    print(f"\nV2, {rows} rows a request, kserve's clients (binary tensors over REST)")
    print(f"{'concurrency':>11} {'protocol':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}")
    for level, by in figures.items():
        for name, f in by.items():
            print(
                f"{level:>11} {name:>8} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} "
                f"{f['requests_per_s']:7.0f}"
            )
        ratio = by["grpc"]["p50_ms"] / by["rest"]["p50_ms"]
        speed = by["grpc"]["requests_per_s"] / by["rest"]["requests_per_s"]
        print(f"{'':>11} gRPC / REST: p50 {ratio:.2f}x, requests/s {speed:.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.predictor_transport", description=__doc__)
    p.add_argument("--span-dir", default="data/stream/span-2", help="rows of this span")
    p.add_argument("--model-dir", help="the Pusher's base folder (default: config's serving_dir)")
    p.add_argument("--rows", type=int, default=100, help="rows a request")
    p.add_argument("--requests", type=int, default=2000, help="per protocol and level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    import httpx

    from serving.contract import Contract
    from serving.loadgen import span_instances
    from serving.process import free_port, running_server
    from serving.versions import newest_version_dir
    from settings import load_config

    config = load_config("local", args.overrides)
    serving_dir = args.model_dir or config.serving_dir
    try:
        contract = Contract.load(newest_version_dir(serving_dir))
    except FileNotFoundError as err:
        raise SystemExit(f"{err} (run `make stream` first)") from None
    rows = span_instances(args.span_dir, contract, args.rows * 10)
    if len(rows) < args.rows:
        raise SystemExit(f"{args.span_dir}: {len(rows)} rows, fewer than --rows {args.rows}")
    grpc_port = free_port()
    with tempfile.TemporaryDirectory() as tmp, running_server(
        config, serving_dir, Path(tmp) / "predictor.log",
        request_log=str(Path(tmp) / "requests.jsonl"), grpc_port=grpc_port,
    ) as url:  # fmt: skip
        name = config.serving.model_name
        meta = httpx.get(f"{url}/v2/models/{name}", timeout=10).json()
        inputs = {t["name"]: t["datatype"] for t in meta["inputs"]}
        batches = [
            columns(rows[i : i + args.rows], inputs)
            for i in range(0, len(rows) - args.rows + 1, args.rows)
        ]
        _say(f"predictor {url}, gRPC 127.0.0.1:{grpc_port}; {len(batches)} distinct requests")
        target = f"127.0.0.1:{grpc_port}"
        figures = asyncio.run(measure(url, target, name, inputs, batches, args))
    report(figures, args.rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": args.rows, "levels": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
