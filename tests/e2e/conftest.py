"""Session-wide e2e fixtures: one generated dataset and one local run, shared by the local-runner
tests and the KFP harness test (which compares its compiled-spec run with the local one)."""

import pytest
from e2e_data import ROWS, SEED, config_for

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
