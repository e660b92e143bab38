"""The data lake the consumer writes: staged batches, the feature logs, and sealed spans.

Everything under `data.root`:

    span-N/impressions.csv              a sealed span, the only file ExampleGen reads
    _stream/span-N/impression/*.parquet one immutable file per consumer batch (staging)
    _stream/span-N/purchase/*.parquet
    _stream/span-N/seal.json            what the seal found (counts, shortfall, duplicates)
    features/<view>/*.parquet           Feast's offline store: every profile event, as logged

A batch file is written to a temporary name, fsynced and renamed before its messages are
acknowledged, so a consumer killed at any point leaves either the whole file or none, and the
broker redelivers what was not acknowledged. A redelivered message lands in a second file: the
seal keeps one row per impression_id. Rename is atomic on a local filesystem or a PVC; on object
storage a batch would be one PUT of a whole object (docs/event-stream.md).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

import contract
from contract.events import FIELDS

STREAM_DIR = "_stream"
SPAN_FILE = "impressions.csv"
# The staged kinds of a span and the columns each batch file holds.
STAGED: dict[str, tuple[str, ...]] = {
    kind: ("event_time", *FIELDS[kind]) for kind in ("impression", "purchase")
}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, write: Any) -> Path:
    """Calls `write(path)` on a temporary sibling, fsyncs it and renames it to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    write(partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    partial.replace(target)
    _fsync_dir(target.parent)
    return target


class Lake:
    """One lake root; stateless (every consumer process opens its own)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def span_file(self, span: int) -> Path:
        return self.root / f"span-{span}" / SPAN_FILE

    def staging(self, span: int, kind: str) -> Path:
        return self.root / STREAM_DIR / f"span-{span}" / kind

    def seal_report_path(self, span: int) -> Path:
        return self.root / STREAM_DIR / f"span-{span}" / "seal.json"

    def is_sealed(self, span: int) -> bool:
        return self.span_file(span).exists()

    def stage(self, span: int, kind: str, rows: list[Mapping[str, Any]], batch_id: str) -> Path:
        """One batch of a span's impressions or purchases, durable when this returns."""
        frame = pd.DataFrame(list(rows), columns=list(STAGED[kind]))
        target = self.staging(span, kind) / f"{batch_id}.parquet"
        return write_atomically(target, lambda path: frame.to_parquet(path, index=False))

    def log_features(self, directory: str, frame: pd.DataFrame, batch_id: str) -> Path:
        """One batch of profile events for Feast's offline store (features/<view>/)."""
        target = self.root / directory / f"{batch_id}.parquet"
        return write_atomically(target, lambda path: frame.to_parquet(path, index=False))

    def staged(self, span: int, kind: str, *more_spans: int) -> tuple[pd.DataFrame, int]:
        """The staged rows of one or more spans, one per impression_id (the first written), and
        how many duplicates (redeliveries) were dropped."""
        files = sorted(
            f for s in (span, *more_spans) for f in self.staging(s, kind).glob("*.parquet")
        )
        columns = list(STAGED[kind])
        if not files:
            return pd.DataFrame(columns=columns), 0
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)[columns]
        unique = frame.drop_duplicates("impression_id", keep="first")
        return unique.reset_index(drop=True), len(frame) - len(unique)

    def sealed_ids(self, span: int) -> set[str]:
        return set(pd.read_csv(self.span_file(span), usecols=[contract.EXAMPLE_ID]).iloc[:, 0])

    def seal(self, span: int, rows: pd.DataFrame, report: Mapping[str, Any]) -> Path:
        """Writes the span (contract.COLUMNS) and its seal report; the span becomes visible to
        ExampleGen in one rename, after the report is down."""
        missing = [c for c in contract.COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"span-{span}: the sealed rows lack column(s) {missing}")
        write_atomically(
            self.seal_report_path(span),
            lambda path: Path(path).write_text(json.dumps(dict(report), indent=2, sort_keys=True)),
        )
        ordered = rows[list(contract.COLUMNS)]
        return write_atomically(
            self.span_file(span), lambda path: ordered.to_csv(path, index=False)
        )

    def seal_report(self, span: int) -> dict[str, Any]:
        return json.loads(self.seal_report_path(span).read_text())
