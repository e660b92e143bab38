import pytest


@pytest.fixture(scope="session")
def notebook_work_dir(tmp_path_factory):
    """One folder for the whole tier, so notebooks 03-08 reuse notebook 02's pipeline run."""
    return tmp_path_factory.mktemp("notebooks")
