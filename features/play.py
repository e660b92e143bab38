"""`python -m features.play`: days of the shop played through a real broker into sealed spans.

Starts RabbitMQ and Redis on loopback under outputs/services/ (features/services.py), N
consumers of the features environment, then the shop's app (`shop-sim stream`, a command of the
main environment: the simulator is not imported here), waits until every consumer has exited
after the last span's seal, and stops everything. `make stream` runs it, then the pipeline on
the spans it sealed; the tests and benchmarks/stream.py drive the same function.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from features.services import Broker, Redis

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURES_PYTHON = REPO_ROOT / ".venv-features" / "bin" / "python"


@dataclass
class Played:
    seconds: float
    consumers: list[dict]


def consumer_command(overrides: Sequence[str], *extra: str) -> list[str]:
    """The consumer as a process of the features environment."""
    command = [str(FEATURES_PYTHON), "-m", "features.cli", "consume"]
    return command + [f"--set={o}" for o in overrides] + list(extra)


def service_overrides(broker: Broker, redis: Redis, lake: str | Path) -> list[str]:
    return [f"data.root={lake}", f"stream.broker_url={broker.url}", f"stream.redis={redis.address}"]


def play(
    lake: str | Path,
    publisher: Sequence[str],
    *,
    spans: int,
    consumers: int = 1,
    services_root: str | Path = REPO_ROOT / "outputs" / "services" / "stream",
    overrides: Sequence[str] = (),
    timeout_s: float = 1800.0,
) -> Played:
    """Plays `publisher` (a command that publishes spans 1..spans and their seals to the broker
    URL given as `{broker}` in it) into `lake` with `consumers` consumers."""
    started = time.perf_counter()
    root = Path(services_root)
    with Broker(root / "rabbitmq") as broker, Redis(root / "redis") as redis:
        settings = [*service_overrides(broker, redis, lake), *overrides]
        procs = [
            subprocess.Popen(
                consumer_command(settings, f"--id=consumer-{i + 1}", f"--exit-after-seal={spans}"),
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(consumers)
        ]
        try:
            # The first consumer declares the queue; the app publishes with `mandatory`, so an
            # event sent before the queue exists fails loudly instead of vanishing.
            wait_for_queue(procs)
            subprocess.run([a.format(broker=broker.url) for a in publisher], check=True)
            results = [_finish(p, started + timeout_s) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    return Played(seconds=time.perf_counter() - started, consumers=results)


def wait_for_queue(procs: Sequence[subprocess.Popen], timeout_s: float = 120.0) -> None:
    """Until every consumer printed its first line (it has declared the topology)."""
    for proc in procs:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(f"consumer exited before consuming (exit {proc.wait(timeout_s)})")


def _finish(proc: subprocess.Popen, deadline: float) -> dict:
    out, _ = proc.communicate(timeout=max(deadline - time.perf_counter(), 1.0))
    if proc.returncode != 0:
        raise RuntimeError(f"consumer exited with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m features.play", description=__doc__)
    parser.add_argument("--lake", required=True, help="data.root the spans are sealed into")
    parser.add_argument("--spans", type=int, required=True, help="the publisher's last span")
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the consumers, e.g. --set output_root=outputs/stream",
    )
    parser.add_argument("publisher", nargs=argparse.REMAINDER, help="-- COMMAND with {broker}")
    args = parser.parse_args(argv)
    publisher = args.publisher[1:] if args.publisher[:1] == ["--"] else args.publisher
    played = play(
        args.lake, publisher, spans=args.spans, consumers=args.consumers, overrides=args.overrides
    )
    for c in played.consumers:
        print(
            f"  {c['consumer']}: {c['consumed']:,} messages, {c['batches']} batches, "
            f"sealed {c['sealed']}, dead-lettered {c['dead_lettered']}"
        )
    print(f"features.play: spans 1..{args.spans} sealed in {args.lake} in {played.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
