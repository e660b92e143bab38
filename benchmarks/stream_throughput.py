"""Events/s through the real broker into sealed spans and the online store, and the lag from
publish to online visibility, at 1 and 2 consumers, side by side in one run.

    .venv/bin/python -m benchmarks.stream_throughput --rows 50000 --consumers 1 2

One RabbitMQ and one Redis on loopback (features/services.py) for the whole run. For each consumer
count, two plays of the same simulated day (simulator.stream.day_events), each on its own queue
and lake:
- saturated: the app publishes as fast as the broker confirms; events/s = the day's events over
  the time from the first publish to the seal (the last consumer's exit, within one flush
  interval of it). The lag here is mostly queueing: the backlog the consumers work through.
- paced: the app publishes at --paced-rate events/s (below one consumer's capacity); the lag of
  each profile event from its publish to its write into Redis (the consumer stamps it after
  write_online returns) is what a request would see: p50 and p99.
The publisher, the broker, Redis and the consumers share this machine's 2 cores, so absolute
figures are pessimistic; compare the columns.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from features.play import REPO_ROOT, consumer_command, service_overrides
from features.services import Broker, Redis
from simulator.generate import SimulationOptions
from simulator.stream import day_events, publish


def play_once(broker, redis, lake: Path, day, consumers: int, rate: float | None, name: str):
    """One day through `consumers` consumers; (events/s from first publish to seal, lags)."""
    overrides = [
        *service_overrides(broker, redis, lake),
        f"output_root={lake / 'outputs'}",
        f"stream.exchange=ex.{name}",
        f"stream.queue=q.{name}",
        f"stream.dead_letter_queue=dlq.{name}",
    ]
    procs = [
        subprocess.Popen(
            consumer_command(overrides, f"--id={name}-{i}", f"--exit-after-seal={day.span}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(consumers)
    ]
    for proc in procs:  # each consumer has declared the queue and is consuming
        if not proc.stdout.readline():
            raise RuntimeError(f"consumer {name} exited at start ({proc.wait()})")
    started = time.perf_counter()
    failed: list[BaseException] = []

    def publish_day() -> None:
        try:
            publish(day.events, broker.url, f"ex.{name}", rate=rate)
        except BaseException as err:  # the consumers would wait for a seal that never comes
            failed.append(err)
            for proc in procs:
                proc.kill()

    publisher = threading.Thread(target=publish_day)
    publisher.start()
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    seconds = time.perf_counter() - started
    publisher.join()
    if failed:
        raise RuntimeError(f"{name}: publishing failed: {failed[0]}") from failed[0]
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    if not (lake / f"span-{day.span}" / "impressions.csv").exists():
        raise RuntimeError(f"{name}: span-{day.span} was not sealed")
    lags = [lag for r in results for lag in r["online_lags_s"]]
    return len(day.events) / seconds, lags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="impressions in the day")
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paced-rate", type=float, default=2000.0, help="events/s, paced plays")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    day = day_events(SimulationOptions(rows_per_span=args.rows, spans=1, seed=args.seed), 1)
    print(
        f"benchmarks.stream_throughput: one day of {args.rows:,} impressions = "
        f"{len(day.events):,} events ({day.counts}); consumers {args.consumers}",
        flush=True,
    )
    figures: dict[str, dict] = {}
    services = REPO_ROOT / "outputs" / "services" / "bench-stream"
    with (
        tempfile.TemporaryDirectory(dir=REPO_ROOT / "outputs") as scratch,
        Broker(services / "rabbitmq") as broker,
        Redis(services / "redis") as redis,
    ):
        for n in args.consumers:
            rate, saturated_lags = play_once(
                broker, redis, Path(scratch) / f"sat-{n}", day, n, None, f"sat{n}"
            )
            _, paced_lags = play_once(
                broker, redis, Path(scratch) / f"paced-{n}", day, n, args.paced_rate, f"paced{n}"
            )
            figures[str(n)] = {
                "events_per_s": round(rate),
                "saturated_lag_p50_s": round(float(np.percentile(saturated_lags, 50)), 3),
                "saturated_lag_p99_s": round(float(np.percentile(saturated_lags, 99)), 3),
                "paced_lag_p50_ms": round(float(np.percentile(paced_lags, 50)) * 1000, 1),
                "paced_lag_p99_ms": round(float(np.percentile(paced_lags, 99)) * 1000, 1),
            }
            print(f"  {n} consumer(s): {figures[str(n)]}", flush=True)
    first = figures[str(args.consumers[0])]["events_per_s"]
    print(f"\n{'consumers':>9} {'events/s':>9} {'x first':>8} {'sat. lag p50/p99 s':>19} "
          f"{'paced lag p50/p99 ms':>21}")  # fmt: skip
    for n, f in figures.items():
        print(
            f"{n:>9} {f['events_per_s']:>9,} {f['events_per_s'] / first:>8.2f} "
            f"{f['saturated_lag_p50_s']:>9.2f}/{f['saturated_lag_p99_s']:<9.2f} "
            f"{f['paced_lag_p50_ms']:>10.1f}/{f['paced_lag_p99_ms']:<10.1f}"
        )
    print(f"(paced at {args.paced_rate:,.0f} events/s; command: python -m "
          f"benchmarks.stream_throughput --rows {args.rows} --consumers "
          f"{' '.join(map(str, args.consumers))})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
