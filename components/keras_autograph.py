"""Keeps AutoGraph out of Keras 2's own code (the tf_keras package).

TensorFlow exempts the `keras` package from AutoGraph conversion (its code is already graph-ready)
but not `tf_keras`: the same Keras 2 code under the name TF_USE_LEGACY_KERAS=1 loads. Without the
exemption the first trace of a train, evaluate or export step transpiles several hundred tf_keras
functions, about 20 s per process on this machine before one step runs (docs/benchmarks.md). Our own
functions are still converted. SHOP_KERAS_AUTOGRAPH=1 restores TensorFlow's default (the
benchmark's "before" variant).

Never applied on import: the entry points call it (components.runtime.prepare_tensorflow_process)
and so does the train() core (components/training.py) before it builds the model, so run_fn,
workers, trials and notebooks that train get it; code that fits a model of its own (the training
throughput benchmark) calls it before its first step.
"""

from __future__ import annotations

import os

PACKAGE = "tf_keras"
RESTORE_DEFAULT_ENV = "SHOP_KERAS_AUTOGRAPH"


def exempt_tf_keras() -> bool:
    """Adds DoNotConvert('tf_keras') to AutoGraph's rules once; returns whether it is in place."""
    if os.environ.get(RESTORE_DEFAULT_ENV) == "1":
        return False
    from tensorflow.python.autograph.core import config  # no public API for the rule list

    if not any(getattr(rule, "_prefix", None) == PACKAGE for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config.DoNotConvert(PACKAGE), *config.CONVERSION_RULES)
    return True
