"""The NEWEST kfp SDK on the package index still loads our compiled package (`make check-kfp-latest`).

kfp >= 2.14 needs protobuf 6, which cannot live in the project venv, so this builds (or
upgrades) a throwaway venv at .cache/kfp-latest with the project's pinned uv and runs
tests/kfp_latest_check.py there on tests/golden/kfp_pipeline.yaml. A package index that cannot
be reached is a failure, not a skip: CI installs from the same index.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".venv" / "bin" / "uv"
KFP_VENV = ROOT / ".cache" / "kfp-latest"
KFP_PYTHON = KFP_VENV / "bin" / "python"
CHECK = ROOT / "tests" / "kfp_latest_check.py"
GOLDEN = ROOT / "tests" / "golden" / "kfp_pipeline.yaml"
MIN_KFP = (2, 14)  # newer than the kfp 2.5.0 the project venv is pinned to
INSTALL_TIMEOUT_S = 300  # a cold uv cache downloads ~30 wheels; warm it takes seconds
CHECK_TIMEOUT_S = 120
_NETWORK_HINTS = (
    "failed to fetch",
    "error sending request",
    "dns error",
    "connection refused",
    "timed out",
    "could not connect",
    "network",
)


def _base_python() -> str:
    """The Python the project venv was made from (the Makefile's BASE_PYTHON)."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidate = Path(sys.base_prefix) / "bin" / ver
    if candidate.exists():
        return str(candidate)
    found = shutil.which(ver)
    assert found, f"no {ver} to build {KFP_VENV} from (the Makefile's BASE_PYTHON)"
    return found


def _run(cmd: list[str], timeout: int, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{what} timed out after {timeout}s (is the package index reachable?): {exc.cmd}"
        )


@pytest.fixture(scope="module")
def kfp_latest_python() -> Path:
    assert UV.exists(), f"{UV} missing: run `make env`"
    if not KFP_PYTHON.exists():
        made = _run([str(UV), "venv", "-p", _base_python(), str(KFP_VENV)], 120, "uv venv")
        assert made.returncode == 0, f"uv venv {KFP_VENV} failed:\n{made.stderr}"
    installed = _run(
        [str(UV), "pip", "install", "-p", str(KFP_PYTHON), "--upgrade", "kfp", "kfp-kubernetes"],
        INSTALL_TIMEOUT_S,
        "uv pip install --upgrade kfp kfp-kubernetes",
    )
    if installed.returncode != 0:
        err = installed.stderr.strip()
        unreachable = any(hint in err.lower() for hint in _NETWORK_HINTS)
        pytest.fail(
            ("the package index cannot be reached: " if unreachable else "")
            + f"uv could not install the newest kfp and kfp-kubernetes into {KFP_VENV} "
            f"(exit {installed.returncode}); CI installs from the same index, so this is a "
            f"real failure:\n{err[-3000:]}"
        )
    return KFP_PYTHON


def test_newest_kfp_loads_golden_package(kfp_latest_python):
    # KFP_LATEST_PACKAGE: only to try another package by hand; the default is the golden file.
    package = Path(os.environ.get("KFP_LATEST_PACKAGE", GOLDEN))
    assert package.exists(), f"{package} missing: run `make golden`"
    started = time.monotonic()
    result = _run(
        [str(kfp_latest_python), str(CHECK), str(package)], CHECK_TIMEOUT_S, "kfp_latest_check"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"the newest kfp rejects {package} (exit {result.returncode}):\n{output}"
    )
    match = re.search(r"^OK kfp (\d+)\.(\d+)\S*", result.stdout, re.MULTILINE)
    assert match, f"no summary line in the check's output:\n{output}"
    version = (int(match.group(1)), int(match.group(2)))
    assert version >= MIN_KFP, (
        f"resolved kfp {match.group(0)[6:]}, expected >= {MIN_KFP[0]}.{MIN_KFP[1]} "
        f"(not newer than the project's pin):\n{output}"
    )
    print(match.string[match.start() :].splitlines()[0], f"({time.monotonic() - started:.1f}s)")
