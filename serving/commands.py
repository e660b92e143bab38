"""The command lines of the serving processes, built from config: the model server
(`python -m serving.server`) and the recommendation transformer (`python -m serving.transformer`),
each run by the serving environment's interpreter (.venv-serving). `shop-serve`, the stack
(serving/stack.py), the tests and the benchmarks all start them from here.
"""

from __future__ import annotations

import os
from pathlib import Path

from settings import PipelineConfig, server_flags, transformer_flags

# Where the serving package is importable from (the checkout for an editable install): the server
# process gets it on PYTHONPATH, and the serving venv is looked for beside it.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

SERVING_PYTHON_ENV = "SHOP_SERVING_PYTHON"
# Processes started from here run on this machine and listen on loopback only; in a pod the
# manifests leave the flag out and kserve's server listens on every interface.
LOOPBACK = "127.0.0.1"


def serving_python() -> str:
    """The serving environment's interpreter: $SHOP_SERVING_PYTHON or .venv-serving."""
    path = os.environ.get(SERVING_PYTHON_ENV) or str(
        PACKAGE_ROOT / ".venv-serving" / "bin" / "python"
    )
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no serving environment; create it with `make serving-env` "
            f"(or point {SERVING_PYTHON_ENV} at one)"
        )
    return path


def server_command(
    config: PipelineConfig,
    port: int,
    model_version: str | None = None,
    model_dir: str | None = None,
    request_log: str | None = None,
    grpc_port: int | None = None,
) -> list[str]:
    """The serving.server command line for this config (tests and the benchmark use it too)."""
    s = config.serving
    log = request_log or (config.request_log_path if s.log_requests else None)
    cmd = [
        serving_python(), "-m", "serving.server",
        "--model-dir", os.path.abspath(model_dir or config.serving_dir),
        "--model-name", s.model_name,
        "--http-port", str(port),
        "--http-host", LOOPBACK,
        "--ab-candidate-percent", str(s.ab_candidate_percent),
        "--ab-key", s.ab_key,
        *server_flags(s.model_dump()),
    ]  # fmt: skip
    if log:
        cmd += ["--request-log", os.path.abspath(log) if log != "-" else log]
    if model_version:
        cmd += ["--model-version", model_version]
    if grpc_port:
        cmd += ["--grpc-port", str(grpc_port)]  # kserve's gRPC server binds every interface
    return cmd


def server_env() -> dict[str, str]:
    """The serving package importable from the checkout, TensorFlow quiet."""
    return {
        **os.environ,
        "PYTHONPATH": str(PACKAGE_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }


def transformer_command(
    config: PipelineConfig,
    *,
    port: int,
    predictor_host: str,
    feature_server_url: str,
    served_log: str | None,
) -> list[str]:
    """The serving.transformer command line for this config: kserve's flags, then the
    recommend section's (settings/recommend.py) and the served log."""
    values = {**config.recommend.model_dump(), "feature_server_url": feature_server_url}
    cmd = [
        serving_python(), "-m", "serving.transformer",
        f"--model_name={config.serving.model_name}",
        f"--predictor_host={predictor_host}",
        "--predictor_protocol=v2",
        f"--http_port={port}",
        f"--http-host={LOOPBACK}",
        *transformer_flags(values),
    ]  # fmt: skip
    if served_log:
        cmd.append(f"--served-log={os.path.abspath(served_log)}")
    return cmd
