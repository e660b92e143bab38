"""Which span to train on and which one to compare it with (data versions are span-N folders).

The span trained on is `data.span`, else the newest span folder, and it must be complete
(components/span_folders.py says what complete means). An empty or partial newest folder stops the
run with a SpanError naming it: falling back to the span before would train an older model and
could push it over the one trained on the newer data, a rollback nobody asked for. Training on an
older span is an explicit `data.span`; pushing such a model over a newer one takes an explicit
rollback (`shop-pipeline rollback --to-span N`, components/pusher.py, docs/data-versions.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tensorflow as tf

from components.filesystems import register_filesystems
from components.span_folders import span_entries, span_files, span_problem
from settings import DataConfig

_log = logging.getLogger(__name__)


class SpanError(ValueError):
    """No usable span: the message names the folder and what it holds."""


@dataclass(frozen=True)
class SpanSelection:
    current: int
    previous: int | None  # baseline for drift; None on the first span


def _entries(data: DataConfig) -> dict[int, str]:
    register_filesystems([data.root])  # data.root may be s3:// (settings/conf/kubeflow.yaml)
    if not tf.io.gfile.isdir(data.root):
        raise SpanError(
            f"data root {data.root} does not exist: generate data with `shop-sim --out {data.root}`"
        )
    return span_entries(data.root, data.file_pattern)


def available_spans(data: DataConfig) -> list[int]:
    """Spans under data.root that hold at least one file matching data.file_pattern (folders
    without one are left out here: select_spans is where an incomplete newest span stops a run)."""
    return sorted(span for span in _entries(data) if span_files(data.root, data.file_pattern, span))


def select_spans(data: DataConfig) -> SpanSelection:
    """The span to train on and the drift baseline (the newest complete span before it).

    Raises SpanError when the span to train on (data.span, else the newest span folder) is missing,
    empty or partial, naming the folder. An incomplete folder older than it is passed over as a
    baseline, with a warning.
    """
    entries = _entries(data)
    if not entries:
        raise SpanError(f"no span matching {data.file_pattern!r} under {data.root}")
    current = data.span if data.span is not None else max(entries)
    if current not in entries:
        raise SpanError(
            f"span {current} not found under {data.root} (found spans {sorted(entries)})"
        )
    problem = span_problem(data.root, data.file_pattern, current)
    if problem:
        if data.span is None:
            older = [s for s in entries if s < current]
            raise SpanError(
                f"the newest span folder {entries[current]} {problem}: the run stops rather than "
                f"train on an older span. Finish writing span {current} or remove its folder; "
                "train on an older span with --set data.span=N, and make its model the served "
                "one again only with `shop-pipeline rollback --to-span N`"
                + (f" (older spans: {sorted(older)})" if older else "")
            )
        raise SpanError(f"span {current} (data.span): {entries[current]} {problem}")
    previous = None
    for span in sorted((s for s in entries if s < current), reverse=True):
        skipped = span_problem(data.root, data.file_pattern, span)
        if skipped is None:
            previous = span
            break
        _log.warning("drift baseline: passing over %s, which %s", entries[span], skipped)
    return SpanSelection(current=current, previous=previous)
