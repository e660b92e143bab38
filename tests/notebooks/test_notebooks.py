"""The notebook tier: every notebook runs with papermill on CI parameters, on the project's kernel,
and its cells assert what the notebook claims. Executed copies are kept under outputs/notebooks/."""

import json

import nbformat
import pytest
from repo_paths import REPO_ROOT

from pipelines.docs import KERNEL_NAME, ci_parameters, execute, notebooks

# One xdist worker runs the notebooks in order: 03-08 reuse 02's run (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("notebooks")

EXECUTED = REPO_ROOT / "outputs" / "notebooks" / "executed"


READING_ORDER = [
    "01_data",
    "02_pipeline",
    "03_training_and_evaluation",
    "04_tuning_with_katib",
    "05_kubeflow",
    "06_serving_and_ab",
    "07_monitoring_and_retraining",
    "08_recommendations",
]


def test_there_are_notebooks_in_reading_order():
    """One notebook per stage of the story; 03-08 read back the run 02 makes, so order matters."""
    assert [n.stem for n in notebooks()] == READING_ORDER
    assert list(ci_parameters("/tmp")) == READING_ORDER


@pytest.mark.parametrize("notebook", notebooks(), ids=lambda n: n.stem)
def test_notebook_is_clean_and_parameterized(notebook):
    """No stale outputs in git, a `parameters` cell, and the project's kernel."""
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.kernelspec.name == KERNEL_NAME
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
    stale = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not stale, (
        f"{notebook.name}: outputs in code cells {stale}; clear them before committing"
    )


@pytest.mark.parametrize("notebook", notebooks(), ids=lambda n: n.stem)
def test_notebook_runs_and_its_assertions_hold(notebook, notebook_work_dir):
    parameters = ci_parameters(notebook_work_dir)[notebook.stem]
    executed = execute(notebook, EXECUTED, parameters)
    nb = json.loads(executed.read_text())
    errors = [
        o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
