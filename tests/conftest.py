"""Shared fixtures. TF_USE_LEGACY_KERAS must be set before anything imports TensorFlow."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_collection_modifyitems(items):
    """Tier markers from the folder, so `-m unit` / `-m e2e` select without per-test decorators.

    With `pytest -n 2 --dist loadgroup` (make test), tests that share a session run carry an
    `xdist_group` mark in their module, so they stay on one worker in file order: the e2e tests
    built on first_run (one pipeline run, then spans added in order) and the notebooks (03 reuses
    02's run). Everything else spreads over both.
    """
    for item in items:
        for tier in ("unit", "e2e", "notebooks"):
            if f"{os.sep}{tier}{os.sep}" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, tier))
