"""Bounded loopback load: N requests at a fixed concurrency, latencies and versions recorded.

Used by the serving benchmark (p50/p99 and requests/s per concurrency level) and by the test that
switches versions under load (every request must get a 200). Requests are built from a span's
CSV rows typed by the model's serving contract, so the load is what the shop would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import glob
import json
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

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


@dataclass(frozen=True)
class RawBody:
    """A body sent as it is, with its own headers (V2 with binary tensor data)."""

    data: bytes
    headers: dict[str, str]


def v2_binary_body(instances: list[dict[str, Any]], contract: Contract) -> RawBody:
    """The same instances as a V2 request with binary tensor data in both directions, as
    tritonclient sends it in binary mode: the JSON header, then each tensor's bytes (BYTES: a
    4-byte little-endian length before each value), the header's length in a request header."""
    tensors, parts = [], []
    numeric = {"int": "<i8", "float": "<f4"}
    for name, spec in sorted(contract.features.items()):
        values = [row[name] for row in instances]
        if spec["type"] == "string":
            encoded = [v.encode() for v in values]
            data = b"".join(struct.pack("<I", len(v)) + v for v in encoded)
        else:
            data = np.asarray(values, dtype=numeric[spec["type"]]).tobytes()
        tensors.append({"name": name, "datatype": V2_DATATYPE_OUT[spec["type"]],
                        "shape": [len(instances)], "parameters": {"binary_data_size": len(data)}})  # fmt: skip
        parts.append(data)
    head = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
    return RawBody(
        head + b"".join(parts),
        {"content-type": "application/octet-stream",
         "inference-header-content-length": str(len(head))},
    )  # fmt: skip


@dataclass
class LoadResult:
    """One entry per request in `statuses` and `latencies_s` (0 = no answer: connection error)."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def latencies_of(self, status: int) -> list[float]:
        return [t for t, s in zip(self.latencies_s, self.statuses, strict=True) if s == status]

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


class _Connection:
    """One keep-alive HTTP/1.1 connection that POSTs prepared bytes and reads status and headers.

    The load generator shares the machine with the server; httpx costs about as much CPU per
    request as the server's own path, so at 64+ in flight the client, not the server, would set
    the latency measured. Prepared requests on raw asyncio streams cost a fraction of that."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while (size := int((await self.reader.readline()).split(b";")[0], 16)) > 0:
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _prepared(url: str, body: dict[str, Any] | RawBody) -> bytes:
    parts = urlsplit(url)
    if isinstance(body, RawBody):
        data, headers = body.data, body.headers
    else:
        data, headers = json.dumps(body).encode(), {"content-type": "application/json"}
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{lines}"
            f"Content-Length: {len(data)}\r\n\r\n")  # fmt: skip
    return head.encode() + data


async def run_load(
    url: str,
    bodies: list[dict[str, Any] | RawBody],
    total: int,
    concurrency: int,
    timeout_s: float = 30.0,
    on_progress=None,
    wait_retry_after: bool = False,
) -> LoadResult:
    """Sends `total` POSTs (cycling through `bodies`) with `concurrency` in flight, one keep-alive
    connection each. With `wait_retry_after` a client answered 503 waits its Retry-After before
    its next request, as a well-behaved client does; without, it sends the next one at once."""
    result = LoadResult(concurrency)
    counter = iter(range(total))
    requests = [_prepared(url, body) for body in bodies]
    parts = urlsplit(url)

    async def worker() -> None:
        connection = _Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            for i in counter:
                start = time.perf_counter()
                try:
                    status, headers = await asyncio.wait_for(
                        connection.post(requests[i % len(requests)]), timeout_s
                    )
                except (OSError, asyncio.TimeoutError, ValueError, IndexError) as err:
                    # a dropped connection or a garbled answer counts as a failed request
                    result.errors.append(f"{type(err).__name__}: {err}")
                    result.statuses.append(0)
                    result.latencies_s.append(time.perf_counter() - start)
                    await connection.close()
                    continue
                result.latencies_s.append(time.perf_counter() - start)
                result.statuses.append(status)
                result.versions.append(headers.get("x-model-version", ""))
                if wait_retry_after and status == 503:
                    await asyncio.sleep(float(headers.get("retry-after", 1)))
                if on_progress and len(result.statuses) % max(1, total // 10) == 0:
                    on_progress(len(result.statuses), total)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result
