"""`shop-sim`: write the shop's daily impression spans (CSV) and report each span's Bayes AUC.

`shop-sim stream ...` plays the spans through a message broker instead (the shop's app
publishing events; `shop-sim stream --help`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from simulator.generate import CHUNK_ROWS, SimulationOptions, SpanReport, build_shop, write_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="shop-sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="data/shop", help="dataset root; spans go to OUT/span-N/")
    parser.add_argument("--spans", type=int, default=2, help="write span-1 .. span-N")
    add_shop_options(parser, "write")
    parser.add_argument(
        "--corrupt-fraction", type=float, default=0.0, help="share of rows to break"
    )
    parser.add_argument(
        "--corrupt-span",
        type=int,
        action="append",
        help="span(s) to corrupt (default: the last one)",
    )
    return parser.parse_args(argv)


def add_shop_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """The options both modes share: how many rows, the seed, drift and label shift."""
    parser.add_argument("--rows", type=int, default=100_000, help="impressions per span")
    parser.add_argument(
        "--only-span", type=int, action="append", help=f"{verb} just this span (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--drift", type=float, default=0.0, help="0..1: traffic and concept drift strength"
    )
    parser.add_argument("--drift-from-span", type=int, default=2, help="first span that drifts")
    parser.add_argument(
        "--label-shift",
        type=float,
        default=1.0,
        help="multiply every purchase's odds by this (a prior shift; 1 = none)",
    )
    parser.add_argument(
        "--label-shift-span",
        type=int,
        action="append",
        help="span(s) with the label shift (default: the last one)",
    )
    parser.add_argument(
        "--shop-rows",
        type=int,
        help="the users and products of the shop with this many rows per span (its size follows "
        "the rows): another volume of the same shop, e.g. a day streamed to a model trained on it",
    )


def shop_options(args: argparse.Namespace, **extra) -> SimulationOptions:
    """SimulationOptions from add_shop_options' arguments (ValueError names a bad one)."""
    options = SimulationOptions(
        rows_per_span=args.rows,
        spans=max([args.spans, *(args.only_span or [])]),
        seed=args.seed,
        drift=args.drift,
        drift_from_span=args.drift_from_span,
        label_shift=args.label_shift,
        label_shift_spans=tuple(args.label_shift_span or ()),
        **extra,
    )
    if args.shop_rows is None:
        return options
    try:
        shop = replace(options, rows_per_span=args.shop_rows)
    except ValueError as err:
        raise ValueError(f"--shop-rows: {err}") from None
    return shop.same_shop(rows_per_span=args.rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stream"]:
        return stream_main(argv[1:])
    args = parse_args(argv)
    try:
        options = shop_options(
            args,
            corrupt_fraction=args.corrupt_fraction,
            corrupt_spans=tuple(args.corrupt_span or ()),
        )
    except ValueError as err:
        print(f"shop-sim: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    print(
        f"shop-sim: {options.rows_per_span:,} rows/span, seed {options.seed} -> {args.out}",
        flush=True,
    )

    def report(r: SpanReport) -> None:
        print(
            f"  span-{r.span}: {r.rows:,} rows, purchase rate {r.purchase_rate:.3f}, "
            f"Bayes-optimal AUC {r.bayes_auc:.4f}, drift {r.drift:.2f}, corrupt rows {r.corrupt_rows}"
            + (f", label shift x{r.label_shift:g}" if r.label_shift != 1.0 else "")
            + f" [{time.perf_counter() - started:.1f}s]",
            flush=True,
        )

    def chunk(span: int, done: int, total: int) -> None:
        if total > CHUNK_ROWS:  # only large spans take long enough to need it
            print(
                f"  span-{span}: {done:,}/{total:,} rows [{time.perf_counter() - started:.1f}s]",
                flush=True,
            )

    write_dataset(options, args.out, progress=report, only_spans=args.only_span, on_chunk=chunk)
    print(f"shop-sim: done in {time.perf_counter() - started:.1f}s", flush=True)
    return 0


def parse_stream_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="shop-sim stream",
        description="Play spans 1..K of the shop through a RabbitMQ exchange (simulator/stream.py): "
        "writes the ground truth to LAKE/manifest.json, then publishes each span's events with "
        "publisher confirms. Start the consumer first: it binds the queue that takes them.",
    )
    parser.add_argument(
        "--broker", required=True, help="AMQP URL, e.g. amqp://guest:guest@127.0.0.1:5672/%%2F"
    )
    parser.add_argument("--exchange", default="shop.events", help="durable fanout exchange")
    parser.add_argument("--out", required=True, help="the lake the consumer writes (data.root)")
    parser.add_argument("--spans", type=int, default=1, help="publish span-1 .. span-K")
    parser.add_argument(
        "--rate", type=float, default=None, help="events per second (default: as fast as confirmed)"
    )
    add_shop_options(parser, "publish")
    return parser.parse_args(argv)


def stream_main(argv: list[str]) -> int:
    from simulator.stream import PublishError, day_events, publish, write_stream_manifest

    args = parse_stream_args(argv)
    try:
        if args.rate is not None and not args.rate > 0:
            raise ValueError(f"rate must be > 0 events/s, got {args.rate}")
        options = shop_options(args)
    except ValueError as err:
        print(f"shop-sim stream: {err}", file=sys.stderr)
        return 2
    spans = args.only_span or list(range(1, options.spans + 1))
    print(
        f"shop-sim stream: {options.rows_per_span:,} impressions/span, seed {options.seed}, "
        f"spans {spans} -> exchange {args.exchange!r}, lake {args.out}",
        flush=True,
    )
    shop = build_shop(options)
    for span in spans:
        started = time.perf_counter()
        day = day_events(options, span, shop)
        # The truth first: the lake's manifest is complete whenever a span can be sealed.
        write_stream_manifest(args.out, options, [day.report])

        def progress(done: int, total: int, span: int = span, started: float = started) -> None:
            print(
                f"  span-{span}: {done:,}/{total:,} events confirmed [{time.perf_counter() - started:.1f}s]",
                flush=True,
            )

        try:
            sent = publish(
                day.events, args.broker, args.exchange, rate=args.rate, progress=progress
            )
        except PublishError as err:
            print(f"shop-sim stream: span-{span}: {err}", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - started
        r = day.report
        print(
            f"  span-{span}: {sent:,} events ({day.counts['impression']:,} impressions, "
            f"{day.counts['purchase']:,} purchases), purchase rate {r.purchase_rate:.3f}, "
            f"Bayes-optimal AUC {r.bayes_auc:.4f}, drift {r.drift:.2f} [{seconds:.1f}s, "
            f"{sent / seconds:,.0f} events/s]",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
