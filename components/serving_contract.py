"""The serving contract: what a raw-feature request must look like, written next to the model.

The model server runs in its own environment (serving/requirements.lock: no TFX, no
tensorflow-metadata), so it cannot read the schema proto. At export time the Trainer turns the
curated schema's SERVING view into plain JSON (feature types, required fields, domains) inside the
SavedModel's assets.extra/ folder, which Pusher copies with the model and TF Serving ignores. The
server validates every request against it (serving/contract.py); contract/layout.py names the
file for both.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2

from contract import layout

_TYPES = {schema_pb2.BYTES: "string", schema_pb2.INT: "int", schema_pb2.FLOAT: "float"}


def _feature_contract(feature: schema_pb2.Feature, schema: schema_pb2.Schema) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": _TYPES[feature.type],
        "required": feature.presence.min_fraction >= 1.0,
    }
    domain = feature.WhichOneof("domain_info")
    if domain == "domain":  # a named string_domain at the schema's top level
        named = {d.name: list(d.value) for d in schema.string_domain}
        entry["values"] = named[feature.domain]
    elif domain == "string_domain":
        entry["values"] = list(feature.string_domain.value)
    elif domain in ("int_domain", "float_domain"):
        bounds = getattr(feature, domain)
        for side in ("min", "max"):
            if bounds.HasField(side):
                entry[side] = getattr(bounds, side)
    return entry


def build_contract(
    schema: schema_pb2.Schema, serving_features: list[str], signature: str, output: str
) -> dict[str, Any]:
    """The contract for the raw features the serving signature takes, in the schema's terms."""
    by_name = {f.name: f for f in schema.feature}
    missing = sorted(set(serving_features) - set(by_name))
    if missing:
        raise ValueError(f"serving features not in the schema: {missing}")
    return {
        "signature": signature,
        "output": output,
        "features": {name: _feature_contract(by_name[name], schema) for name in serving_features},
    }


def write_contract(model_dir: str, contract: dict[str, Any]) -> str:
    path = os.path.join(model_dir, layout.SERVING_CONTRACT)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(contract, indent=2, sort_keys=True))
    return path
