"""Bounded loopback load: N requests at a fixed concurrency, latencies and versions recorded.

Used by the serving benchmark (p50/p99 and requests/s per concurrency level) and by the test that
switches versions under load (every request must get a 200). Requests are built from a span's
CSV rows typed by the model's serving contract, so the load is what the shop would send.
"""

from __future__ import annotations

import asyncio
import csv
import glob
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from serving.contract import V2_DATATYPE_OUT, Contract


def span_instances(span_dir: str, contract: Contract, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` rows of a span as V1 instances (contract features + impression_id)."""
    casts = {"string": str, "int": int, "float": float}
    rows: list[dict[str, Any]] = []
    for path in sorted(glob.glob(os.path.join(span_dir, "*.csv"))):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                instance = {
                    name: casts[spec["type"]](row[name]) for name, spec in contract.features.items()
                }
                if contract.id_field and contract.id_field in row:
                    instance[contract.id_field] = row[contract.id_field]
                rows.append(instance)
                if len(rows) >= limit:
                    return rows
    return rows


def v2_body(instances: list[dict[str, Any]], contract: Contract) -> dict[str, Any]:
    """The same instances as an Open Inference Protocol (V2) request."""
    return {
        "inputs": [
            {
                "name": name,
                "datatype": V2_DATATYPE_OUT[spec["type"]],
                "shape": [len(instances)],
                "data": [row[name] for row in instances],
            }
            for name, spec in sorted(contract.features.items())
        ]
    }


@dataclass
class LoadResult:
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0


async def run_load(
    url: str,
    bodies: list[dict[str, Any]],
    total: int,
    concurrency: int,
    timeout_s: float = 30.0,
    on_progress=None,
) -> LoadResult:
    """Sends `total` POSTs (cycling through `bodies`) with `concurrency` in flight."""
    result = LoadResult(concurrency)
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as err:  # a dropped connection counts as a failed request
                result.errors.append(f"{type(err).__name__}: {err}")
                result.statuses.append(0)
                continue
            result.latencies_s.append(time.perf_counter() - start)
            result.statuses.append(response.status_code)
            result.versions.append(response.headers.get("x-model-version", ""))
            if on_progress and len(result.statuses) % max(1, total // 10) == 0:
                on_progress(len(result.statuses), total)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - started
    return result
