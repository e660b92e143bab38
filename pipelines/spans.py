"""Which span to train on and which one to compare it with (data versions are span-N folders)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import tensorflow as tf

from components.filesystems import register_filesystems
from pipelines.config import DataConfig


class SpanError(ValueError):
    """No usable span: the message names the folder and what it holds."""


@dataclass(frozen=True)
class SpanSelection:
    current: int
    previous: int | None  # baseline for drift; None on the first span


def available_spans(data: DataConfig) -> list[int]:
    """Spans under data.root that hold at least one file matching data.file_pattern."""
    prefix, _, suffix = data.file_pattern.partition("{SPAN}")
    spans = []
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix.split("/")[0]) + "$")
    register_filesystems([data.root])  # data.root may be s3:// (conf/kubeflow.yaml)
    if not tf.io.gfile.isdir(data.root):
        raise SpanError(
            f"data root {data.root} does not exist: generate data with `shop-sim --out {data.root}`"
        )
    for entry in tf.io.gfile.listdir(data.root):
        match = pattern.match(entry.rstrip("/"))
        if match and tf.io.gfile.glob(
            f"{data.root}/{data.file_pattern.replace('{SPAN}', match.group(1))}"
        ):
            spans.append(int(match.group(1)))
    return sorted(spans)


def select_spans(data: DataConfig) -> SpanSelection:
    spans = available_spans(data)
    if not spans:
        raise SpanError(f"no span matching {data.file_pattern!r} under {data.root}")
    current = data.span if data.span is not None else spans[-1]
    if current not in spans:
        raise SpanError(f"span {current} not found under {data.root} (found spans {spans})")
    earlier = [s for s in spans if s < current]
    return SpanSelection(current=current, previous=earlier[-1] if earlier else None)
