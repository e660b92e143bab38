"""JupyterLab as `make lab` starts it: headless, on loopback, checked through its REST API:
the notebooks are listed and a kernel of the project's environment starts."""

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT

from pipelines.docs import KERNEL_NAME, notebooks

# One xdist worker runs the notebooks in order: 03-08 reuse 02's run (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("notebooks")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).parent / "jupyter"
    process = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO_ROOT}", "--allow-root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def call(path: str, method: str = "GET", body: dict | None = None):
        request = urllib.request.Request(
            base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return json.loads(text) if text else None

    deadline = time.monotonic() + 90
    while True:
        try:
            call("/api/status")
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"JupyterLab did not start: {process.stderr.read()[-2000:]}")
            time.sleep(1)
    call.ws_url = lambda kernel_id: (
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}"
    )
    yield call
    process.terminate()
    process.wait(timeout=30)


def test_notebooks_are_listed(lab):
    names = {item["name"] for item in lab("/api/contents/notebooks")["content"]}
    assert {n.name for n in notebooks()} <= names


def test_project_kernel_starts_in_the_project_environment(lab):
    spec = lab("/api/kernelspecs")["kernelspecs"][KERNEL_NAME]["spec"]
    assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve()
    assert spec["env"].get("TF_USE_LEGACY_KERAS") == "1"
    kernel = lab("/api/kernels", "POST", {"name": KERNEL_NAME})
    try:
        # Run code in it over the kernel's websocket, as the JupyterLab UI does.
        assert _execute(lab.ws_url(kernel["id"]), "import sys; print(sys.prefix)") == sys.prefix
    finally:
        lab(f"/api/kernels/{kernel['id']}", "DELETE")


def _execute(url: str, code: str, timeout: float = 120) -> str:
    """Sends one execute_request (Jupyter messaging v5 over JSON) and returns its stdout."""
    import websocket

    connection = websocket.create_connection(url, timeout=timeout)
    msg_id = uuid.uuid4().hex
    connection.send(
        json.dumps(
            {
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False},
            }
        )
    )  # fmt: skip
    stdout = ""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = json.loads(connection.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                stdout += message["content"]["text"]
            elif message["msg_type"] == "error":
                raise AssertionError(message["content"]["evalue"])
            elif (
                message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
            ):
                return stdout.strip()
    finally:
        connection.close()
    raise AssertionError(f"no reply within {timeout}s")
