"""The recommendation stack on one machine, as child processes on loopback: the online store
(Redis, filled from the lake's feature logs), Feast's feature server, the predictor and the
transformer in front of it. `shop-serve recommend`, the tests and the benchmark start it.

On KServe the same three serving processes are separate Deployments (manifests/stream/ for the
feature server, manifests/kserve/ for the InferenceService's transformer and predictor); here each
is started with the command its container runs, in its own environment: Feast in .venv-features
(numpy 2), the predictor and the transformer in .venv-serving.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from features.play import FEATURES_PYTHON
from features.services import Redis, end_process, free_ports, spawn, wait_until
from serving.commands import server_command, server_env, transformer_command
from settings import PipelineConfig


@dataclass
class Stack:
    url: str  # the transformer: POST {url}/v1/models/<name>:predict
    predictor_url: str
    feature_server_url: str
    redis: Redis
    served_log: str | None
    logs: Path
    processes: dict[str, subprocess.Popen]  # feature-server, predictor, transformer
    config_args: list[str] = field(default_factory=list)  # the features CLI's, with this Redis

    def endpoint(self, model_name: str) -> str:
        return f"{self.url}/v1/models/{model_name}:predict"

    def feature_rows(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        """What Feast's SDK reads from this stack's online store for each (user_id, product_id)
        pair (`shop-features online --pairs`, one process): the rows the transformer must have
        built, read without the transformer, for the tests and the notebooks to check against."""
        path = self.logs / f"pairs-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps([list(p) for p in pairs]))
        try:
            done = subprocess.run(
                _features_cli(self.config_args, "online", "--pairs", str(path)),
                env=server_env(), check=True, capture_output=True, text=True,
            )  # fmt: skip
        finally:
            path.unlink(missing_ok=True)
        return json.loads(done.stdout.strip().splitlines()[-1])


def _features_cli(config_args: list[str], *args: str) -> list[str]:
    if not FEATURES_PYTHON.exists():
        raise FileNotFoundError(f"{FEATURES_PYTHON}: no features environment; `make env` makes it")
    return [str(FEATURES_PYTHON), "-m", "features.cli", *args, *config_args]


def _http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


@contextlib.contextmanager
def recommend_stack(
    config: PipelineConfig,
    config_args: list[str],
    root: str | Path,
    *,
    model_dir: str | None = None,
    port: int | None = None,
    served_log: str | None = None,
    say: Callable[[str], None] = print,
) -> Iterator[Stack]:
    """Starts Redis, fills it from the lake (`shop-features materialize`: the views and the
    retrieval index), starts the feature server, the predictor and the transformer; yields the Stack and stops them all (SIGTERM, in reverse order).

    config_args: the `--config/--set` arguments `config` was loaded from, passed on to the
    features CLI (its own process and environment) with the Redis address added."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = server_env()
    children: dict[str, subprocess.Popen] = {}
    redis = Redis(root / "redis").start()
    try:
        args = [*config_args, "--set", f"stream.redis={redis.address}"]
        say(f"recommend: shop-features materialize ({config.data.root} -> {redis.address})")
        done = spawn(_features_cli(args, "materialize"), env, root / "materialize.log")
        if done.wait() != 0:
            raise RuntimeError(f"shop-features materialize failed; {root / 'materialize.log'}")
        feature_port, predictor_port, transformer_port = free_ports(3)
        transformer_port = port or transformer_port
        feature_url = f"http://127.0.0.1:{feature_port}"
        log = root / "feature-server.log"
        server = spawn(_features_cli(args, "serve", "--port", str(feature_port)), env, log)
        children["feature-server"] = server
        wait_until(_http_ready(f"{feature_url}/health"), "feature server", server, log, 120)
        say(f"recommend: feature server {feature_url}")
        predictor_url = f"http://127.0.0.1:{predictor_port}"
        log = root / "predictor.log"
        cmd = server_command(config, predictor_port, model_dir=model_dir)
        children["predictor"] = spawn(cmd, env, log)
        ready = _http_ready(f"{predictor_url}/v2/health/ready")
        wait_until(ready, "predictor", children["predictor"], log, 180)
        say(f"recommend: predictor {predictor_url} ({model_dir or config.serving_dir})")
        url = f"http://127.0.0.1:{transformer_port}"
        log = root / "transformer.log"
        cmd = transformer_command(
            config,
            port=transformer_port,
            predictor_host=f"127.0.0.1:{predictor_port}",
            feature_server_url=feature_url,
            served_log=served_log,
        )
        children["transformer"] = spawn(cmd, env, log)
        ready = _http_ready(f"{url}/v2/health/ready")
        wait_until(ready, "transformer", children["transformer"], log, 120)
        say(f"recommend: transformer {url}")
        yield Stack(url, predictor_url, feature_url, redis, served_log, root, children, args)
    finally:
        for child in reversed(children.values()):
            end_process(child, 30.0)
        redis.stop()


def wait_forever() -> None:
    """Until Ctrl-C or SIGTERM (the caller's handlers turn SIGTERM into KeyboardInterrupt)."""
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
