"""`shop-monitor`: check the served traffic for drift and quality, retrain when it crosses;
`shop-monitor scenario` plays the whole loop on this machine."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone

from components.runtime import prepare_tensorflow_process
from settings import ConfigError, add_config_args, load_config


def _time(text: str) -> float:
    """Epoch seconds from a number or an ISO time (naive = UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags (the monitor CronJob's command is checked against them in the tests)."""
    parser = argparse.ArgumentParser(prog="shop-monitor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check", help="check one window of the request log (the CronJob's command)"
    )
    check.add_argument("--window-minutes", type=float, help="default: monitoring.window_minutes")
    check.add_argument("--until", type=_time, help="window end (epoch or ISO, default now)")
    check.add_argument("--since", type=_time, help="window start (default: end - window)")
    check.add_argument(
        "--outcomes-as-of", type=_time, help="count outcomes arrived by then (default now)"
    )
    check.add_argument(
        "--no-retrain",
        action="store_true",
        help="report and alert only; the trigger's state is kept",
    )
    check.add_argument(
        "--alert-exit-code",
        type=int,
        default=1,
        help="exit status of a check that alerts (the CronJob uses 0: alerts go to Prometheus, "
        "a failed Job means the check itself failed)",
    )
    scenario = commands.add_parser(
        "scenario", help="train, serve, drift, detect, retrain, push: the loop here"
    )
    scenario.add_argument(
        "--workspace", default="outputs/scenario", help="deleted first if a scenario made it"
    )
    scenario.add_argument("--rows", type=int, default=20_000, help="impressions per day")
    scenario.add_argument(
        "--drift", type=float, default=0.8, help="drift strength of days 3-4 (0..1)"
    )
    scenario.add_argument("--seed", type=int, default=42)
    scenario.add_argument("--windows-per-day", type=int, default=2)
    for sub in (check, scenario):
        add_config_args(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    prepare_tensorflow_process(import_tensorflow=False)  # before anything can import TensorFlow
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.command == "scenario":
        workspace = os.path.abspath(args.workspace)
        overrides = [f"data.root={workspace}/data", f"output_root={workspace}/outputs", *overrides]
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"shop-monitor: {err}", file=sys.stderr)
        return 2
    prepare_tensorflow_process()  # TFDV and the model's SavedModel load TensorFlow
    from monitoring.monitor import check as run_check
    from monitoring.report import summary_lines
    from monitoring.traffic import Window

    if args.command == "scenario":
        from monitoring.scenario import ScenarioSettings, run_scenario

        settings = ScenarioSettings(
            rows=args.rows, drift=args.drift, seed=args.seed, windows_per_day=args.windows_per_day
        )
        try:
            result = run_scenario(config, workspace, settings, echo=lambda s: print(s, flush=True))
        except (FileExistsError, RuntimeError, TimeoutError) as err:
            print(f"shop-monitor: {err}", file=sys.stderr)
            return 1
        improved = (
            result.auc_before is not None
            and result.auc_after is not None
            and result.auc_after > result.auc_before
        )
        return 0 if improved else 1
    until = args.until or time.time()
    since = args.since or until - 60 * (args.window_minutes or config.monitoring.window_minutes)
    try:
        result = run_check(
            config, Window(since, until), outcomes_as_of=args.outcomes_as_of,
            trigger_retrain=not args.no_retrain, echo=lambda s: print(s, flush=True),
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        print(f"shop-monitor: {err}", file=sys.stderr)
        return 2
    for line in summary_lines(result.report):
        print(line)
    print(f"report: {result.report_dir}/report.html (latest: {config.monitoring_dir}/latest.html)")
    return args.alert_exit_code if result.exit_code else 0


if __name__ == "__main__":
    sys.exit(main())
