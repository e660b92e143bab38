"""Style is part of the suite: ruff lint and format, as `make lint` runs them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


LAYERED = (
    "contract", "settings", "components", "features", "pipelines", "serving", "monitoring",
    "simulator",
)  # fmt: skip


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """lint-imports with .importlinter of `cwd`, the packages found there (grimp reads the
    source; nothing is imported)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
    )


def test_imports_only_go_down_the_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("edits", "broken"),
    [
        ({"components/upward.py": "import pipelines.cli"}, "components is not allowed to import"),
        ({"contract/upward.py": "from settings import load_config"}, "contract is not allowed"),
        ({"pipelines/upward.py": "import simulator.generate"}, "pipelines is not allowed to import"),
        ({"serving/server.py": "import settings"}, "serving.server is not allowed to import"),
        ({"features/upward.py": "import components.model"}, "features is not allowed to import"),
        ({"features/lake.py": "import tensorflow"}, "features is not allowed to import tensorflow"),
        ({"components/a_cycle.py": "import components.trainer",
          "components/trainer.py": "import components.a_cycle"}, "No cycles are allowed"),
    ],
    ids=["component-imports-pipelines", "contract-imports-settings", "pipeline-imports-simulator",
         "server-imports-settings", "features-imports-components", "features-imports-tensorflow",
         "cycle"],
)  # fmt: skip
def test_an_upward_import_or_a_cycle_breaks_the_contract(tmp_path, edits, broken):
    """The contracts are not vacuous: the same tree with one upward import (or a cycle) fails."""
    import shutil

    for package in LAYERED:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    for module, line in edits.items():  # appended: a module-level import at its end
        path = tmp_path / module
        path.write_text((path.read_text() if path.exists() else "") + f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert broken in result.stdout, result.stdout
