"""The model server as a child process in the serving environment, on a free loopback port
(the tests, the latency benchmark and the monitoring scenario start it this way)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from serving.commands import server_command, server_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    config, model_dir: str, log_path: Path, request_log: str | None = None, **kwargs
) -> Iterator[str]:
    """Starts serving.server for `config`, waits until /v2/health/ready, yields the base URL and
    stops it with SIGTERM (as Kubernetes does). Its output goes to log_path."""
    port = free_port()
    cmd = server_command(config, port, model_dir=model_dir, request_log=request_log, **kwargs)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env(), cwd=str(Path.cwd())
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited ({proc.returncode}):\n{log_path.read_text()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready after 180 s:\n{log_path.read_text()}")
                time.sleep(0.5)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
