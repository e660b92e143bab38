"""Session-wide e2e fixtures: one generated dataset and one local run, shared by the local-runner
tests and the KFP harness test (which compares its compiled-spec run with the local one); the event
stream's services (RabbitMQ, Redis) per test module, and the features environment's python."""

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_data import ROWS, SEED, config_for
from repo_paths import REPO_ROOT

from features.services import Broker, Redis
from pipelines.local_runner import run_local
from pipelines.metadata import latest_run, open_store
from simulator.generate import SimulationOptions, write_dataset


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """Spans 1-2 of the shop; test_local_pipeline later adds a drifted span 3 and a corrupt 4."""
    root = tmp_path_factory.mktemp("e2e")
    write_dataset(SimulationOptions(rows_per_span=ROWS, spans=2, seed=SEED), root / "data")
    return root


@pytest.fixture(scope="session")
def first_run_outputs(workspace):
    """The local runner on the newest span (span 2: every user of this fixture asks for it before
    test_local_pipeline adds spans 3 and 4), and its nodes read back from ML Metadata at once."""
    config = config_for(workspace)
    run = run_local(config)[0]
    assert run.span == 2, run.span
    return run, latest_run(open_store(config.metadata_path), config.name)


@pytest.fixture(scope="session")
def first_run(first_run_outputs):
    return first_run_outputs[0]


FEATURES_VENV = REPO_ROOT / ".venv-features"
_SERVICE_ROOTS = itertools.count(1)


def features_python() -> Path:
    """The features environment's python (Feast, pika; numpy 2): the consumer and the feature
    store run there, in their own processes."""
    python = FEATURES_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} missing: create the features environment with `make features-env`")
    return python


@pytest.fixture(scope="session")
def features_py() -> Path:
    return features_python()


@dataclass
class StreamServices:
    broker: Broker
    redis: Redis
    root: Path


@pytest.fixture(scope="module")
def stream_services():
    """RabbitMQ and Redis on loopback for one test module, under
    outputs/services/stream-<pid>-<n>/ (kept afterwards: the logs), stopped at its end."""
    root = REPO_ROOT / "outputs" / "services" / f"stream-{os.getpid()}-{next(_SERVICE_ROOTS)}"
    with Broker(root / "rabbitmq") as broker, Redis(root / "redis") as redis:
        yield StreamServices(broker=broker, redis=redis, root=root)
