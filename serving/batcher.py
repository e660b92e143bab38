"""Merges concurrent requests into one model call (adaptive micro-batching).

A TensorFlow call has a fixed cost per call; on a busy server many small requests wait in line for
it. One worker per model version takes every request queued while the previous call ran (up to
`max_size` instances), optionally waits up to `timeout_s` for more, runs one call in a thread and
hands each request its slice of the scores. With timeout 0 a lone request never waits: batches
form only under load. max_size 1 turns batching off (one call per request, run concurrently).
benchmarks/serving_latency.py measures the three modes side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Columns = dict[str, np.ndarray]  # one array per feature (serving/contract.py)


@dataclass
class _Pending:
    columns: Columns
    size: int
    future: asyncio.Future


def merge(parts: list[Columns]) -> Columns:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


class MicroBatcher:
    def __init__(
        self,
        score: Callable[[Columns], np.ndarray],
        max_size: int,
        timeout_s: float,
        on_batch: Callable[[int], None] = lambda n: None,
    ):
        self._score = score
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, columns: Columns, size: int) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self._max_size <= 1:  # batching off: one model call per request, concurrently
            self._on_batch(size)
            return await loop.run_in_executor(None, self._score, columns)
        if self._queue is None:
            self._queue = asyncio.Queue()
        pending = _Pending(columns, size, loop.create_future())
        self._queue.put_nowait(pending)
        # The worker lives while there is work and exits when the queue is empty, so a retired
        # version's batcher finishes every request it accepted and then holds nothing alive.
        # (No await between its emptiness check and its exit: a put can never be stranded.)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        return await pending.future

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        size = batch[0].size
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        while size < self._max_size:
            if not self._queue.empty():
                item = self._queue.get_nowait()
            else:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:  # timeout 0: take what was queued, never wait
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(item)
            size += item.size
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while not self._queue.empty():
            batch = await self._collect()
            self._on_batch(sum(p.size for p in batch))
            try:
                scores = await loop.run_in_executor(
                    None, self._score, merge([p.columns for p in batch])
                )
            except Exception as err:  # every waiting request gets the error, the worker lives on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            start = 0
            for p in batch:
                if not p.future.done():  # a cancelled request (client gone) is skipped
                    p.future.set_result(scores[start : start + p.size])
                start += p.size
