"""`shop-features`: the event stream's consumer and the feature store's chores (.venv-features).

consume      events from the broker into the lake's spans and the online store
apply        register the feature definitions (features/definitions.py) in Feast's registry
materialize  copy the newest offline values (the lake's feature logs) into the online store, and
             rewrite the retrieval index (every product id the catalog announced)
online       print what the online store serves for a user and products (or --pairs of them)
serve        Feast's feature server (HTTP) over the online store, for the recommendation transformer
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from settings import ConfigError, PipelineConfig, add_config_args, load_config


def _consume(config: PipelineConfig, args: argparse.Namespace) -> int:
    from features.consumer import Consumer

    consumer = Consumer(
        config,
        consumer_id=args.id,
        exit_after_seal=args.exit_after_seal,
        idle_exit_s=args.idle_exit,
    )
    # Kubernetes stops a pod with SIGTERM: finish the open batch, acknowledge it, leave.
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    signal.signal(signal.SIGINT, lambda *_: consumer.stop())
    # The first line on stdout says the queue is declared and bound (features.play and the
    # tests wait for it before the app publishes).
    counters = consumer.run(
        on_ready=lambda: print(
            f"shop-features consume: {consumer.id} on {config.stream.queue}", flush=True
        )
    )
    print(json.dumps({"consumer": consumer.id, **asdict(counters)}), flush=True)
    return 0


def _apply(config: PipelineConfig, args: argparse.Namespace) -> int:
    from features.store import open_store

    open_store(config)
    print(f"shop-features apply: registry {config.feature_registry_path}")
    return 0


def _materialize(config: PipelineConfig, args: argparse.Namespace) -> int:
    from features.store import materialize, open_store

    end = datetime.fromisoformat(args.end) if args.end else datetime.now(timezone.utc)
    materialize(open_store(config), end=end)
    print(f"shop-features materialize: online store up to {end.isoformat()}")
    return 0


def _serve(config: PipelineConfig, args: argparse.Namespace) -> int:
    from feast.feature_server import start_server

    from features.store import open_store

    store = open_store(config)
    args.port = args.port or config.recommend.feature_server_port
    print(f"shop-features serve: Feast's feature server on {args.host}:{args.port}", flush=True)
    start_server(
        store,
        host=args.host,
        port=args.port,
        no_access_log=True,
        workers=args.workers,
        worker_connections=1000,
        max_requests=0,
        max_requests_jitter=0,
        keep_alive_timeout=30,
        registry_ttl_sec=60,
        tls_key_path="",
        tls_cert_path="",
        metrics=False,
    )
    return 0


def _read_pairs(path: str) -> tuple[list[str], list[str]]:
    """The users and products of a JSON file of [user_id, product_id] pairs; ValueError names
    the file and what is wrong with it."""
    try:
        pairs = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--pairs {path}: {err}") from None
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(i, str) for i in p) for p in pairs
    ):
        raise ValueError(f"--pairs {path}: expected a JSON list of [user_id, product_id] strings")
    return [u for u, _ in pairs], [p for _, p in pairs]


def _online(config: PipelineConfig, args: argparse.Namespace) -> int:
    if args.pairs:  # one Feast start for many rows (a notebook judging served lists)
        try:
            users, products = _read_pairs(args.pairs)
        except ValueError as err:
            print(f"shop-features online: {err}", file=sys.stderr)
            return 2
    elif args.user and args.product:
        users, products = [args.user] * len(args.product), args.product
    else:
        print("shop-features online: give --user and --product, or --pairs", file=sys.stderr)
        return 2
    from features.store import online_features, open_store

    with contextlib.redirect_stdout(sys.stderr):  # Feast may print; stdout is the JSON
        frame = online_features(open_store(config), users, products)
    print(frame.to_json(orient="records", indent=None if args.pairs else 2, date_format="iso"))
    return 0


def _skew(config: PipelineConfig, args: argparse.Namespace) -> int:
    from features.skew import skew_check

    with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress; stdout is the JSON
        report = skew_check(
            config,
            args.span,
            checkpoints=args.checkpoints,
            seed=args.seed,
            live_sample=args.live_sample,
            redis_db=args.redis_db,
        )
    print(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shop-features", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    consume = commands.add_parser("consume", help="consume the shop's events (one of N replicas)")
    add_config_args(consume)
    consume.add_argument("--id", help="this consumer's name in batch files and logs")
    consume.add_argument("--exit-after-seal", type=int, help="exit once span N is sealed")
    consume.add_argument("--idle-exit", type=float, help="exit after S seconds without a message")
    add_config_args(commands.add_parser("apply", help="register the feature definitions"))
    materialize = commands.add_parser("materialize", help="offline -> online, up to --end")
    add_config_args(materialize)
    materialize.add_argument("--end", help="ISO time (default: now)")
    serve = commands.add_parser("serve", help="Feast's feature server over the online store")
    add_config_args(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=int, default=None, help="default: recommend.feature_server_port"
    )
    serve.add_argument("--workers", type=int, default=1)
    online = commands.add_parser("online", help="the online features of a user and a product")
    add_config_args(online)
    online.add_argument("--user", help="a user id (with one or more --product)")
    online.add_argument("--product", action="append", help="a product id (repeatable)")
    online.add_argument("--pairs", help="a JSON file of [user_id, product_id] pairs instead")
    skew = commands.add_parser("skew", help="the training/serving skew check of a sealed span")
    add_config_args(skew)
    skew.add_argument("--span", type=int, required=True, help="the sealed span to check")
    skew.add_argument("--checkpoints", type=int, default=20, help="impressions served online")
    skew.add_argument("--seed", type=int, default=0)
    skew.add_argument("--live-sample", type=int, default=100, help="0: no live-store check")
    skew.add_argument("--redis-db", type=int, default=1, help="the scratch database (flushed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)  # a line per connection step otherwise
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"shop-features: {err}", file=sys.stderr)
        return 2
    command = {
        "consume": _consume,
        "apply": _apply,
        "materialize": _materialize,
        "online": _online,
        "serve": _serve,
        "skew": _skew,
    }[args.command]
    return command(config, args)


if __name__ == "__main__":
    sys.exit(main())
