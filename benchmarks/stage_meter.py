"""Wall time and peak memory of each pipeline stage, measured while the local runner runs them.

LocalDagRunner runs every stage in this process, so memory is sampled for the whole process tree
(Beam's multi-processing workers and local training workers are children) every `interval_s`
and charged to the stage running at that moment. Each stage gets two figures:

- peak_rss_gb: the most the tree held while the stage ran (what a machine or pod must have);
- start_rss_gb: what the tree held when it started, so peak - start is what the stage added
  (Python seldom returns memory, so a later stage's peak includes what earlier stages left).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass

import psutil

from pipelines.progress import StageProgress

GB = 1024**3


def tree_rss_bytes(process: psutil.Process) -> int:
    """Resident memory of a process and all its children (workers come and go: skip the gone)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


@dataclass
class StageFigures:
    name: str
    seconds: float
    cached: bool
    start_rss_gb: float
    peak_rss_gb: float


class StageMeter(StageProgress):
    """StageProgress that also records each stage's time and the process tree's peak memory."""

    def __init__(self, stream=sys.stdout, interval_s: float = 0.2) -> None:
        super().__init__(stream=stream)
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.stages: list[StageFigures] = []
        self.run_peak_bytes = 0
        self.last_finished = time.perf_counter()  # when the latest stage finished
        self._start_bytes: dict[str, int] = {}
        self._peak_bytes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="stage-meter", daemon=True)

    def __enter__(self) -> StageMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = tree_rss_bytes(self.process)
            with self._lock:
                self.run_peak_bytes = max(self.run_peak_bytes, rss)
                if self.current in self._peak_bytes:
                    self._peak_bytes[self.current] = max(self._peak_bytes[self.current], rss)

    def on_start(self, name: str) -> None:
        rss = tree_rss_bytes(self.process)
        with self._lock:
            self._start_bytes[name] = rss
            self._peak_bytes[name] = rss
            self.run_peak_bytes = max(self.run_peak_bytes, rss)

    def on_finish(self, name: str, seconds: float, cached: bool) -> None:
        self.last_finished = time.perf_counter()
        rss = tree_rss_bytes(self.process)
        with self._lock:
            peak = max(self._peak_bytes.pop(name, rss), rss)
            start = self._start_bytes.pop(name, rss)
        self.stages.append(
            StageFigures(
                name=name,
                seconds=round(seconds, 2),
                cached=cached,
                start_rss_gb=round(start / GB, 3),
                peak_rss_gb=round(peak / GB, 3),
            )
        )

    def figures(self) -> list[dict]:
        return [asdict(stage) for stage in self.stages]
