"""Session-wide e2e fixtures: one generated dataset and one local run, shared by the local-runner
tests and the KFP harness test (which compares its compiled-spec run with the local one)."""

import pytest
from e2e_data import ROWS, SEED, config_for

from pipelines.local_runner import run_local
from simulator.generate import SimulationOptions, write_dataset


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """Spans 1-2 of the shop; test_local_pipeline later adds a drifted span 3 and a corrupt 4."""
    root = tmp_path_factory.mktemp("e2e")
    write_dataset(SimulationOptions(rows_per_span=ROWS, spans=2, seed=SEED), root / "data")
    return root


@pytest.fixture(scope="session")
def first_run(workspace):
    """The local runner on the newest span: span 2, as every user of this fixture asks for it
    before test_local_pipeline adds spans 3 and 4."""
    run = run_local(config_for(workspace))[0]
    assert run.span == 2, run.span
    return run
