"""Process set-up for the entry points that run TensorFlow: what no module does on import.

Importing contract/, settings/, components/ or pipelines/ changes nothing in the process
(tests/unit/test_import_side_effects.py). Each entry point calls `prepare_tensorflow_process()`
first, before anything imports TensorFlow: the CLIs' main() (pipelines/, serving/, monitoring/),
the KFP executor entrypoint (components.kfp_entrypoint), a Katib trial (components.tuning.trial)
and a training worker (components.train_worker). It is idempotent. It

- sets TF_USE_LEGACY_KERAS=1 (TFX 1.16 needs Keras 2 as tf.keras; read when TensorFlow loads) and
  TF_CPP_MIN_LOG_LEVEL=2 (hides the C++ INFO and WARNING lines: CUDA drivers, cpu_feature_guard,
  TF-TRT), both unless already set; child processes inherit them;
- ignores the Python warnings in NOISE_WARNINGS (by message, not whole categories) and TensorFlow's
  "From <library file>: ... is deprecated" log lines about library code calling library code;
  deprecations our own code triggers still show;
- imports TensorFlow once with the three XLA lines "Unable to register cuDNN/cuFFT/cuBLAS factory"
  dropped from its stderr: TensorFlow 2.16 registers each CUDA plugin twice and logs that at ERROR
  (tensorflow/tensorflow#62075), harmless, CPU or GPU. TF_CPP_MIN_LOG_LEVEL=3 would hide them but
  also every real C++ error: TensorFlow reads the level once per process, so raising it only for
  the import is the same as raising it for good. CUDA_VISIBLE_DEVICES does not change them.
  With TF_CPP_MIN_LOG_LEVEL=0 or 1 nothing is dropped (a crash inside the import, not an
  exception, would take the held-back lines with it: that is the setting to debug one with);
- keeps AutoGraph out of tf_keras (components/keras_autograph.py).

The Makefile exports the same message filters as PYTHONWARNINGS for processes that are not ours
(Beam workers, benchmarks, notebook kernels); a unit test keeps the two lists equal.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENVIRONMENT = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

# (start of the message, category): said on every run, about nothing this repo can act on.
NOISE_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # google.api_core and each Google client library, once per library: TFX 1.16 needs Python
    # 3.10 (docs/environment.md), which they no longer support.
    ("You are using a non-supported Python version", FutureWarning),
    # google-cloud-aiplatform (via TFX): the lock pins google-cloud-storage 2.x for TFX 1.16.
    ("Support for google-cloud-storage < 3.0.0", FutureWarning),
)

_XLA_DUPLICATE_PLUGIN = re.compile(
    rb"Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for plugin"
)
# Where our own code lives (checkout or site-packages): deprecations it triggers are kept.
_OWN_CODE = tuple(
    f"{Path(__file__).resolve().parent.parent / name}{os.sep}"
    for name in ("contract", "settings", "components", "pipelines", "serving", "monitoring")
)


def prepare_tensorflow_process(*, import_tensorflow: bool = True) -> None:
    """Sets up this process for TensorFlow (see the module docstring). Call it before anything
    imports TensorFlow; `import_tensorflow=False` only sets the environment and the filters."""
    if "tensorflow" in sys.modules and "TF_USE_LEGACY_KERAS" not in os.environ:
        warnings.warn(
            "TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set: tf.keras may be Keras 3",
            RuntimeWarning,
            stacklevel=2,
        )
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    quiet_known_warnings()
    if not import_tensorflow:
        return
    # Asking for TensorFlow's INFO or WARNING lines (TF_CPP_MIN_LOG_LEVEL=0/1) shows all of them.
    if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] not in ("0", "1"):
        with _stderr_without(_XLA_DUPLICATE_PLUGIN):
            import tensorflow  # noqa: F401
    from components.keras_autograph import exempt_tf_keras

    exempt_tf_keras()


def quiet_known_warnings() -> None:
    """The NOISE_WARNINGS filters and the library-deprecation log filter (idempotent)."""
    for message, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _LibraryDeprecations) for f in tf_logger.filters):
        tf_logger.addFilter(_LibraryDeprecations())


def python_warnings() -> str:
    """NOISE_WARNINGS as a PYTHONWARNINGS value (the Makefile's export)."""
    return ",".join(f"ignore:{message}:{category.__name__}" for message, category in NOISE_WARNINGS)


class _LibraryDeprecations(logging.Filter):
    """Drops tensorflow's "From <file>:<line>: X (from Y) is deprecated ..." records when <file>
    is not ours (e.g. TFMA calling tf_record_iterator, TF's readers calling parse_example_dataset)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("From ") or " is deprecated" not in message:
            return True
        caller = message[len("From ") :].split(":", 1)[0]
        return os.path.abspath(caller).startswith(_OWN_CODE)


@contextmanager
def _stderr_without(pattern: re.Pattern[bytes]) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file for the block; afterwards its lines come back
    in order, less those matching `pattern` (C++ code writes to the descriptor, not sys.stderr)."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured if not pattern.search(line))
            while kept:
                kept = kept[os.write(2, kept) :]
