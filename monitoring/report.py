"""The monitor's report: JSON for machines, one HTML page with plots for people.

The page shows the verdict first (what crossed, by how much, what the trigger did), then each
compared feature's distance against its threshold, the distributions of the features that moved
most (training vs this window vs the previous one), the score distribution, the calibration of
predictions whose outcomes arrived, and the trend over every checked window.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

# Figures without pyplot: no backend is chosen, so importing this leaves notebook plots alone.
from matplotlib.figure import Figure
from tensorflow_metadata.proto.v0 import statistics_pb2

from contract import layout

MAX_FEATURE_PLOTS = 4


def build(
    *, config, window, traffic_rows, judged, version, versions, shifts, problems, predictions,
    quality, verdict, retrain, previous, outcomes_as_of, notes, trigger_state, outcome_rate=None,
    ranking=None,
) -> dict[str, Any]:  # fmt: skip
    crossed = sorted({s.feature for s in shifts if s.crossed})
    return {
        "model": config.serving.model_name,
        "window": {
            "start": window.start,
            "end": window.end,
            "name": window.name,
            "text": window.describe(),
        },  # fmt: skip
        "previous_window": previous,
        "traffic_rows": traffic_rows,
        "judged": judged,
        "min_window_rows": config.monitoring.min_window_rows,
        "version": version,
        "versions": versions,
        "drifted_features": crossed,
        "shifts": [s.to_dict() for s in sorted(shifts, key=lambda s: -s.ratio)],
        "schema_problems": problems,
        "predictions": predictions,
        "quality": dict(quality),
        "outcome_rate": dict(outcome_rate) if outcome_rate else None,
        "ranking": dict(ranking) if ranking else None,
        "outcomes_as_of": outcomes_as_of,
        "signals": verdict.signals,
        "alert": verdict.alert,
        "verdict": asdict(verdict),
        "retrain": retrain.to_dict() if retrain else None,
        "retrains_so_far": len(trigger_state.fired),
        "thresholds": config.monitoring.model_dump(
            include={
                "min_window_rows",
                "retrain_on_drifted_features",
                "min_live_auc",
                "max_calibration_error",
                "max_prediction_shift",
                "max_outcome_rate_ratio",
                "min_labelled",
                "confirm_windows",
                "retrain_cooldown_hours",
                "retrain",
            }  # fmt: skip
        ),
        "notes": notes,
    }


def write(folder: str, body: dict[str, Any]) -> str:
    """report.json, written by rename (contract/layout.py): never half a report."""
    return layout.write_json(os.path.join(folder, "report.json"), body, indent=2)


def summary_lines(body: dict[str, Any]) -> list[str]:
    """The report in a few lines for the terminal."""
    q = body["quality"]
    lines = [
        f"window {body['window']['text']}: {body['traffic_rows']} predictions"
        + (f", version {body['version']}" if body["version"] else "")
        + ("" if body["judged"] else f" (fewer than {body['min_window_rows']}: not judged)"),
    ]
    crossed = [s for s in body["shifts"] if s["crossed"]]
    if crossed:
        lines.append("  features past their thresholds: " + ", ".join(
            f"{s['feature']} ({s['comparison']} {s['value']:.3f} > {s['threshold']:g})" for s in crossed
        ))  # fmt: skip
    elif body["shifts"]:
        top = body["shifts"][0]
        lines.append(
            f"  no feature past its threshold (closest: {top['feature']} {top['comparison']} "
            f"{top['value']:.3f}, {top['ratio']:.0%} of {top['threshold']:g})"
        )
    p = body["predictions"]
    if p["mean"] is not None:
        shift = p["shift_vs_previous"]
        lines.append(
            f"  scores: mean {p['mean']:.4f}, p90 {p['quantiles']['p90']:.4f}"
            + (f", shift vs previous window {shift:.3f}" if shift is not None else "")
        )
    if q["labelled"]:
        auc = f"{q['auc']:.4f}" if q["auc"] is not None else "n/a"
        lines.append(
            f"  live quality on {q['labelled']} outcomes ({q['coverage']:.0%} of the window, "
            f"{q['positives']} purchases): AUC {auc}, calibration {q['calibration'] or float('nan'):.2f}"
            + ("" if q["judged"] else " (too few to judge)")
        )
    else:
        lines.append("  live quality: no outcomes arrived yet")
    r = body.get("outcome_rate")
    if r and r["settled"]:  # silent until an attribution window has closed
        lines.append(
            f"  outcome rate {r['rate']:.4f} on {r['settled']} settled impressions "
            f"({r['coverage']:.0%} of the window)"
            + (
                f" vs {r['training_rate']:.4f} in training ({r['ratio']:.2f}x)"
                if r["ratio"] is not None
                else ": no training rate to compare with"
            )
            + ("" if r["judged"] or r["ratio"] is None else " (too few to judge)")
        )
    g = body.get("ranking")
    if g and g["ndcg"] is not None:
        lines.append(
            f"  live NDCG@{g['k']} {g['ndcg']:.4f} on {g['requests']} settled lists with a purchase"
            + ("" if g["judged"] else " (too few to judge)")
        )
    for problem in body["schema_problems"]:
        lines.append(f"  schema: {problem}")
    lines.append(f"  verdict: {body['verdict']['note']}")
    for note in body["notes"]:
        lines.append(f"  note: {note}")
    return lines


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _feature_stats(stats: statistics_pb2.DatasetFeatureStatisticsList | None, name: str):
    if stats is None or not stats.datasets:
        return None
    for feature in stats.datasets[0].features:
        if ".".join(feature.path.step) == name or feature.name == name:
            return feature
    return None


def _distribution(
    feature,
) -> tuple[list[str], list[float]] | tuple[list[tuple[float, float]], list[float]] | None:
    if feature is None:
        return None
    if feature.HasField("string_stats"):
        buckets = feature.string_stats.rank_histogram.buckets or [
            statistics_pb2.RankHistogram.Bucket(label=v.value, sample_count=v.frequency)
            for v in feature.string_stats.top_values
        ]
        total = sum(b.sample_count for b in buckets) or 1.0
        return [b.label for b in buckets], [b.sample_count / total for b in buckets]
    if feature.HasField("num_stats"):
        for histogram in feature.num_stats.histograms:
            if histogram.type == statistics_pb2.Histogram.STANDARD:
                total = sum(b.sample_count for b in histogram.buckets) or 1.0
                return (
                    [(b.low_value, b.high_value) for b in histogram.buckets],
                    [b.sample_count / total for b in histogram.buckets],
                )
    return None


def _feature_figure(name: str, sides: dict[str, Any]) -> str | None:
    shown = {label: _distribution(_feature_stats(stats, name)) for label, stats in sides.items()}
    shown = {k: v for k, v in shown.items() if v}
    if not shown:
        return None
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    first = next(iter(shown.values()))
    if isinstance(first[0][0], str):  # categorical: shares of the same labels side by side
        labels = []
        for values, _ in shown.values():
            labels += [v for v in values if v not in labels]
        labels = labels[:15]
        width = 0.8 / len(shown)
        for i, (label, (values, shares)) in enumerate(shown.items()):
            lookup = dict(zip(values, shares, strict=False))
            ax.bar([x + i * width for x in range(len(labels))], [lookup.get(v, 0) for v in labels],
                   width=width, label=label)  # fmt: skip
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))])
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("share")
    else:  # numeric: density per equal-width bucket
        for label, (bounds, shares) in shown.items():
            xs, ys = [], []
            for (low, high), share in zip(bounds, shares, strict=False):
                density = share / (high - low) if high > low else 0.0
                xs += [low, high]
                ys += [density, density]
            ax.plot(xs, ys, label=label)
        ax.set_ylabel("density")
    ax.set_title(name)
    ax.legend(fontsize=8)
    return _png(fig)


def _shift_figure(shifts: list[dict[str, Any]]) -> str | None:
    if not shifts:
        return None
    fig = Figure(figsize=(7, 0.35 * len(shifts) + 1))
    ax = fig.subplots()
    labels = [f"{s['feature']} ({s['comparison']})" for s in shifts][::-1]
    ratios = [s["ratio"] for s in shifts][::-1]
    ax.barh(labels, ratios, color=["#c0392b" if r > 1 else "#7f8c8d" for r in ratios])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("distance / the schema's threshold (past 1 = crossed)")
    return _png(fig)


def _scores_figure(predictions: dict[str, Any], previous: dict[str, Any] | None) -> str | None:
    if not predictions["count"]:
        return None
    edges = predictions["edges"]
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    for label, counts in (("this window", predictions["histogram"]),
                          ("previous window", previous["predictions"]["histogram"] if previous else None)):  # fmt: skip
        if counts and sum(counts):
            total = sum(counts)
            ax.step(range(len(counts)), [c / total for c in counts], where="mid", label=label)
    ticks = list(range(0, len(edges) - 1, 4))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{edges[i]:.3f}" for i in ticks], fontsize=8)
    ax.set_xlabel("score bucket (lower edge; logit-spaced)")
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    return _png(fig)


def _calibration_figure(quality: dict[str, Any]) -> str | None:
    curve = quality.get("curve") or []
    if not curve:
        return None
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    xs = [c["mean_score"] for c in curve]
    ys = [c["purchase_rate"] for c in curve]
    top = max(xs + ys) * 1.1
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel("mean score")
    ax.set_ylabel("purchase rate")
    ax.set_title("calibration (score deciles)")
    return _png(fig)


def _history_figure(past: list[dict[str, Any]]) -> str | None:
    if len(past) < 2:
        return None
    times = [datetime.fromtimestamp(r["window"]["end"], timezone.utc) for r in past]
    fig = Figure(figsize=(7, 8))
    axes = fig.subplots(4, 1, sharex=True)
    axes[0].plot(times, [len(r["drifted_features"]) for r in past], marker="o")
    axes[0].set_ylabel("features crossed")
    axes[1].plot(
        times, [r["quality"]["auc"] if r["quality"]["judged"] else None for r in past], marker="o"
    )
    axes[1].set_ylabel("live AUC")
    axes[2].plot(times, [r["predictions"]["mean"] for r in past], marker="o")
    axes[2].set_ylabel("mean score")
    rates = [r.get("outcome_rate") or {} for r in past]
    axes[3].plot(times, [r["ratio"] if r.get("judged") else None for r in rates], marker="o")
    axes[3].axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes[3].set_ylabel("outcome / training rate")
    for r, t in zip(past, times, strict=False):
        if r.get("retrain"):
            for ax in axes:
                ax.axvline(t, color="#c0392b", linestyle=":", linewidth=1)
    fig.autofmt_xdate()
    return _png(fig)


def render_html(
    body: dict[str, Any], past: list[dict[str, Any]], *, training=None, window=None, previous=None
) -> str:
    esc = html.escape
    sections = [f"<h1>Monitor: {esc(body['model'])} — {esc(body['window']['text'])}</h1>"]
    verdict = "ALERT" if body["alert"] else "OK"
    sections.append(
        f"<p class='{verdict.lower()}'><b>{verdict}</b>: {esc(body['verdict']['note'])}</p>"
        + "".join(f"<li>{esc(s)}</li>" for s in body["signals"]).join(("<ul>", "</ul>"))
    )
    if body["retrain"]:
        r = body["retrain"]
        sections.append(
            f"<p><b>Retrain {esc(r['status'])}</b> on span {r['span']}: {esc(r['detail'].splitlines()[0])}</p>"
        )
    sections.append("<pre>" + esc("\n".join(summary_lines(body))) + "</pre>")
    previous_report = None
    if body["previous_window"]:
        previous_report = next(
            (r for r in past if r["window"]["end"] == body["previous_window"]["end"]), None
        )
    figures = [("Feature distance vs threshold", _shift_figure(body["shifts"]))]
    sides = {"training": training, "this window": window, "previous window": previous}
    for name in list(dict.fromkeys(s["feature"] for s in body["shifts"]))[:MAX_FEATURE_PLOTS]:
        figures.append((f"Distribution of {name}", _feature_figure(name, sides)))
    figures += [
        ("Score distribution", _scores_figure(body["predictions"], previous_report)),
        ("Calibration of labelled predictions", _calibration_figure(body["quality"])),
        ("Trend over checked windows (dotted: a retrain)", _history_figure(past)),
    ]
    for title, png in figures:
        if png:
            sections.append(f"<h2>{esc(title)}</h2><img src='data:image/png;base64,{png}'/>")
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}.alert{color:#c0392b}.ok{color:#27ae60}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>monitor</title><style>{style}</style></head><body>{''.join(sections)}</body></html>"
