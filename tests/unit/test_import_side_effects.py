"""Importing the package changes nothing in the process: no environment variable, no patched
TensorFlow. The set-up is the entry points' job (components/runtime.py's prepare_tensorflow_process,
called by the CLIs, the KFP executor entrypoint, the trial and the training worker).

The imports run in a fresh interpreter with TF_USE_LEGACY_KERAS and TF_CPP_MIN_LOG_LEVEL unset (a
`setdefault` on a variable that is already set changes nothing, so it could not be seen), and every
write to os.environ is recorded with the file that made it: libraries' own writes on import
(tensorflow_transform.keras_lib sets TF_USE_LEGACY_KERAS=1 itself) are not ours to remove. The
modules are only imported, nothing is built.
"""

import json
import os
import subprocess
import sys

import pytest
from repo_paths import REPO_ROOT

PACKAGES = ("contract", "settings", "components", "pipelines")
UNSET = ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")

PROBE = r"""
import importlib, json, os, pkgutil, sys

def rules(config):
    return [(type(rule).__name__, getattr(rule, "_prefix", None)) for rule in config.CONVERSION_RULES]

# Every write to os.environ, with the file and line that made it: libraries set variables on
# import too (tensorflow_transform sets TF_USE_LEGACY_KERAS, TensorFlow TF2_BEHAVIOR), and only
# ours are in question.
writes = []
Environ = type(os.environ)
set_item, del_item = Environ.__setitem__, Environ.__delitem__

def writer():
    frame = sys._getframe(2)
    while frame and frame.f_code.co_filename.endswith(("os.py", "_collections_abc.py")):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"

def record_set(self, key, value):
    writes.append([key, value, writer()])
    set_item(self, key, value)

def record_del(self, key):
    writes.append([key, None, writer()])
    del_item(self, key)

Environ.__setitem__, Environ.__delitem__ = record_set, record_del

# TensorFlow's own import is the AutoGraph baseline.
from tensorflow.python.autograph.core import config as autograph_config
rules_before, rules_object = rules(autograph_config), autograph_config.CONVERSION_RULES
imported, failed = [], {}
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    imported.append(name)
    for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # runs on import by design
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except Exception as err:  # reported, not hidden: a module that cannot be imported
            failed[info.name] = f"{type(err).__name__}: {err}"
print("RESULT " + json.dumps({
    "imported": imported,
    "failed": failed,
    "writes": writes,
    "rules_before": rules_before,
    "rules_after": rules(autograph_config),
    "rules_replaced": autograph_config.CONVERSION_RULES is not rules_object,
}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *PACKAGES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"the import probe failed:\n{done.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def test_every_module_of_the_lower_layers_imports(probe):
    assert not probe["failed"], probe["failed"]
    assert len(probe["imported"]) > 40, probe["imported"]  # the walk found the modules


def test_importing_them_changes_no_environment_variable(probe):
    ours = tuple(f"{REPO_ROOT / package}{os.sep}" for package in PACKAGES)
    by_us = [write for write in probe["writes"] if write[2].startswith(ours)]
    assert not by_us, (
        f"importing {', '.join(PACKAGES)} changed the environment ([name, value, where]): "
        f"{by_us}; set it in the entry point instead (components.runtime."
        f"prepare_tensorflow_process). Libraries' own, for reference: "
        f"{sorted({write[0] for write in probe['writes']} - {write[0] for write in by_us})}"
    )


def test_importing_them_leaves_autograph_alone(probe):
    before, after = probe["rules_before"], probe["rules_after"]
    added = [rule for rule in after if rule not in before]
    removed = [rule for rule in before if rule not in after]
    assert after == before and not probe["rules_replaced"], (
        f"importing {', '.join(PACKAGES)} patched AutoGraph's conversion rules (added {added}, "
        f"removed {removed}); call components.keras_autograph.exempt_tf_keras() from the entry "
        "point instead"
    )


ENTRY_POINT = r"""
import logging, sys, warnings
from components.runtime import prepare_tensorflow_process

prepare_tensorflow_process()
import tensorflow as tf
from tensorflow.python.autograph.core import config

print("exempt", any(getattr(r, "_prefix", None) == "tf_keras" for r in config.CONVERSION_RULES))
print("keras", tf.keras.__name__.split(".")[0])  # Keras 2: tf_keras
warnings.warn("You are using a non-supported Python version (3.10)", FutureWarning)
warnings.warn("a real one", FutureWarning)
log = logging.getLogger("tensorflow")
log.warning("From /x/site-packages/lib.py:1: old (from lib) is deprecated and will be removed")
log.warning("From %s:1: old (from lib) is deprecated and will be removed", sys.argv[1])
"""


def test_an_entry_point_is_set_up_and_quiet_yet_keeps_real_warnings():
    """What prepare_tensorflow_process leaves of TensorFlow's start-up lines (components/runtime.py)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET and k != "PYTHONWARNINGS"}
    ours = str(REPO_ROOT / "components" / "trainer.py")
    done = subprocess.run(
        [sys.executable, "-c", ENTRY_POINT, ours],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.splitlines()[:2] == ["exempt True", "keras tf_keras"]
    err = done.stderr
    for noise in ("Unable to register", "cpu_feature_guard", "cuda drivers", "TensorRT"):
        assert noise not in err, err
    assert "non-supported Python version" not in err and "site-packages/lib.py" not in err, err
    assert "a real one" in err and f"From {ours}:1" in err, err  # real warnings stay


def test_the_makefile_and_pytest_ignore_the_entry_points_noise_warnings_only():
    from components.runtime import NOISE_WARNINGS, python_warnings

    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"export PYTHONWARNINGS := {python_warnings()}\n" in makefile
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    for message, category in NOISE_WARNINGS:
        assert f'"ignore:{message}:{category.__name__}"' in pyproject, message
    assert '"ignore::FutureWarning"' not in pyproject  # real ones show
