"""The versions the server can score with, loaded from Pusher's numbered folders.

Pusher writes <model_dir>/<version>/ (a SavedModel each, the TF Serving layout). The store loads
the newest one (or a pinned one), and a watcher loads a newer version in the background while the
old one keeps answering; the swap is one reference assignment, so no request is dropped or sees a
half-loaded model. A version that fails to load (e.g. still being copied) is retried at the next
poll and the old version stays live.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from serving.contract import ARRAY_DTYPES, Contract
from serving.versions import join

_DTYPES = {"string": tf.string, "int": tf.int64, "float": tf.float32}


@dataclass
class LoadedVersion:
    """One SavedModel, its contract and its signature; immutable once loaded."""

    version: str
    path: str
    contract: Contract
    _fn: object = field(repr=False)
    _model: object = field(repr=False)

    def score(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """P(purchase) per instance (float64) for validated columns: one numpy array per feature
        (serving/contract.py), each one tensor of the signature's dtype (floats cast to float32,
        strings as str or UTF-8 bytes)."""
        tensors = {
            name: tf.constant(values, dtype=_DTYPES[self.contract.features[name]["type"]])
            for name, values in columns.items()
        }
        out = self._fn(**tensors)[self.contract.output]
        return np.asarray(out, dtype=np.float64).reshape(-1)


def load_version(model_dir: str, version: str, **contract_settings) -> LoadedVersion:
    path = join(model_dir, version)
    contract = Contract.load(path, **contract_settings)
    model = tf.saved_model.load(path)
    if contract.signature not in model.signatures:
        raise ValueError(f"{path}: no signature {contract.signature!r} ({list(model.signatures)})")
    fn = model.signatures[contract.signature]
    loaded = LoadedVersion(version, path, contract, fn, model)
    loaded.score(warmup_row(contract))  # the first call is slow (tracing): not on a client's time
    return loaded


def warmup_row(contract: Contract) -> dict[str, np.ndarray]:
    """One instance inside every domain."""
    row: dict[str, np.ndarray] = {}
    for name, spec in contract.features.items():
        if spec["type"] == "string":
            value = spec["values"][0] if spec.get("values") else "warmup"
        else:
            low = spec.get("min", 1)
            value = int(low) if spec["type"] == "int" else float(low)
        row[name] = np.array([value], dtype=ARRAY_DTYPES[spec["type"]])
    return row
