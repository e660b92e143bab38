"""Prediction log: one JSON line per scored instance, for monitoring and A/B reports.

Each line has the time, the request id, the model name and version, the A/B variant, the
protocol, the instance's id (impression_id when the client sends it), its validated raw features
(plain JSON values: the numpy columns are converted only here, when the log is on) and the score.
Lines are appended and flushed per request, so a reader (the drift monitor) can tail the file
while the server runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import IO, Any

import numpy as np
import orjson

from serving.contract import plain_column


class RequestLog:
    def __init__(self, path: str | None):
        """path: a file (appended to; its folder is created), '-' for stdout, or None for off."""
        self._lock = threading.Lock()
        self._stream: IO[str] | None
        if path is None:
            self._stream = None
        elif path == "-":
            self._stream = sys.stdout
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the server)

    def write(
        self,
        *,
        request_id: str,
        model: str,
        version: str,
        variant: str | None,
        protocol: str,
        columns: dict[str, np.ndarray | list],
        ids: list | None,
        scores: np.ndarray | list[float],
    ) -> None:
        if self._stream is None:
            return
        now = time.time()
        names = list(columns)
        rows = zip(*(plain_column(columns[name]) for name in names), strict=True)
        scores = scores.tolist() if isinstance(scores, np.ndarray) else scores
        lines = []
        for i, (score, values) in enumerate(zip(scores, rows, strict=True)):
            record: dict[str, Any] = {
                "ts": now,
                "request_id": request_id,
                "model": model,
                "version": version,
                "variant": variant,
                "protocol": protocol,
                "id": ids[i] if ids else None,
                "features": dict(zip(names, values, strict=True)),
                "score": score,
            }
            lines.append(orjson.dumps(record))
        text = (b"\n".join(lines) + b"\n").decode()
        with self._lock:
            self._stream.write(text)
            self._stream.flush()


def read_log(path: str) -> list[dict[str, Any]]:
    """Every complete line of a prediction log (a half-written last line is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                records.append(json.loads(line))
    return records
