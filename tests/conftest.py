"""Shared fixtures. TF_USE_LEGACY_KERAS must be set before anything imports TensorFlow."""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

TIERS = ("unit", "e2e", "notebooks")


def pytest_collection_modifyitems(items):
    """Tier markers from the folder, so `-m unit` / `-m e2e` select without per-test decorators.
    A test that names its tier itself keeps only that one (tests/unit/test_benchmarks.py's
    pipeline-scaling smoke run is `e2e`: the unit tier runs no pipeline).

    With `pytest -n 2 --dist loadgroup` (make test), tests that share a session run carry an
    `xdist_group` mark in their module, so they stay on one worker in file order: the e2e tests
    built on first_run (one pipeline run, then spans added in order) and the notebooks (03 reuses
    02's run). Everything else spreads over both.
    """
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        for tier in TIERS:
            if f"{os.sep}{tier}{os.sep}" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def s3_server():
    """A loopback S3 API server (moto; tests/object_store.py) for this test process, its log under
    outputs/services/; the process's S3 clients (tensorflow-io, boto3) are pointed at it."""
    import object_store
    from repo_paths import REPO_ROOT

    from settings import ObjectStoreConfig

    with object_store.running(REPO_ROOT / "outputs" / "services" / "moto") as server:
        settings = ObjectStoreConfig(endpoint=server.endpoint, region=object_store.REGION)
        saved = dict(os.environ)
        os.environ.update({**settings.environment(), **server.credentials_env()})
        try:
            yield server
        finally:
            os.environ.clear()
            os.environ.update(saved)


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config):
    """Once a test loaded tensorflow-io's S3 filesystem, the AWS SDK's destructors abort the
    interpreter's exit ("pure virtual method called", exit 134) after every test passed
    (components/filesystems.py): a single-process run then leaves with its real status, after
    pytest has reported everything. xdist workers are left alone (their controller reports)."""
    if "tensorflow_io" in sys.modules and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 0))


_EXIT_STATUS = pytest.StashKey[int]()
