"""Runs N training workers on this machine under MultiWorkerMirroredStrategy: loopback ports,
one TF_CONFIG per process (as the Training Operator sets it in a TFJob's pods), the same entry point
(components.train_worker). For tests and for trying multi-worker training without a cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence


class WorkerError(RuntimeError):
    """A worker failed or the job timed out; the message names the worker and its last lines."""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(workers: int) -> list[dict]:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(workers)]


def run_local_workers(
    workers: int, worker_args: Sequence[str], *, timeout_s: float = 900, echo: bool = True
) -> list[str]:
    """Starts `workers` processes of components.train_worker and waits for all; returns their
    output. Worker 0 is the chief (writes the model). Any failure stops the others."""
    if workers < 2:
        raise ValueError("multi-worker training needs at least 2 workers")
    processes, outputs = [], [[] for _ in range(workers)]
    for tf_config in tf_configs(workers):
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_USE_LEGACY_KERAS": "1"}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "components.train_worker", *worker_args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
        )
    readers = [
        threading.Thread(target=_pump, args=(p, outputs[i], i, echo), daemon=True)
        for i, p in enumerate(processes)
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in processes):
            failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
            if failed:
                raise WorkerError(_failure(failed[0], processes, outputs))
            if time.monotonic() > deadline:
                raise WorkerError(f"workers still running after {timeout_s:.0f}s")
            time.sleep(0.5)
        failed = [i for i, p in enumerate(processes) if p.returncode != 0]
        if failed:
            raise WorkerError(_failure(failed[0], processes, outputs))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for reader in readers:
            reader.join(timeout=5)
    return ["".join(lines) for lines in outputs]


def _pump(process: subprocess.Popen, sink: list[str], index: int, echo: bool) -> None:
    for line in process.stdout:
        sink.append(line)
        if echo and ("Epoch" in line or line.startswith("{")):
            print(f"[worker {index}] {line}", end="", flush=True)


def _failure(index: int, processes: list, outputs: list[list[str]]) -> str:
    tail = "".join(outputs[index][-30:])
    return f"worker {index} exited with {processes[index].returncode}:\n{tail}"
