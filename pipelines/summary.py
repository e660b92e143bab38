"""What a run produced, read back from ML Metadata: stages, metrics, blessing, push, and the best
AUC and NDCG@k reachable on the eval rows when the data's source knows them.

The ceiling comes from a plugin, not an import: a data source that knows its ground truth (the
simulator) registers a function under the entry-point group `shop_ranking.ceilings`
(pyproject.toml). The pipeline runs without any; a shop's own export then has no known ceiling.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points

import numpy as np

import contract
from pipelines.metadata import custom_property, latest_run, open_store
from settings import PipelineConfig

CEILING_ENTRY_POINTS = "shop_ranking.ceilings"
# The eval rows handed to a ceiling: every column of the export but the impression and user ids
# (types from the schema); request_id stays, it groups the rows into lists for NDCG@k.
_EVAL_COLUMNS = tuple(c for c in contract.COLUMNS if c not in ("impression_id", "user_id"))


def known_ceiling(
    data_root: str, span: int, rows: Mapping[str, np.ndarray], labels: np.ndarray, ndcg_k: int
) -> dict[str, float] | None:
    """The best AUC and NDCG@ndcg_k any model can reach on these rows ({"auc", "ndcg"}), from the
    first registered ceiling that knows data_root (each returns None for data it did not write);
    None when none does."""
    for entry in sorted(entry_points(group=CEILING_ENTRY_POINTS), key=lambda e: e.name):
        try:
            ceiling = entry.load()
        except ImportError:  # registered, but its package is not installed here
            continue
        values = ceiling(data_root, span, rows, labels, ndcg_k)
        if values is not None:
            return {name: float(value) for name, value in values.items()}
    return None


@dataclass
class RunSummary:
    pipeline: str
    span: int | None = None
    stages: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_by_slice: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)  # latest blessed model
    tuning: dict | None = None  # KatibTuner's report (components/tuning/report.py)
    eval_rows: int | None = None
    bayes_auc: float | None = None
    bayes_ndcg: float | None = None
    ndcg_k: int | None = None
    blessed: bool | None = None
    pushed: bool | None = None
    pushed_destination: str | None = None
    trained_on_span: int | None = None  # the span of the model the Pusher was handed
    serving_span: int | None = None  # the span of the newest pushed version before this run
    rolled_back_from_span: int | None = None  # set when this run pushed an explicit rollback
    not_pushed_reason: str | None = None  # a blessed model the Pusher refused, and why
    model_uri: str | None = None
    examples_uri: str | None = None
    pipeline_root: str | None = None
    metadata_path: str | None = None
    error: str | None = None

    @property
    def auc_gap(self) -> float | None:
        if self.bayes_auc is None or "auc" not in self.metrics:
            return None
        return self.bayes_auc - self.metrics["auc"]

    @property
    def ndcg(self) -> float | None:
        """The candidate's NDCG@k per request, from TFMA."""
        return self.metrics.get(f"ndcg@{self.ndcg_k}")

    @property
    def ndcg_gap(self) -> float | None:
        if self.bayes_ndcg is None or self.ndcg is None:
            return None
        return self.bayes_ndcg - self.ndcg

    def to_json(self) -> str:
        return json.dumps(
            {**asdict(self), "auc_gap": self.auc_gap, "ndcg_gap": self.ndcg_gap},
            indent=2,
            sort_keys=True,
        )


def read_eval_rows(examples_uri: str, split: str = "eval") -> dict[str, np.ndarray]:
    """The export's columns (but the ids) from ExampleGen's gzipped TFRecords of one split."""
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import schema_pb2

    from contract.schema_tool import load_schema

    dtypes = {schema_pb2.FLOAT: tf.float32, schema_pb2.INT: tf.int64, schema_pb2.BYTES: tf.string}
    types = {feature.name: feature.type for feature in load_schema().feature}
    spec = {name: tf.io.FixedLenFeature([], dtypes[types[name]]) for name in _EVAL_COLUMNS}
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no files for split {split!r} under {examples_uri}")
    dataset = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(4096)
        .map(lambda batch: tf.io.parse_example(batch, spec))
    )
    columns: dict[str, list[np.ndarray]] = {name: [] for name in spec}
    for batch in dataset:
        for name, values in batch.items():
            columns[name].append(values.numpy())
    out = {name: np.concatenate(parts) for name, parts in columns.items()}
    for name in _EVAL_COLUMNS:
        if types[name] == schema_pb2.BYTES:
            out[name] = out[name].astype(str)
    return out


Metrics = tuple[dict[str, float], dict[str, dict[str, float]]]  # overall, by slice


def _metric_name(key) -> str:
    """TFMA's metric name, with "@k" for a top-k metric (NDCG's key is "ndcg", top_k 10)."""
    if key.HasField("sub_key") and key.sub_key.HasField("top_k"):
        return f"{key.name}@{key.sub_key.top_k.value}"
    return key.name


def tfma_metrics_by_model(evaluation_uri: str) -> dict[str, Metrics]:
    """Overall and per-slice metrics of each model the Evaluator scored, in one pass:
    "candidate" and, when it compared with one, "baseline" (the latest blessed model, same rows)."""
    import tensorflow_model_analysis as tfma

    found: dict[str, Metrics] = {}
    for metrics_for_slice in tfma.load_metrics(evaluation_uri):
        key = tfma.slicer.deserialize_slice_key(metrics_for_slice.slice_key)
        name = tfma.slicer.stringify_slice_key(key)
        for item in metrics_for_slice.metric_keys_and_values:
            if item.key.is_diff or not item.value.HasField("double_value"):
                continue
            overall, by_slice = found.setdefault(item.key.model_name or "candidate", ({}, {}))
            values = overall if name == "Overall" else by_slice.setdefault(name, {})
            values[_metric_name(item.key)] = float(item.value.double_value.value)
    return found


def tfma_metrics(evaluation_uri: str) -> Metrics:
    """The candidate model's overall and per-slice metrics."""
    return tfma_metrics_by_model(evaluation_uri).get("candidate", ({}, {}))


def summarize(config: PipelineConfig, error: BaseException | None = None) -> RunSummary:
    """Reads the newest run of config.name from ML Metadata into a RunSummary."""
    summary = RunSummary(
        pipeline=config.name,
        ndcg_k=config.evaluation.ndcg_k,
        error=str(error) if error else None,
        pipeline_root=os.path.abspath(config.pipeline_root),
        metadata_path=os.path.abspath(config.metadata_path),
    )
    if not os.path.exists(config.metadata_path):
        return summary
    nodes = latest_run(open_store(config.metadata_path), config.name)
    summary.stages = {node_id: node.state for node_id, node in nodes.items()}

    if (gen := nodes.get("CsvExampleGen")) and gen.outputs.get("examples"):
        examples = gen.outputs["examples"][-1]
        summary.examples_uri = examples.uri
        span = custom_property(examples, "span")
        summary.span = int(span) if span is not None else None
    if (trainer := nodes.get("Trainer")) and trainer.outputs.get("model"):
        summary.model_uri = trainer.outputs["model"][-1].uri
    if (evaluator := nodes.get("Evaluator")) and evaluator.state in ("COMPLETE", "CACHED"):
        by_model = tfma_metrics_by_model(evaluator.outputs["evaluation"][-1].uri)
        summary.metrics, summary.metrics_by_slice = by_model.get("candidate", ({}, {}))
        summary.baseline_metrics = by_model.get("baseline", ({}, {}))[0]
        summary.blessed = bool(custom_property(evaluator.outputs["blessing"][-1], "blessed"))
    if (tuner := nodes.get("KatibTuner")) and tuner.outputs.get("tuning_report"):
        from components.tuning.component import read_report

        summary.tuning = asdict(read_report(tuner.outputs["tuning_report"][-1].uri))
    if (pusher := nodes.get("Pusher")) and pusher.state in ("COMPLETE", "CACHED"):
        pushed = pusher.outputs["pushed_model"][-1]
        summary.pushed = bool(custom_property(pushed, "pushed"))
        summary.pushed_destination = custom_property(pushed, "pushed_destination")
        for name in ("trained_on_span", "serving_span", "rolled_back_from_span"):
            value = custom_property(pushed, name)
            setattr(summary, name, int(value) if value is not None else None)
        summary.not_pushed_reason = custom_property(pushed, "not_pushed_reason")
    if summary.examples_uri and summary.span is not None and summary.metrics:
        rows = read_eval_rows(summary.examples_uri)
        summary.eval_rows = int(len(rows[contract.LABEL]))
        ceiling = known_ceiling(  # None: no source knows this data's ceiling
            os.path.abspath(config.data.root),
            summary.span,
            rows,
            rows[contract.LABEL],
            config.evaluation.ndcg_k,
        )
        if ceiling is not None:
            summary.bayes_auc, summary.bayes_ndcg = ceiling["auc"], ceiling["ndcg"]
    return summary


# How close to the Bayes ceiling a default run must get (the project's acceptance bar).
ACCEPTED_GAP = 0.02


def render(summary: RunSummary, seconds: float | None = None, max_gap: float = ACCEPTED_GAP) -> str:
    lines = [
        f"Pipeline {summary.pipeline}: span {summary.span}"
        + (f", {seconds:.0f}s" if seconds else "")
    ]
    lines.append("  stages: " + ", ".join(f"{k} {v.lower()}" for k, v in summary.stages.items()))
    if summary.error:
        lines.append("  STOPPED: " + summary.error.replace("\n", "\n  "))
    m = summary.metrics
    if m:
        auc = m.get("auc", float("nan"))
        if summary.auc_gap is None:
            lines.append(
                f"  eval ({summary.eval_rows:,} rows): AUC {auc:.4f} (no simulator manifest: ceiling unknown)"
            )
        else:
            verdict = "within" if summary.auc_gap <= max_gap else "OUTSIDE"
            lines.append(
                f"  eval ({summary.eval_rows:,} rows): AUC {auc:.4f} | Bayes-optimal AUC "
                f"{summary.bayes_auc:.4f} | gap {summary.auc_gap:.4f} ({verdict} {max_gap})"
            )
        k, ndcg = summary.ndcg_k, summary.ndcg
        if ndcg is not None and summary.ndcg_gap is None:
            lines.append(f"  NDCG@{k} per request {ndcg:.4f} (ceiling unknown)")
        elif ndcg is not None:
            verdict = "within" if summary.ndcg_gap <= max_gap else "OUTSIDE"
            lines.append(
                f"  NDCG@{k} per request {ndcg:.4f} | Bayes-optimal NDCG@{k} "
                f"{summary.bayes_ndcg:.4f} | gap {summary.ndcg_gap:.4f} ({verdict} {max_gap})"
            )
        lines.append(
            f"  log loss {m.get('binary_crossentropy', float('nan')):.4f} | calibration "
            f"(mean prediction / mean label) {m.get('calibration', float('nan')):.3f}"
        )
        for name, values in sorted(summary.metrics_by_slice.items()):
            lines.append(
                f"    {name}: AUC {values.get('auc', float('nan')):.4f}, "
                f"NDCG@{k} {values.get(f'ndcg@{k}', float('nan')):.4f}, "
                f"n={values.get('example_count', 0):.0f}"
            )
    if summary.baseline_metrics.get("auc") is not None and m:
        base = summary.baseline_metrics["auc"]
        line = (
            f"  previous blessed model on the same rows: AUC {base:.4f} "
            f"(this model {m.get('auc', float('nan')) - base:+.4f})"
        )
        base_ndcg = summary.baseline_metrics.get(f"ndcg@{summary.ndcg_k}")
        if base_ndcg is not None and summary.ndcg is not None:
            line += f", NDCG@{summary.ndcg_k} {base_ndcg:.4f} ({summary.ndcg - base_ndcg:+.4f})"
        lines.append(line)
    if summary.tuning:
        lines.extend(render_tuning(summary.tuning))
    if summary.blessed is not None:
        lines.append(f"  blessed: {'yes' if summary.blessed else 'NO (thresholds not met)'}")
    if summary.pushed and summary.rolled_back_from_span is not None:
        lines.append(
            f"  rolled back to span {summary.trained_on_span} (newest pushed was span "
            f"{summary.rolled_back_from_span}): pushed model: {summary.pushed_destination}"
        )
    elif summary.pushed:
        lines.append(f"  pushed model: {summary.pushed_destination}")
    elif summary.pushed is False and summary.not_pushed_reason:
        lines.append(
            f"  not pushed: trained on span {summary.trained_on_span}, older than pushed span "
            f"{summary.serving_span}; the serving folder keeps its model. To serve this one "
            f"anyway: shop-pipeline rollback --to-span {summary.trained_on_span}"
        )
    elif summary.pushed is False:
        lines.append("  not pushed: the serving folder keeps its previous model")
    lines.append(f"  artifacts: {summary.pipeline_root}  |  ML Metadata: {summary.metadata_path}")
    return "\n".join(lines)


def render_tuning(tuning: dict) -> list[str]:
    """The search in a few lines: budget, the start trial (training's values) and the best."""
    trials, best = tuning["trials"], tuning["best"] or {}
    metric = tuning["objective_metric"]
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    lines = [
        f"  tuning ({tuning['backend']}, {tuning['algorithm']}, {tuning['seconds']:.0f}s): "
        + ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items()))
    ]
    start = next((t for t in trials if t.get("start_point")), None)
    if start and start.get("objective") is not None:
        lines.append(f"    training's values: held-out {metric} {start['objective']:.4f}")
    if best:
        values = " ".join(f"{k}={v}" for k, v in best["values"].items())
        lines.append(
            f"    best {best['name']}: held-out {metric} {best['objective']:.4f} -> Trainer: {values}"
        )
    return lines


def calibration_buckets(config: PipelineConfig, groups: int = 12):
    """TFMA's calibration histogram of the newest Evaluator run, merged into `groups` buckets of
    about equal example count: mean prediction vs observed rate (a reliability diagram's points)."""
    import pandas as pd
    import tensorflow_model_analysis as tfma

    evaluator = latest_run(open_store(config.metadata_path), config.name).get("Evaluator")
    if evaluator is None or not evaluator.outputs.get("evaluation"):
        raise FileNotFoundError(f"no Evaluator output for {config.name} in {config.metadata_path}")
    rows = []
    for plots in tfma.load_plots(evaluator.outputs["evaluation"][-1].uri):
        if plots.slice_key.single_slice_keys:
            continue  # the overall slice only
        for item in plots.plot_keys_and_values:
            if item.key.model_name not in ("", "candidate"):
                continue  # the baseline model's histogram, when there is one
            for bucket in item.value.calibration_histogram_buckets.buckets:
                if bucket.num_weighted_examples.value > 0:
                    rows.append(
                        (
                            bucket.num_weighted_examples.value,
                            bucket.total_weighted_refined_prediction.value,
                            bucket.total_weighted_label.value,
                        )
                    )
    frame = pd.DataFrame(rows, columns=["count", "prediction_sum", "label_sum"])
    frame["group"] = np.minimum(
        (frame["count"].cumsum() / frame["count"].sum() * groups).astype(int), groups - 1
    )
    merged = frame.groupby("group").sum()
    return pd.DataFrame(
        {
            "count": merged["count"],
            "mean_prediction": merged["prediction_sum"] / merged["count"],
            "mean_label": merged["label_sum"] / merged["count"],
        }
    )
