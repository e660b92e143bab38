"""Request validation against the serving contract the Trainer writes next to the model.

Every check names the field, so a client sees what to fix; the model only ever sees typed columns
that satisfy the curated schema. Python and numpy only: the server and the tests share it.

Columns are checked column-wise: each becomes one numpy array of its type (strings: object arrays
of str, or of bytes as V2 binary tensor data brings them; ints int64; floats float64, or float32
as sent in binary), and every check of `_value` is made on the whole column at once (the set of
Python types in it, domain membership as one set operation, the longest string, the column's
minimum and maximum). Only a column that some check flags, or that mixes types (3 and 7.0 in an
int column), goes through `_value` one value at a time, which raises the request's error: the
message is the one the per-value path gives for the first offending value, whichever path ran.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from contract import layout  # where the contract lies in a version folder

# V2 (Open Inference Protocol) datatypes each contract type accepts.
V2_DATATYPES = {"string": ("BYTES",), "int": ("INT64", "INT32"), "float": ("FP32", "FP64")}
V2_DATATYPE_OUT = {"string": "BYTES", "int": "INT64", "float": "FP32"}
# The model computes in float32 and int64 (serving/model_store.py): a JSON number outside these
# ranges would become inf (and the score NaN) or fail in TensorFlow, so it is the client's error.
FLOAT32_MAX = 3.4028234663852886e38
INT64_RANGE = (-(2**63), 2**63 - 1)
SHOWN_CHARS = 40  # values quoted in an error message are cut to this many characters
# The arrays a validated column is, per contract type (binary FP32 tensor data stays float32).
ARRAY_DTYPES = {
    "string": np.dtype(object),
    "int": np.dtype(np.int64),
    "float": np.dtype(np.float64),
}
# The Python types a JSON column of each contract type may hold for the column-wise path.
_COLUMN_TYPES = {"string": {str}, "int": {int}, "float": {float, int}}


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

    def from_instances(self, instances: Any) -> tuple[dict[str, np.ndarray], list | None]:
        """V1 row format: a list of {feature: value}. Returns typed columns and the ids."""
        if not isinstance(instances, list):
            raise RequestError("'instances' must be a list of objects")
        self._check_size(len(instances))
        at_once = self._instances_at_once(instances)
        if at_once is not None:
            return at_once
        # Some row is flagged: row by row, as the rows were sent, to raise at the first bad value.
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
        typed = {name: np.array(v, dtype=ARRAY_DTYPES[self.features[name]["type"]])
                 for name, v in columns.items()}  # fmt: skip
        return typed, ids

    def _instances_at_once(self, instances: list) -> tuple[dict[str, np.ndarray], list] | None:
        """The rows as columns, checked column-wise; None when any check flags something (or the
        rows are not all objects with the same fields), so that the row-by-row path answers."""
        if set(map(type, instances)) != {dict}:
            return None
        for fields in set(map(frozenset, instances)):
            try:
                self._check_names(set(fields))
            except RequestError:
                return None
        columns = {}
        for name in self.features:
            column = self._column(name, [instance.get(name) for instance in instances])
            if column is None:
                return None
            columns[name] = column
        ids = None
        if self.id_field:
            ids = self._id_column([instance.get(self.id_field) for instance in instances])
            if ids is None:
                return None
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

    def from_columns(self, inputs: Any) -> tuple[dict[str, np.ndarray], list | None]:
        """V1 columnar format ("inputs": {feature: [values]}) or decoded V2 tensors (lists, or
        1-D numpy arrays for binary tensor data)."""
        if not isinstance(inputs, dict):
            raise RequestError("'inputs' must be an object of {feature: [values]}")
        self._check_names(set(inputs))
        lengths = {name: len(v) if _is_column(v) else None for name, v in inputs.items()}
        for name, n in lengths.items():
            if n is None:
                raise RequestError(f"field {name!r}: expected a list of values")
        n = next(iter(lengths.values()))
        uneven = {name: m for name, m in lengths.items() if m != n}
        if uneven:
            raise RequestError(f"fields have different lengths: {dict(sorted(lengths.items()))}")
        self._check_size(n)
        columns = {}
        for name in self.features:  # an optional feature left out is missing in every instance
            values = inputs[name] if name in inputs else [None] * n
            column = self._column(name, values)
            columns[name] = self._column_by_value(name, values) if column is None else column
        ids = None
        if self.id_field and self.id_field in inputs:
            values = inputs[self.id_field]
            ids = self._id_column(values)
            if ids is None:
                ids = [self._id(v, row) for row, v in enumerate(self._plain(self.id_field, values))]
        return columns, ids

    # -- the column-wise checks -----------------------------------------------------------------
    def _column(self, name: str, values: list | np.ndarray) -> np.ndarray | None:
        """`values` as one array of the feature's type, when every value passes every check of
        `_value` (decided for the whole column at once); None when any value would not, or the
        column mixes types: `_column_by_value` then answers, value by value."""
        kind = self.features[name]["type"]
        if len(values) == 0:
            return None
        if isinstance(values, np.ndarray):
            column = _typed_array(kind, values)
        elif set(map(type, values)) <= _COLUMN_TYPES[kind]:
            try:
                column = np.array(values, dtype=ARRAY_DTYPES[kind])
            except (OverflowError, ValueError, TypeError):  # an int past int64 or float64
                return None
        else:
            return None
        if column is None:
            return None
        if kind == "string":
            return column if self._strings_pass(name, column) else None
        return column if self._numbers_pass(name, column) else None

    def _strings_pass(self, name: str, column: np.ndarray) -> bool:
        """Domain membership and the length limit, for str or (V2 binary) UTF-8 bytes values."""
        spec = self.features[name]
        limit = self._max_lengths[name]
        if isinstance(column[0], bytes):
            try:  # one decode per column: a separator byte cannot be inside a UTF-8 sequence
                b"\n".join(column).decode("utf-8")
            except UnicodeDecodeError:
                return False
            if "values" in spec and not self._byte_domains[name].issuperset(column):
                return False
            # A UTF-8 value has at least as many bytes as characters: decode only the long ones.
            lengths = np.fromiter(map(len, column), dtype=np.int64, count=len(column))
            return all(len(column[i].decode()) <= limit for i in np.flatnonzero(lengths > limit))
        if "values" in spec and not self._domains[name].issuperset(column):
            return False
        return max(map(len, column)) <= limit

    def _numbers_pass(self, name: str, column: np.ndarray) -> bool:
        """Finite, inside float32's range (floats), inside the domain's min and max. An int64
        column is inside int64's range by its type. Compared as Python numbers, as _value does."""
        spec = self.features[name]
        low, high = column.min().item(), column.max().item()  # NaN anywhere makes both NaN
        if spec["type"] == "float":
            if not (math.isfinite(low) and math.isfinite(high)):
                return False
            if low < -FLOAT32_MAX or high > FLOAT32_MAX:
                return False
        if "min" in spec and low < spec["min"]:
            return False
        return not ("max" in spec and high > spec["max"])

    def _id_column(self, values: list | np.ndarray) -> list | None:
        """The ids, each a str inside max_string_length or absent (None); None when not."""
        if isinstance(values, np.ndarray):
            if values.dtype != object or set(map(type, values)) != {bytes}:
                return None
            try:
                values = [v.decode("utf-8") for v in values]
            except UnicodeDecodeError:
                return None
        types = set(map(type, values))
        if not types <= {str, type(None)}:
            return None
        given = [v for v in values if v is not None] if type(None) in types else values
        return list(values) if not given or max(map(len, given)) <= self.max_string_length else None

    def _column_by_value(self, name: str, values: list | np.ndarray) -> np.ndarray:
        """The exact path: `_value` on each value in order; raises at the first it rejects."""
        typed = [self._value(name, v, row) for row, v in enumerate(self._plain(name, values))]
        return np.array(typed, dtype=ARRAY_DTYPES[self.features[name]["type"]])

    def _plain(self, name: str, values: list | np.ndarray) -> Iterator[Any]:
        """Values as the JSON decoder gives them, in order: Python scalars, text as str (V2
        binary bytes decoded; a value that is not UTF-8 is the request's error)."""
        if not isinstance(values, np.ndarray):
            yield from values
            return
        for row, value in enumerate(values.tolist()):
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise RequestError(
                        f"field {name!r} (instance {row}): not UTF-8 text ({_shown(value)})"
                    ) from None
            yield value

    @cached_property
    def _max_lengths(self) -> dict[str, int]:
        return {n: self.max_length(n) for n, s in self.features.items() if s["type"] == "string"}

    @cached_property
    def _domains(self) -> dict[str, frozenset[str]]:
        return {n: frozenset(s["values"]) for n, s in self.features.items() if "values" in s}

    @cached_property
    def _byte_domains(self) -> dict[str, frozenset[bytes]]:
        return {n: frozenset(v.encode() for v in d) for n, d in self._domains.items()}

    def input_metadata(self) -> list[dict[str, Any]]:
        """V2 model metadata: one [-1] tensor per feature."""
        return [
            {"name": name, "datatype": V2_DATATYPE_OUT[spec["type"]], "shape": [-1]}
            for name, spec in sorted(self.features.items())
        ]


def _is_column(values: Any) -> bool:
    return isinstance(values, list) or (isinstance(values, np.ndarray) and values.ndim == 1)


def _typed_array(kind: str, values: np.ndarray) -> np.ndarray | None:
    """A V2 tensor's array as a column of `kind`, or None when its dtype is not one of kind's
    (the value-by-value path then judges its values as Python scalars)."""
    if kind == "string":
        if values.dtype == object and len(set(map(type, values))) == 1:
            return values if isinstance(values[0], (str, bytes)) else None
        return None
    if kind == "int":
        return values.astype(np.int64, copy=False) if values.dtype.kind == "i" else None
    return values if values.dtype in (np.float32, np.float64) else None


def plain_column(values: list | np.ndarray) -> list:
    """A column as JSON values (the request log): Python scalars, text as str."""
    if not isinstance(values, np.ndarray):
        return list(values)
    plain = values.tolist()
    if values.dtype == object and bytes in set(map(type, plain)):  # V2 binary strings
        plain = [v.decode("utf-8") if isinstance(v, bytes) else v for v in plain]
    return plain


def _shown(value: Any) -> str:
    """A value for an error message, cut short: a 1 MB id is not echoed back."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}..."
