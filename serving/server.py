"""`python -m serving.server`: the KServe ModelServer with the ranking model.

Serves, on one HTTP port (kserve 0.15 ModelServer):
  V1 (TF Serving API)   GET /v1/models/<name>          POST /v1/models/<name>:predict
  V2 (Open Inference)   GET /v2/health/live|ready      GET /v2/models/<name>[/ready]
                        POST /v2/models/<name>/infer
  Prometheus            GET /metrics
In front of them serving/http_guard.py answers 405 to a GET on a prediction path, reads a V2 body
without the binary header as JSON, and sheds predictions past --max-concurrency with a 503; V2
binary tensor data stays bytes until the predictor reads it with numpy (serving/binary_tensors.py).
It loads the newest numbered version under --model-dir (or --model-version), loads newer pushes in
the background, and with --ab-candidate-percent splits users between the two newest versions.
The flags mirror config's `serving` section; `shop-pipeline serve` passes them from config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import tempfile


def _import_tensorflow_quietly() -> None:
    """TensorFlow 2.16 logs three harmless ERROR lines on import, "Unable to register
    cuDNN/cuFFT/cuBLAS factory" (tensorflow/tensorflow#62075): only those are dropped from
    descriptor 2. components/runtime.py does the same for the pipeline (not in this image)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            noise = re.compile(rb"Unable to register cu(DNN|FFT|BLAS) factory")
            os.write(2, b"".join(line for line in captured if not noise.search(line)))


if __name__ == "__main__":  # `python -m serving.server` owns its process; an import changes nothing
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO/WARNING lines (CUDA, CPU, TRT)
    _import_tensorflow_quietly()

from fastapi.responses import ORJSONResponse  # noqa: E402
from kserve import ModelServer  # noqa: E402
from kserve import model_server as kserve_model_server  # noqa: E402

from serving import binary_tensors  # noqa: E402
from serving.http_guard import HttpGuard  # noqa: E402
from serving.listen import ALL_INTERFACES, listen_on  # noqa: E402
from serving.predictor import (  # noqa: E402
    BadRequest,
    RankingModel,
    RequestTooLarge,
    ServerSettings,
)
from serving.versions import is_uri  # noqa: E402

log = logging.getLogger("serving")


def parse_args(argv: list[str] | None = None) -> tuple[ServerSettings, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True, help="Pusher's base directory (numbered versions)")
    p.add_argument("--model-name", default="shop-ranking")
    p.add_argument("--model-version", default=None, help="pin one version (KServe canary pods)")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--http-host", default=ALL_INTERFACES, help="127.0.0.1: loopback only")
    p.add_argument("--grpc-port", type=int, default=0, help="V2 gRPC port; 0 = off")
    p.add_argument("--max-instances", type=int, default=1000)
    p.add_argument(
        "--max-string-length", type=int, default=256, help="for strings without a domain"
    )
    p.add_argument(
        "--max-concurrency", type=int, default=16, help="predictions in flight; 503 above"
    )
    p.add_argument("--retry-after-s", type=int, default=1, help="Retry-After of a 503")
    p.add_argument("--batch-max-size", type=int, default=64, help="1 = no batching")
    p.add_argument("--batch-timeout-ms", type=float, default=0.0, help="extra wait for a batch")
    p.add_argument("--reload-interval-s", type=float, default=2.0)
    p.add_argument("--ab-candidate-percent", type=int, default=0)
    p.add_argument("--ab-key", default="user_id")
    p.add_argument("--request-log", default=None, help="JSON lines file, '-' = stdout")
    args, _ = p.parse_known_args(argv)  # kserve reads its own --flags from sys.argv as well
    settings = ServerSettings(
        model_dir=args.model_dir if is_uri(args.model_dir) else os.path.abspath(args.model_dir),
        model_name=args.model_name,
        pinned_version=args.model_version,
        max_instances=args.max_instances,
        max_string_length=args.max_string_length,
        max_concurrency=args.max_concurrency,
        retry_after_s=args.retry_after_s,
        batch_max_size=args.batch_max_size,
        batch_timeout_ms=args.batch_timeout_ms,
        reload_interval_s=args.reload_interval_s,
        ab_candidate_percent=args.ab_candidate_percent,
        ab_key=args.ab_key,
        request_log=args.request_log,
    )
    return settings, args


async def _rejected(_, exc: BadRequest) -> ORJSONResponse:
    status = 413 if isinstance(exc, RequestTooLarge) else 400
    log.info("rejected (%d): %s", status, exc)
    return ORJSONResponse(status_code=status, content={"error": str(exc)})


def main(argv: list[str] | None = None) -> None:
    settings, args = parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s serving %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    model = RankingModel(settings)
    model.load()  # fails here, before the port opens, when there is no model to serve
    binary_tensors.install()  # V2 binary tensor data reaches the predictor as bytes, not lists
    listen_on(args.http_host)
    kserve_model_server.app.add_exception_handler(BadRequest, _rejected)
    kserve_model_server.app.add_middleware(
        HttpGuard,
        model_name=settings.model_name,
        max_concurrency=settings.max_concurrency,
        retry_after_s=settings.retry_after_s,
    )
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port or 8081,
        enable_grpc=args.grpc_port > 0,
        enable_latency_logging=False,
        workers=1,  # one process: the in-memory version swap and the batcher assume it
    )

    async def start_watching() -> None:  # a task, so the server's exit is not held up by it
        asyncio.get_running_loop().create_task(model.watch())

    server.servers.append(start_watching())
    server.start([model])


if __name__ == "__main__":
    main()
