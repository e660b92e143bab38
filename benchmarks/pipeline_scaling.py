"""How the local pipeline's cost grows with data: wall time and peak memory per stage at several
sizes, the per-row slope between sizes, Beam's in-memory vs multi-processing DirectRunner on
StatisticsGen and Transform, and TFX's own Chicago taxi pipeline as a peer, in one run.

    .venv/bin/python -m benchmarks.pipeline_scaling                       # docs/benchmarks.md's run
    .venv/bin/python -m benchmarks.pipeline_scaling --sizes 10000 --no-beam-modes --no-peer

Each pipeline run is a fresh child process (`shop-pipeline run`'s code path: run_local on
settings/conf/local.yaml, two spans of N rows each, so ExampleGen and StatisticsGen read 2N rows: the span
and the previous one the drift check compares it with). Variants are config overrides and
environment variables: "before" is what this repo did before the benchmark, "after" the defaults
now (docs/benchmarks.md says what each one changes).
Figures are printed as a table and written as JSON; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from components.runtime import prepare_tensorflow_process

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The stages the table reports; everything else (schema import, validators, gate, resolver,
# pusher, the runner's own bookkeeping between stages) is "rest".
GROUPS: dict[str, tuple[str, ...]] = {
    "ExampleGen": ("CsvExampleGen", "BaselineExampleGen"),
    "StatisticsGen": ("StatisticsGen", "BaselineStatisticsGen"),
    "Transform": ("Transform",),
    "Trainer": ("Trainer",),
    "Evaluator": ("Evaluator",),
}
REST = "rest"

# Config overrides (and environment) per variant. "before": what the pipeline did before this
# benchmark; "after": the shipped defaults. docs/benchmarks.md explains each difference.
VARIANTS: dict[str, list[str]] = {
    "before": [
        "data.csv_reader=tfx",  # TFX's CsvExampleGen executor, cell by cell in Python
        "validation.transform_statistics=true",  # Transform's two extra TFDV passes
        "validation.sketch_statistics=false",  # exact top values in StatisticsGen
    ],
    "after": [],
}
# Environment per variant ({work} is the benchmark's work folder).
VARIANT_ENV: dict[str, dict[str, str]] = {
    "before": {
        "SHOP_KERAS_AUTOGRAPH": "1",  # AutoGraph converts tf_keras (TensorFlow's default)
        # No bytecode cache, as a venv uv installed without --compile-bytecode: every import of
        # TensorFlow/TFX compiles from source (an empty cache folder, nothing written to it).
        "PYTHONPYCACHEPREFIX": "{work}/empty-bytecode-cache",
        "PYTHONDONTWRITEBYTECODE": "1",
    },
    "after": {},
}

BEAM_MODES: dict[str, list[str]] = {
    "in_memory": ["beam.direct_running_mode=in_memory", "beam.direct_num_workers=1"],
    "multi_processing_2": [
        "beam.direct_running_mode=multi_processing",
        "beam.direct_num_workers=2",
    ],
}
BEAM_MODE_STAGES = ("StatisticsGen", "Transform")

TAXI_PACKAGE = "tfx.examples.chicago_taxi_pipeline"


def _say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# Child processes: one measured pipeline run each, so every run starts with a clean process.


def _child_pipeline(args: argparse.Namespace) -> int:
    """One pipeline run (or a partial run of some stages) with the stage meter on."""
    from benchmarks.stage_meter import StageMeter
    from pipelines.local_runner import run_local
    from settings import load_config

    config = load_config("local", args.overrides)
    options = None
    if args.only:
        from tfx.orchestration.pipeline import RunOptions

        # A partial run: these stages only, their inputs resolved from the previous full run.
        options = RunOptions(from_nodes=args.only, to_nodes=args.only)
    with StageMeter() as meter:
        started = time.perf_counter()
        summary, _ = run_local(config, progress=meter, run_options=options)
        wall = meter.last_finished - started
    result = {
        "stages": meter.figures(),
        "wall_s": round(wall, 2),
        "peak_rss_gb": round(meter.run_peak_bytes / 1024**3, 3),
        "auc": summary.metrics.get("auc"),
        "bayes_auc": summary.bayes_auc,
        "blessed": summary.blessed,
        "eval_rows": summary.eval_rows,
    }
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0


def _child_peer(args: argparse.Namespace) -> int:
    """TFX's Chicago taxi pipeline (from the tfx wheel), on the same runner and Beam settings."""
    import importlib

    from tfx import v1 as tfx

    from benchmarks.stage_meter import StageMeter
    from pipelines.progress import stage_progress
    from settings import load_config

    taxi = importlib.import_module(f"{TAXI_PACKAGE}.taxi_pipeline_native_keras")
    work = Path(args.work)
    pipeline = taxi._create_pipeline(
        pipeline_name="chicago-taxi-native-keras",
        pipeline_root=str(work / "pipeline_root"),
        data_root=str(work / "data"),
        module_file=str(work / "module" / "taxi_utils_native_keras.py"),
        serving_model_dir=str(work / "serving"),
        metadata_path=str(work / "metadata.sqlite"),
        beam_pipeline_args=load_config("local", args.overrides).beam.pipeline_args(),
    )
    with StageMeter() as meter, stage_progress(handler=meter):
        started = time.perf_counter()
        tfx.orchestration.LocalDagRunner().run(pipeline)
        wall = meter.last_finished - started
    result = {
        "stages": meter.figures(),
        "wall_s": round(wall, 2),
        "peak_rss_gb": round(meter.run_peak_bytes / 1024**3, 3),
    }
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0


def _spawn(label: str, argv: list[str], result: Path, env: dict[str, str] | None = None) -> dict:
    """Runs a child, echoing its stage lines prefixed with `label`; returns its result JSON."""
    command = [sys.executable, "-m", "benchmarks.pipeline_scaling", *argv, "--result", str(result)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as child:
        tail: list[str] = []
        for line in child.stdout:
            tail = [*tail[-40:], line]
            # The meter's stage lines (not the stages a partial run skips); the rest is noise.
            if line.startswith("[") and not line.rstrip().endswith("skipped"):
                print(f"  {label} {line}", end="", flush=True)
    if child.returncode != 0:
        raise RuntimeError(f"{label}: exit {child.returncode}; last lines:\n{''.join(tail)}")
    # The whole process too: interpreter start and imports, the run, reading the summary back.
    return {**json.loads(result.read_text()), "process_s": round(time.perf_counter() - started, 2)}


# ---------------------------------------------------------------------------------------------
# Aggregation


def group_stages(stages: list[dict], wall_s: float) -> dict[str, dict]:
    """Per-stage figures folded into GROUPS + rest: seconds summed, peak memory the max."""
    groups: dict[str, dict] = {}
    known = {name: group for group, names in GROUPS.items() for name in names}
    for stage in stages:
        group = known.get(stage["name"], REST)
        entry = groups.setdefault(group, {"seconds": 0.0, "peak_rss_gb": 0.0})
        entry["seconds"] += stage["seconds"]
        entry["peak_rss_gb"] = max(entry["peak_rss_gb"], stage["peak_rss_gb"])
    rest = groups.setdefault(REST, {"seconds": 0.0, "peak_rss_gb": 0.0})
    # The runner's own time between stages belongs to "rest" too.
    rest["seconds"] += wall_s - sum(stage["seconds"] for stage in stages)
    return {
        name: {k: round(v, 3) for k, v in groups[name].items()}
        for name in [*GROUPS, REST]
        if name in groups
    }


def slopes(runs: list[dict]) -> list[dict]:
    """Microseconds per extra row between consecutive sizes, per variant and stage group."""
    out = []
    for variant in dict.fromkeys(run["variant"] for run in runs):
        sized = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["rows"])
        for small, large in zip(sized, sized[1:], strict=False):
            extra = large["rows"] - small["rows"]
            per_group = {
                group: round(
                    1e6
                    * (large["groups"][group]["seconds"] - small["groups"][group]["seconds"])
                    / extra,
                    2,
                )
                for group in large["groups"]
                if group in small["groups"]
            }
            per_group["total"] = round(1e6 * (large["wall_s"] - small["wall_s"]) / extra, 2)
            out.append(
                {"variant": variant, "from_rows": small["rows"], "to_rows": large["rows"],
                 "us_per_row": per_group}
            )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# The parts of one benchmark run


def _generate(rows: int, seed: int, work: Path) -> Path:
    data = work / f"data-{rows}"
    if not (data / "manifest.json").exists():
        _say(f"generating 2 spans of {rows:,} rows -> {data}")
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "simulator.cli", "--out", str(data), "--rows", str(rows),
             "--spans", "2", "--seed", str(seed)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        _say(f"generated in {time.perf_counter() - started:.1f}s")
    return data


def _pipeline_run(
    rows: int, variant: str, data: Path, output: Path, extra: list[str], label: str
) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    overrides = [
        f"data.root={data}",
        f"output_root={output}",
        *VARIANTS[variant],
        *extra,
    ]
    result = _spawn(
        label,
        ["_pipeline", *[x for o in overrides for x in ("--set", o)]],
        output.parent / f"{output.name}.json",
        {k: v.format(work=output.parent) for k, v in VARIANT_ENV[variant].items()},
    )
    return {
        "rows": rows,
        "variant": variant,
        "overrides": overrides[2:],
        **result,
        "groups": group_stages(result["stages"], result["wall_s"]),
    }


def _beam_modes(
    rows: int, data: Path, output: Path, extra: list[str], rounds: int, stages: list[str]
) -> dict:
    """StatisticsGen and Transform re-run (partial runs on the finished run's inputs) in each
    Beam mode, interleaved mode by mode so drift in the machine's speed hits both alike."""
    measured: list[dict] = []
    # Each partial run resolves its inputs from the latest run in ML Metadata: restore the full
    # run's metadata before each one, so every partial run starts from the same state.
    metadata = output / "metadata.sqlite"
    full_run = output / "metadata.full-run.sqlite"
    shutil.copy(metadata, full_run)
    # ...and remove what the previous partial run wrote: execution ids restart with the metadata,
    # so the next run would write into the same output folders.
    stage_root = output / "pipeline_root"
    full_run_outputs = set(stage_root.glob("*/*/*/*"))
    for round_ in range(rounds):
        for stage in stages:
            for mode, mode_overrides in BEAM_MODES.items():
                label = f"[{rows:,} rows · {stage} · {mode} · round {round_ + 1}/{rounds}]"
                overrides = [
                    f"data.root={data}", f"output_root={output}", "enable_cache=false",
                    *VARIANTS["after"], *extra, *mode_overrides,
                ]  # fmt: skip
                shutil.copy(full_run, metadata)
                for leftover in set(stage_root.glob("*/*/*/*")) - full_run_outputs:
                    shutil.rmtree(leftover, ignore_errors=True)
                result = _spawn(
                    label,
                    ["_pipeline", "--only", stage, *[x for o in overrides for x in ("--set", o)]],
                    output.parent / f"beam-{stage}-{mode}.json",
                )
                figures = next(s for s in result["stages"] if s["name"] == stage)
                measured.append(
                    {"stage": stage, "mode": mode, "round": round_ + 1,
                     "seconds": figures["seconds"], "peak_rss_gb": figures["peak_rss_gb"]}
                )  # fmt: skip
    ratios = {}
    for stage in stages:
        best = {
            mode: min(m["seconds"] for m in measured if m["stage"] == stage and m["mode"] == mode)
            for mode in BEAM_MODES
        }
        ratios[stage] = round(best["in_memory"] / best["multi_processing_2"], 2)
    return {"rows": rows, "runs": measured, "speedup_multi_processing_2": ratios}


def _peer(work: Path, rows: int | None, extra: list[str]) -> dict:
    """The taxi pipeline on its 15k-row CSV (the first `rows` rows if given)."""
    import importlib.util

    package = Path(importlib.util.find_spec(TAXI_PACKAGE).origin).parent
    peer_work = work / "peer"
    shutil.rmtree(peer_work, ignore_errors=True)
    (peer_work / "data").mkdir(parents=True)
    (peer_work / "module").mkdir()
    shutil.copy(package / "taxi_utils_native_keras.py", peer_work / "module")
    lines = (package / "data" / "simple" / "data.csv").read_text().splitlines(keepends=True)
    if rows:
        lines = lines[: rows + 1]
    (peer_work / "data" / "data.csv").write_text("".join(lines))
    overrides = [x for o in extra for x in ("--set", o)]
    result = _spawn(
        "[taxi peer]",
        ["_peer", "--work", str(peer_work), *overrides],
        work / "peer.json",
    )
    return {
        "rows": len(lines) - 1,
        **result,
        "groups": group_stages(result["stages"], result["wall_s"]),
    }


def machine() -> dict:
    import psutil
    import tfx

    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tfx": tfx.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Report


def table(report: dict) -> str:
    lines = []
    groups = [*GROUPS, REST]
    head = f"{'rows':>10} {'variant':<8} " + " ".join(f"{g:>15}" for g in groups)
    lines += [
        "Wall seconds (peak GB of the process tree) per stage; total = first stage start to last "
        "stage end; process = the whole child process (interpreter start, imports, summary):",
        head + f" {'total':>15} {'process':>8}",
    ]
    for run in report["runs"]:
        cells = []
        for group in groups:
            figures = run["groups"].get(group)
            cells.append(
                f"{figures['seconds']:7.1f} ({figures['peak_rss_gb']:4.1f})" if figures else "-"
            )
        total = f"{run['wall_s']:7.1f} ({run['peak_rss_gb']:4.1f})"
        lines.append(
            f"{run['rows']:>10,} {run['variant']:<8} "
            + " ".join(f"{c:>15}" for c in cells)
            + f" {total:>15} {run['process_s']:8.1f}"
        )
    if report["slopes"]:
        lines += ["", "Slope, microseconds per extra row:"]
        for slope in report["slopes"]:
            cells = " ".join(
                f"{g}={slope['us_per_row'][g]:.1f}" for g in [*groups, "total"]
                if g in slope["us_per_row"]
            )  # fmt: skip
            lines.append(
                f"  {slope['variant']:<7} {slope['from_rows']:>9,} -> {slope['to_rows']:>9,}: {cells}"
            )
    if beam := report.get("beam_modes"):
        lines += ["", f"Beam DirectRunner at {beam['rows']:,} rows (best of rounds):"]
        for stage, ratio in beam["speedup_multi_processing_2"].items():
            times = {
                mode: min(m["seconds"] for m in beam["runs"] if m["stage"] == stage and m["mode"] == mode)
                for mode in BEAM_MODES
            }  # fmt: skip
            lines.append(
                f"  {stage:<14} in_memory {times['in_memory']:.1f}s, multi_processing x2 "
                f"{times['multi_processing_2']:.1f}s: speed-up {ratio:.2f}x"
            )
    if peer := report.get("peer"):
        ours = peer["ours"]
        lines += ["", "Peer (same runner, same Beam settings), milliseconds per input row:"]
        for name, run in (("taxi", peer["taxi"]), ("shop", ours)):
            per_row = {g: 1e3 * f["seconds"] / run["rows"] for g, f in run["groups"].items()}
            cells = " ".join(f"{g}={v:.2f}" for g, v in per_row.items())
            lines.append(
                f"  {name:<5} {run['rows']:>7,} rows: total {1e3 * run['wall_s'] / run['rows']:.2f} "
                f"({run['wall_s']:.1f}s, peak {run['peak_rss_gb']:.1f} GB); {cells}"
            )
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """docs/benchmarks.md's tables, from the JSON a run wrote (`--markdown-from`)."""
    groups = [*GROUPS, REST]
    out = [
        "| rows | variant | " + " | ".join(groups) + " | total | process |",
        "| ---: | --- | " + " | ".join("---:" for _ in groups) + " | ---: | ---: |",
    ]
    for run in report["runs"]:
        cells = [
            f"{run['groups'][g]['seconds']:.1f} s ({run['groups'][g]['peak_rss_gb']:.2f} GB)"
            if g in run["groups"]
            else "-"
            for g in groups
        ]
        out.append(
            f"| {run['rows']:,} | {run['variant']} | " + " | ".join(cells)
            + f" | **{run['wall_s']:.1f} s** ({run['peak_rss_gb']:.2f} GB) | {run['process_s']:.1f} s |"
        )  # fmt: skip
    if report.get("slopes"):
        out += ["", "| variant | rows | " + " | ".join(groups) + " | total |",
                "| --- | --- | " + " | ".join("---:" for _ in groups) + " | ---: |"]  # fmt: skip
        for slope in report["slopes"]:
            per_row = slope["us_per_row"]
            out.append(
                f"| {slope['variant']} | {slope['from_rows']:,} -> {slope['to_rows']:,} | "
                + " | ".join(f"{per_row[g]:.1f}" if g in per_row else "-" for g in groups)
                + f" | **{per_row['total']:.1f}** |"
            )
    if beam := report.get("beam_modes"):
        out += ["", f"| stage at {beam['rows']:,} rows | in_memory | multi_processing, 2 workers "
                "| speed-up |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for stage, ratio in beam["speedup_multi_processing_2"].items():
            runs = {m["mode"]: m for m in beam["runs"] if m["stage"] == stage}
            out.append(
                f"| {stage} | {runs['in_memory']['seconds']:.1f} s "
                f"({runs['in_memory']['peak_rss_gb']:.2f} GB) | "
                f"{runs['multi_processing_2']['seconds']:.1f} s "
                f"({runs['multi_processing_2']['peak_rss_gb']:.2f} GB) | **{ratio:.2f}x** |"
            )
    if peer := report.get("peer"):
        out += ["", "| pipeline | rows | " + " | ".join(groups) + " | total | process |",
                "| --- | ---: | " + " | ".join("---:" for _ in groups) + " | ---: | ---: |"]  # fmt: skip
        for name, run in (("TFX taxi", peer["taxi"]), ("shop", peer["ours"])):
            cells = [
                f"{run['groups'][g]['seconds']:.1f} s" if g in run["groups"] else "-"
                for g in groups
            ]
            out.append(
                f"| {name} | {run['rows']:,} | " + " | ".join(cells)
                + f" | **{run['wall_s']:.1f} s** = {1e3 * run['wall_s'] / run['rows']:.2f} ms/row "
                f"(peak {run['peak_rss_gb']:.2f} GB) | {run['process_s']:.1f} s |"
            )  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    prepare_tensorflow_process(import_tensorflow=False)  # environment and warning filters
    parser = argparse.ArgumentParser(prog="benchmarks.pipeline_scaling", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    for name in ("_pipeline", "_peer"):
        child = sub.add_parser(name)
        child.add_argument("--set", dest="overrides", action="append", default=[])
        child.add_argument("--result", required=True)
        child.add_argument("--only", action="append", default=[])
        child.add_argument("--work")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--beam-modes", action=argparse.BooleanOptionalAction, default=True,
                        help="StatisticsGen/Transform in each Beam mode at the largest size")  # fmt: skip
    parser.add_argument("--beam-rounds", type=int, default=1)
    parser.add_argument("--beam-stages", nargs="+", default=list(BEAM_MODE_STAGES),
                        choices=list(BEAM_MODE_STAGES))  # fmt: skip
    parser.add_argument("--before-max-rows", type=int, default=100_000,
                        help="run the 'before' variant up to this size (1M before: ~40 min)")  # fmt: skip
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peer-rows", type=int, help="first N rows of the taxi CSV (default: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run, e.g. training.train_steps=100")  # fmt: skip
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", default=".cache/bench-pipeline", help="data and outputs (kept)")
    parser.add_argument("--json", default="outputs/benchmarks/pipeline_scaling.json")
    parser.add_argument("--markdown-from", metavar="JSON",
                        help="print docs/benchmarks.md's tables from a finished run's JSON and exit")  # fmt: skip
    args = parser.parse_args(argv)
    if args.markdown_from:
        print(markdown(json.loads(Path(args.markdown_from).read_text())))
        return 0
    if args.command == "_pipeline":
        return _child_pipeline(args)
    if args.command == "_peer":
        return _child_peer(args)

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "command": " ".join(["python -m benchmarks.pipeline_scaling", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "runs": [],
    }
    started = time.perf_counter()
    sizes = sorted(args.sizes)
    for index, rows in enumerate(sizes):
        data = _generate(rows, args.seed, work)
        for variant in args.variants:
            if variant == "before" and rows > args.before_max_rows:
                _say(f"[{rows:,} rows · before] skipped: above --before-max-rows")
                continue
            label = f"[{rows:,} rows · {variant} · run {index + 1}/{len(sizes)}]"
            _say(f"{label} pipeline")
            run = _pipeline_run(
                rows, variant, data, work / f"out-{rows}-{variant}", args.overrides, label
            )
            report["runs"].append(run)
            _say(
                f"{label} {run['wall_s']:.1f}s, peak {run['peak_rss_gb']:.2f} GB, auc {run['auc']}"
            )
    report["slopes"] = slopes(report["runs"])
    if args.beam_modes:
        rows = sizes[-1]
        variant = "after" if "after" in args.variants else args.variants[-1]
        output = work / f"out-{rows}-{variant}"
        _say(f"Beam modes on {', '.join(args.beam_stages)} at {rows:,} rows")
        report["beam_modes"] = _beam_modes(
            rows, work / f"data-{rows}", output, args.overrides, args.beam_rounds, args.beam_stages
        )
    if args.peer:
        _say("peer: TFX's Chicago taxi pipeline")
        taxi = _peer(work, args.peer_rows, args.overrides)
        variant = "after" if "after" in args.variants else args.variants[-1]
        same_size = [
            r for r in report["runs"] if r["rows"] == taxi["rows"] and r["variant"] == variant
        ]
        if same_size:  # --sizes included the peer's row count: that run is the comparison
            ours = same_size[0]
        else:
            data = _generate(taxi["rows"], args.seed, work)
            label = f"[shop at the peer's {taxi['rows']:,} rows]"
            ours = _pipeline_run(
                taxi["rows"], variant, data, work / "out-peer-size", args.overrides, label
            )
        report["peer"] = {"taxi": taxi, "ours": ours}
    report["benchmark_s"] = round(time.perf_counter() - started, 1)
    print(table(report), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    _say(f"wrote {args.json} ({report['benchmark_s']:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
