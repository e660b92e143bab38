"""Prints one line per pipeline stage (started, cached, finished, skipped) with elapsed time.

TFX's local runner logs these events through absl at INFO, among thousands of other lines; this
handler keeps the runner quiet and shows only the stages.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_RUNNING = re.compile(r"Component (\S+) is running\.")
_FINISHED = re.compile(r"Component (\S+) is finished\.")
_CACHED = re.compile(r"A cached execution \d+ is used\.")
_SKIPPED = re.compile(r"Skipping component (\S+)\.")


class StageProgress(logging.Handler):
    def __init__(self, stream=sys.stdout) -> None:
        super().__init__(level=logging.INFO)
        self.stream = stream
        self.started = time.perf_counter()
        self.stage_started: dict[str, float] = {}
        self.current: str | None = None
        self.cached: set[str] = set()

    def on_start(self, name: str) -> None:
        """Hook for subclasses (benchmarks.stage_meter) when a stage starts running."""

    def on_finish(self, name: str, seconds: float, cached: bool) -> None:
        """Hook for subclasses when a stage finishes."""

    def _print(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {text}", file=self.stream, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if match := _RUNNING.match(message):
            self.current = match.group(1)
            self.stage_started[self.current] = time.perf_counter()
            self.on_start(self.current)
            self._print(f"{self.current} ...")
        elif _CACHED.match(message) and self.current:
            self.cached.add(self.current)
        elif match := _FINISHED.match(message):
            name = match.group(1)
            seconds = time.perf_counter() - self.stage_started.get(name, self.started)
            how = "cached" if name in self.cached else f"done in {seconds:.1f}s"
            self.on_finish(name, seconds, name in self.cached)
            if self.current == name:
                self.current = None
            self._print(f"{name} {how}")
        elif match := _SKIPPED.match(message):
            self._print(f"{match.group(1)} skipped")


@contextmanager
def stage_progress(
    verbose: bool = False, handler: StageProgress | None = None
) -> Iterator[StageProgress]:
    """Routes absl INFO records to StageProgress; the rest of TFX's log (warnings included) shows only if verbose."""
    from absl import logging as absl_logging

    handler = handler or StageProgress()
    logger = logging.getLogger("absl")
    # Through absl's verbosity flag, not the logger's level: libraries that parse absl flags
    # mid-run (Transform does) reset the level from that flag.
    previous_verbosity = absl_logging.get_verbosity()
    # Libraries add handlers to the root logger (absl's, or basicConfig's): quiet them all.
    quieted = [absl_logging.get_absl_handler(), *logging.getLogger().handlers]
    previous_handler_levels = [h.level for h in quieted]
    absl_logging.set_verbosity(absl_logging.INFO)
    if not verbose:
        for other in quieted:
            other.setLevel(logging.ERROR)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        absl_logging.set_verbosity(previous_verbosity)
        for other, level in zip(quieted, previous_handler_levels, strict=True):
            other.setLevel(level)
