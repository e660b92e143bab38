"""Request validation against the serving contract the Trainer writes next to the model.

Every check names the field, so a client sees what to fix; the model only ever sees typed columns
that satisfy the curated schema. Pure Python: the server and the tests share it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from contract import layout  # where the contract lies in a version folder

# V2 (Open Inference Protocol) datatypes each contract type accepts.
V2_DATATYPES = {"string": ("BYTES",), "int": ("INT64", "INT32"), "float": ("FP32", "FP64")}
V2_DATATYPE_OUT = {"string": "BYTES", "int": "INT64", "float": "FP32"}
# The model computes in float32 and int64 (serving/model_store.py): a JSON number outside these
# ranges would become inf (and the score NaN) or fail in TensorFlow, so it is the client's error.
FLOAT32_MAX = 3.4028234663852886e38
INT64_RANGE = (-(2**63), 2**63 - 1)
SHOWN_CHARS = 40  # values quoted in an error message are cut to this many characters


class RequestError(ValueError):
    """A request the contract rejects; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Contract:
    features: dict[str, dict[str, Any]]
    signature: str
    output: str
    max_instances: int = 1000
    max_string_length: int = 256  # for string features without a domain (ids, free text)
    id_field: str | None = "impression_id"  # passed through to the log, never to the model

    @classmethod
    def load(cls, model_dir: str, **settings: Any) -> Contract:
        from serving import versions  # the same store the model is loaded from

        path = versions.join(model_dir, layout.SERVING_CONTRACT)
        if not versions.exists(path):
            raise FileNotFoundError(
                f"{path}: no serving contract; models exported by components/signatures.py have one"
            )
        raw = json.loads(versions.read_text(path))
        return cls(raw["features"], raw["signature"], raw["output"], **settings)

    def max_length(self, name: str) -> int:
        """Characters a value of string feature `name` may have: its own `max_length` in the
        contract, else its domain's longest value, else the server's max_string_length."""
        spec = self.features[name]
        if "max_length" in spec:
            return int(spec["max_length"])
        if spec.get("values"):
            return max(len(v) for v in spec["values"])
        return self.max_string_length

    def _check_size(self, n: int) -> None:
        if n == 0:
            raise RequestError("the request has no instances")
        if n > self.max_instances:
            raise RequestError(
                f"{n} instances in one request; the limit is {self.max_instances}", status=413
            )

    def _value(self, name: str, value: Any, row: int | None) -> Any:
        """One value, typed and inside its domain, or a RequestError naming the field."""
        spec = self.features[name]
        where = f"field {name!r}" + (f" (instance {row})" if row is not None else "")
        kind = spec["type"]
        if value is None:
            raise RequestError(f"{where}: missing value (required, {kind})")
        if kind == "string":
            if not isinstance(value, str):
                raise RequestError(f"{where}: expected a string, got {type(value).__name__}")
            if "values" in spec and value not in spec["values"]:
                shown = ", ".join(spec["values"][:8]) + (", ..." if len(spec["values"]) > 8 else "")
                raise RequestError(f"{where}: {_shown(value)} is not in the domain ({shown})")
            limit = self.max_length(name)
            if len(value) > limit:
                raise RequestError(
                    f"{where}: {len(value)} characters; the limit is {limit} ({_shown(value)})"
                )
            return value
        # JSON has no int/float distinction for 3 vs 3.0; bool is never a number here.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{where}: expected {kind}, got {type(value).__name__}")
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise RequestError(f"{where}: expected int, got {value!r}")
            value = int(value)
            low, high = INT64_RANGE
            if not low <= value <= high:
                raise RequestError(f"{where}: {_shown(value)} is outside int64's range")
        else:
            try:
                value = float(value)
            except OverflowError:  # a JSON integer beyond float64
                raise RequestError(f"{where}: {_shown(value)} is outside float32's range") from None
            if not math.isfinite(value):
                raise RequestError(f"{where}: {value!r} is not a finite number")
            if abs(value) > FLOAT32_MAX:
                raise RequestError(
                    f"{where}: {value!r} is outside float32's range (±{FLOAT32_MAX:.7g})"
                )
        if "min" in spec and value < spec["min"]:
            raise RequestError(f"{where}: {value!r} is below the domain's minimum {spec['min']}")
        if "max" in spec and value > spec["max"]:
            raise RequestError(f"{where}: {value!r} is above the domain's maximum {spec['max']}")
        return value

    def _check_names(self, names: set[str]) -> None:
        unknown = sorted(names - set(self.features) - {self.id_field})
        if unknown:
            raise RequestError(
                f"unknown field(s) {unknown}; the model takes {sorted(self.features)}"
            )
        missing = sorted(n for n, s in self.features.items() if s["required"] and n not in names)
        if missing:
            raise RequestError(f"missing required field(s) {missing}")

    def from_instances(self, instances: Any) -> tuple[dict[str, list], list | None]:
        """V1 row format: a list of {feature: value}. Returns typed columns and the ids."""
        if not isinstance(instances, list):
            raise RequestError("'instances' must be a list of objects")
        self._check_size(len(instances))
        columns: dict[str, list] = {name: [] for name in self.features}
        ids: list | None = [] if self.id_field else None
        for row, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(f"instance {row}: expected an object of features")
            self._check_names_row(instance, row)
            for name in self.features:
                columns[name].append(self._value(name, instance.get(name), row))
            if ids is not None:
                ids.append(self._id(instance.get(self.id_field), row))
        return columns, ids

    def _id(self, value: Any, row: int) -> str | None:
        """The pass-through id: a string (or absent), as long as any other string may be."""
        where = f"field {self.id_field!r} (instance {row})"
        if value is None:
            return None
        if not isinstance(value, str):
            raise RequestError(f"{where}: expected a string, got {type(value).__name__}")
        if len(value) > self.max_string_length:
            raise RequestError(
                f"{where}: {len(value)} characters; the limit is {self.max_string_length}"
            )
        return value

    def _check_names_row(self, instance: dict, row: int) -> None:
        try:
            self._check_names(set(instance))
        except RequestError as err:
            raise RequestError(f"instance {row}: {err}") from None

    def from_columns(self, inputs: Any) -> tuple[dict[str, list], list | None]:
        """V1 columnar format ("inputs": {feature: [values]}) or decoded V2 tensors."""
        if not isinstance(inputs, dict):
            raise RequestError("'inputs' must be an object of {feature: [values]}")
        self._check_names(set(inputs))
        lengths = {name: len(v) if isinstance(v, list) else None for name, v in inputs.items()}
        for name, n in lengths.items():
            if n is None:
                raise RequestError(f"field {name!r}: expected a list of values")
        n = next(iter(lengths.values()))
        uneven = {name: m for name, m in lengths.items() if m != n}
        if uneven:
            raise RequestError(f"fields have different lengths: {dict(sorted(lengths.items()))}")
        self._check_size(n)
        columns = {
            name: [self._value(name, v, row) for row, v in enumerate(inputs[name])]
            for name in self.features
        }
        ids = None
        if self.id_field and self.id_field in inputs:
            ids = [self._id(v, row) for row, v in enumerate(inputs[self.id_field])]
        return columns, ids

    def input_metadata(self) -> list[dict[str, Any]]:
        """V2 model metadata: one [-1] tensor per feature."""
        return [
            {"name": name, "datatype": V2_DATATYPE_OUT[spec["type"]], "shape": [-1]}
            for name, spec in sorted(self.features.items())
        ]


def _shown(value: Any) -> str:
    """A value for an error message, cut short: a 1 MB id is not echoed back."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}..."
