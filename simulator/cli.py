"""`shop-sim`: write the shop's daily impression spans (CSV) and report each span's Bayes AUC."""

from __future__ import annotations

import argparse
import sys
import time

from simulator.generate import CHUNK_ROWS, SimulationOptions, SpanReport, write_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shop-sim", description=__doc__)
    parser.add_argument("--out", default="data/shop", help="dataset root; spans go to OUT/span-N/")
    parser.add_argument("--rows", type=int, default=100_000, help="impressions per span")
    parser.add_argument("--spans", type=int, default=2, help="write span-1 .. span-N")
    parser.add_argument(
        "--only-span", type=int, action="append", help="write just this span (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--drift", type=float, default=0.0, help="0..1: traffic and concept drift strength"
    )
    parser.add_argument("--drift-from-span", type=int, default=2, help="first span that drifts")
    parser.add_argument(
        "--corrupt-fraction", type=float, default=0.0, help="share of rows to break"
    )
    parser.add_argument(
        "--corrupt-span",
        type=int,
        action="append",
        help="span(s) to corrupt (default: the last one)",
    )
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = SimulationOptions(
            rows_per_span=args.rows,
            spans=max([args.spans, *(args.only_span or [])]),
            seed=args.seed,
            drift=args.drift,
            drift_from_span=args.drift_from_span,
            corrupt_fraction=args.corrupt_fraction,
            corrupt_spans=tuple(args.corrupt_span or ()),
            label_shift=args.label_shift,
            label_shift_spans=tuple(args.label_shift_span or ()),
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


if __name__ == "__main__":
    sys.exit(main())
