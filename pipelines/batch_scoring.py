"""Batch inference: score a whole span offline with a Beam job, predictions next to the inputs.

For asynchronous work (a nightly ranking of a span, a backfill after a new model) the model server
is the wrong tool: this job reads every CSV of span N (data.root + data.file_pattern), parses each
row with the column types the pushed SavedModel's `serving_raw` signature declares, scores batches
of rows with that signature (the model loaded once per worker process) and writes CSV shards with
the input row's columns plus `purchase_probability` and `model_version` to
<output_root>/predictions/<serving.model_name>/span-N/, with a summary.json beside them.

The runner comes from the beam section (DirectRunner here, Dataflow/Flink/Spark by config), like
the pipeline's data stages. Every input row is written exactly once; the order is not kept.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared
from tensorflow.core.protobuf import saved_model_pb2

from components.signatures import OUTPUT_KEY, RAW_SIGNATURE, score_raw_rows
from contract import layout
from pipelines.spans import SpanError, available_spans
from settings import PipelineConfig

VERSION_COLUMN = "model_version"
SHARD_PREFIX = "predictions"
SUMMARY_FILE = "summary.json"
# Rows are small (16 features) and one signature call costs about a millisecond of fixed overhead:
# BatchElements starts at the minimum and grows towards the maximum while calls stay cheap.
MIN_BATCH_SIZE = 128
MAX_BATCH_SIZE = 4096

_log = logging.getLogger(__name__)


class BatchScoringError(ValueError):
    """Batch scoring cannot run or stopped: the message names the directory, file, column, value."""


# Marks the message of an error raised inside the Beam job, so that the launcher can find it in
# whatever the runner wraps it in (a DirectRunner traceback, a Dataflow job error).
_MARK = "batch-scoring error: "


class _RowError(ValueError):
    def __init__(self, message: str):  # Beam re-creates it with the marked message
        super().__init__(message if message.startswith(_MARK) else _MARK + message)


# ---------------------------------------------------------------------------------------------
# What the job needs, resolved before it starts (fast failures, no workers started)


@dataclass(frozen=True)
class ScoringPlan:
    span: int
    model_version: str
    model_dir: str
    features: tuple[tuple[str, str], ...]  # (name, dtype name) as serving_raw declares them
    input_files: tuple[str, ...]
    headers: dict[str, tuple[str, ...]]  # input file -> its header's columns
    columns: tuple[str, ...]  # the output's columns: the inputs' (union, in order), then ours
    output_dir: str

    @property
    def output_pattern(self) -> str:
        return f"{self.output_dir}/{SHARD_PREFIX}-*-of-*.csv"

    @property
    def summary_path(self) -> str:
        return f"{self.output_dir}/{SUMMARY_FILE}"


def resolve_model(config: PipelineConfig, version: str | None = None) -> tuple[str, str]:
    """(version, directory) of the newest pushed model under config.serving_dir, or of `version`."""
    base = config.serving_dir
    if version is None:
        version = layout.newest(_listdir(base))
        if version is None:
            raise BatchScoringError(
                f"no pushed model under {base}: run the pipeline (`shop-pipeline run`) until "
                "Pusher pushes a blessed model, or point output_root at the run that did"
            )
    model_dir = f"{base}/{version}"
    if not tf.io.gfile.exists(f"{model_dir}/saved_model.pb"):
        found = layout.numbered(_listdir(base))
        raise BatchScoringError(
            f"model version {version} not found: {model_dir} holds no saved_model.pb "
            f"(pushed versions under {base}: {found or 'none'})"
        )
    return version, model_dir


def raw_signature_features(model_dir: str) -> tuple[tuple[str, str], ...]:
    """The serving_raw signature's inputs and dtypes, read from saved_model.pb (no graph load)."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(f"{model_dir}/saved_model.pb", "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if RAW_SIGNATURE in meta_graph.signature_def:
            signature = meta_graph.signature_def[RAW_SIGNATURE]
            break
    else:
        raise BatchScoringError(
            f"{model_dir} has no {RAW_SIGNATURE!r} signature (it was exported before "
            "components/signatures.py added it): retrain and push the model"
        )
    if OUTPUT_KEY not in signature.outputs:
        raise BatchScoringError(f"{model_dir}: {RAW_SIGNATURE} does not return {OUTPUT_KEY!r}")
    features = []
    for name, info in sorted(signature.inputs.items()):
        dtype = tf.dtypes.as_dtype(info.dtype)
        if not (dtype == tf.string or dtype.is_integer or dtype.is_floating or dtype == tf.bool):
            raise BatchScoringError(f"{model_dir}: input {name!r} has unsupported dtype {dtype}")
        features.append((name, dtype.name))
    return tuple(features)


def span_files(config: PipelineConfig, span: int) -> list[str]:
    pattern = (
        f"{config.data.root.rstrip('/')}/{config.data.file_pattern.replace('{SPAN}', str(span))}"
    )
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        try:
            found = available_spans(config.data)
        except SpanError as err:
            raise BatchScoringError(f"span {span}: {err}") from err
        raise BatchScoringError(
            f"span {span} not found: no file matches {pattern} (spans under {config.data.root}: "
            f"{found or 'none'})"
        )
    # Absolute local paths: the job reports each row's file by the path it was given.
    return [f if "://" in f else os.path.abspath(f) for f in files]


def read_header(path: str) -> tuple[str, ...]:
    with tf.io.gfile.GFile(path, "r") as f:
        first = f.readline()
    if not first.strip():
        raise BatchScoringError(f"{path}: empty file or empty first line (a CSV header is needed)")
    columns = tuple(c.strip() for c in next(csv.reader([first.lstrip("\ufeff")])))
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise BatchScoringError(f"{path}: header repeats column(s) {duplicates}")
    return columns


def output_dir(config: PipelineConfig, span: int) -> str:
    return "/".join(
        [config.output_root.rstrip("/"), "predictions", config.serving.model_name, f"span-{span}"]
    )


def plan_scoring(
    config: PipelineConfig, span: int | None = None, model_version: str | None = None
) -> ScoringPlan:
    """Checks the model and the span's files before any worker starts."""
    version, model_dir = resolve_model(config, model_version)
    features = raw_signature_features(model_dir)
    if span is None:
        span = config.data.span
    if span is None:
        try:
            spans = available_spans(config.data)
        except SpanError as err:
            raise BatchScoringError(str(err)) from err
        if not spans:
            raise BatchScoringError(
                f"no span matching {config.data.file_pattern!r} under {config.data.root}"
            )
        span = spans[-1]
    files = span_files(config, span)
    headers: dict[str, tuple[str, ...]] = {}
    columns: list[str] = []
    for path in files:
        header = read_header(path)
        missing = [name for name, _ in features if name not in header]
        if missing:
            raise BatchScoringError(
                f"{path}: the header has no column {', '.join(map(repr, missing))}, which model "
                f"version {version} needs (its {RAW_SIGNATURE} signature takes "
                f"{[name for name, _ in features]})"
            )
        clash = [c for c in (OUTPUT_KEY, VERSION_COLUMN) if c in header]
        if clash:
            raise BatchScoringError(
                f"{path}: the header already has {clash}, the columns the predictions add"
            )
        headers[path] = header
        columns += [c for c in header if c not in columns]
    return ScoringPlan(
        span=span,
        model_version=version,
        model_dir=model_dir,
        features=features,
        input_files=tuple(files),
        headers=headers,
        columns=(*columns, OUTPUT_KEY, VERSION_COLUMN),
        output_dir=output_dir(config, span),
    )


# ---------------------------------------------------------------------------------------------
# The Beam job


def _parse_value(text: str, dtype: str) -> Any:
    if dtype == "string":
        return text
    value = text.strip()
    if dtype == "bool":
        lowered = value.lower()
        if lowered in ("1", "true"):
            return True
        if lowered in ("0", "false"):
            return False
        raise ValueError(text)
    if dtype.startswith(("int", "uint")):
        try:
            return int(value)
        except ValueError:
            number = float(value)  # "3.0" from a float-typed export; "3.5" is not an int
            if not number.is_integer():
                raise
            return int(number)
    return float(value)  # raises on "" and on words; "nan" and "inf" are floats


class ParseRow(beam.DoFn):
    """(file, line) -> (the output row's input columns, the feature values in signature order)."""

    def __init__(self, plan: ScoringPlan):
        self._headers = plan.headers
        self._features = plan.features
        self._input_columns = plan.columns[:-2]

    def process(self, element: tuple[str, str]) -> Iterator[tuple[tuple[str, ...], tuple]]:
        path, line = element
        if line.strip():  # a blank line (the last one of some exports) is no row
            yield self._parse(path, line)

    def _parse(self, path: str, line: str) -> tuple[tuple[str, ...], tuple]:
        header = self._headers.get(path)
        if header is None:
            raise _RowError(f"{path}: a file the job was not planned with")
        fields = next(csv.reader([line]))
        if len(fields) != len(header):
            raise _RowError(
                f"{path}: a row has {len(fields)} values for the header's {len(header)} columns: "
                f"{line[:200]!r}"
            )
        row = dict(zip(header, fields, strict=True))
        values = []
        for name, dtype in self._features:
            try:
                values.append(_parse_value(row[name], dtype))
            except ValueError:
                raise _RowError(
                    f"{path}: column {name!r} holds {row[name]!r}, not a valid {dtype} (row "
                    f"{line[:200]!r})"
                ) from None
        return tuple(row.get(c, "") for c in self._input_columns), tuple(values)


class _LoadedModel:
    """The SavedModel; Shared keeps one per worker process."""

    def __init__(self, model_dir: str):
        self.model = tf.saved_model.load(model_dir)


class ScoreBatch(beam.DoFn):
    """A batch of parsed rows -> (input columns, purchase_probability), one call per batch."""

    def __init__(self, plan: ScoringPlan):
        self._model_dir = plan.model_dir
        self._features = plan.features
        self._shared = shared.Shared()
        self._rows = beam.metrics.Metrics.counter("batch_scoring", "rows_scored")
        self._batch_sizes = beam.metrics.Metrics.distribution("batch_scoring", "batch_size")

    def setup(self) -> None:
        self._loaded = self._shared.acquire(
            lambda: _LoadedModel(self._model_dir), tag=self._model_dir
        )

    def teardown(self) -> None:
        self._loaded = None
        _release_models()

    def process(self, batch: list[tuple[tuple[str, ...], tuple]]) -> Iterator[tuple[tuple, float]]:
        columns = {
            name: [values[i] for _, values in batch] for i, (name, _) in enumerate(self._features)
        }
        scores = score_raw_rows(self._loaded.model, columns)
        if len(scores) != len(batch):
            raise _RowError(f"the model returned {len(scores)} scores for {len(batch)} rows")
        self._rows.inc(len(batch))
        self._batch_sizes.update(len(batch))
        for (columns, _), score in zip(batch, scores, strict=True):
            yield columns, float(score)


def _csv_line(fields: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def format_row(element: tuple[tuple[str, ...], float], version: str) -> str:
    columns, score = element
    return _csv_line([*columns, f"{score:.9g}", version])  # 9 digits: a float32 exactly


class CountAndMean(beam.CombineFn):
    def create_accumulator(self) -> tuple[int, float]:
        return 0, 0.0

    def add_input(self, acc: tuple[int, float], score: float) -> tuple[int, float]:
        return acc[0] + 1, acc[1] + score

    def merge_accumulators(self, accs: Iterable[tuple[int, float]]) -> tuple[int, float]:
        count, total = 0, 0.0
        for acc in accs:
            count, total = count + acc[0], total + acc[1]
        return count, total

    def extract_output(self, acc: tuple[int, float]) -> tuple[int, float | None]:
        return acc[0], (acc[1] / acc[0] if acc[0] else None)


def summary_json(count_mean: tuple[int, float | None], base: dict[str, Any]) -> str:
    rows, mean = count_mean
    return json.dumps({**base, "rows": rows, "mean_score": mean}, indent=2, sort_keys=True)


def build(
    pipeline: beam.Pipeline,
    plan: ScoringPlan,
    base_summary: dict[str, Any],
    min_batch_size: int = MIN_BATCH_SIZE,
    max_batch_size: int = MAX_BATCH_SIZE,
) -> None:
    """The scoring transforms on `pipeline` (written when the pipeline runs)."""
    scored = (
        pipeline
        | "InputFiles" >> beam.Create(plan.input_files)
        | "ReadLines" >> beam.io.ReadAllFromText(skip_header_lines=1, with_filename=True)
        | "Parse" >> beam.ParDo(ParseRow(plan))
        | "Batch"
        >> beam.BatchElements(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        | "Score" >> beam.ParDo(ScoreBatch(plan))
    )
    _ = (
        scored
        | "Format" >> beam.Map(format_row, plan.model_version)
        | "WritePredictions"
        >> beam.io.WriteToText(
            f"{plan.output_dir}/{SHARD_PREFIX}",
            file_name_suffix=".csv",
            header=_csv_line(plan.columns),
        )
    )
    _ = (
        scored
        | "Scores" >> beam.Map(lambda element: element[1])
        | "CountAndMean" >> beam.CombineGlobally(CountAndMean())
        | "Summary" >> beam.Map(summary_json, base_summary)
        | "WriteSummary"
        >> beam.io.WriteToText(
            plan.summary_path, shard_name_template="", num_shards=1, append_trailing_newlines=True
        )
    )


class _Released:
    """Takes the model's place in Beam's per-process keep-alive slot (see _release_models)."""


def _release_models() -> None:
    """Frees a worker's model when its DoFns are torn down, rather than at interpreter exit, when
    TensorFlow's function destructors fail noisily (a local runner's worker is this process or
    a subprocess). apache_beam's Shared keeps the last acquired object alive until another one
    is acquired: acquire a placeholder."""
    shared.Shared().acquire(_Released)
    gc.collect()


def _listdir(path: str) -> list[str]:
    return tf.io.gfile.listdir(path) if tf.io.gfile.isdir(path) else []


def _staging(plan: ScoringPlan) -> ScoringPlan:
    """The same plan writing into <output_dir>.partial: a failed job never touches what an earlier
    scoring of the span wrote."""
    return dataclasses.replace(plan, output_dir=f"{plan.output_dir}.partial")


def _publish(staged: ScoringPlan, plan: ScoringPlan) -> int:
    """Replaces an earlier scoring's shards and summary with the staged ones; returns how many
    earlier files went."""
    stale = tf.io.gfile.glob(plan.output_pattern) + tf.io.gfile.glob(plan.summary_path)
    for path in stale:
        tf.io.gfile.remove(path)
    tf.io.gfile.makedirs(plan.output_dir)
    for path in tf.io.gfile.glob(staged.output_pattern) + [staged.summary_path]:
        tf.io.gfile.rename(path, f"{plan.output_dir}/{path.rsplit('/', 1)[-1]}", overwrite=True)
    tf.io.gfile.rmtree(staged.output_dir)
    return len(stale)


def _job_error(err: Exception) -> BatchScoringError | None:
    text = str(err)
    start = text.rfind(_MARK)
    if start < 0:
        return None
    # The message is one line; DirectRunner appends " [while running 'Step']" to it.
    message = text[start + len(_MARK) :].split("\n")[0].split(" [while running")[0]
    return BatchScoringError(message)


def score_span(
    config: PipelineConfig,
    span: int | None = None,
    model_version: str | None = None,
    *,
    min_batch_size: int = MIN_BATCH_SIZE,
    max_batch_size: int = MAX_BATCH_SIZE,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Scores every row of `span` (default: data.span, else the newest) with the pushed model
    (default: the newest version) and returns the summary it writes next to the predictions."""
    say = progress or _log.info
    plan = plan_scoring(config, span, model_version)
    say(
        f"scoring span {plan.span} ({len(plan.input_files)} file(s) under {config.data.root}) "
        f"with model version {plan.model_version} ({plan.model_dir}) on "
        f"{config.beam.runner}"
    )
    staged = _staging(plan)
    if tf.io.gfile.exists(staged.output_dir):  # left by a job that was killed
        tf.io.gfile.rmtree(staged.output_dir)
    base_summary = {
        "span": plan.span,
        "model_name": config.serving.model_name,
        "model_version": plan.model_version,
        "model_dir": plan.model_dir,
        "input_files": list(plan.input_files),
        "output_dir": plan.output_dir,
        "output_pattern": plan.output_pattern,
        "columns": list(plan.columns),
        "runner": config.beam.runner,
    }
    started = time.perf_counter()
    options = PipelineOptions(config.beam_pipeline_args())
    try:
        with beam.Pipeline(options=options) as pipeline:
            build(pipeline, staged, base_summary, min_batch_size, max_batch_size)
    except Exception as err:  # the runner's wrapper around an error raised in a worker
        if tf.io.gfile.exists(staged.output_dir):
            tf.io.gfile.rmtree(staged.output_dir)
        clear = _job_error(err)
        if clear is not None:
            raise clear from err
        raise
    finally:
        _release_models()
    removed = _publish(staged, plan)
    if removed:
        say(f"replaced {removed} file(s) of an earlier scoring of span {plan.span}")
    with tf.io.gfile.GFile(plan.summary_path) as f:
        summary = json.load(f)
    seconds = time.perf_counter() - started
    mean = summary["mean_score"]
    say(
        f"scored {summary['rows']} rows of span {plan.span} in {seconds:.1f}s "
        f"(mean purchase_probability {mean:.4f})"
        if mean is not None
        else f"span {plan.span} has no rows: wrote an empty prediction set"
    )
    say(f"predictions: {plan.output_pattern}; summary: {plan.summary_path}")
    return summary
