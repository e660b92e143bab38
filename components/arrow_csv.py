"""ExampleGen's CSV reader, columnar: pyarrow parses each file, tfx_bsl's C++ encoder writes the
tf.Examples (data.csv_reader: arrow, the default).

TFX's CsvExampleGen executor builds every tf.Example cell by cell in Python; it was the pipeline's
largest per-row cost (docs/benchmarks.md). This executor keeps its output contract:
- one feature per CSV column, named by the header; the same columns in every file of a split;
- a column's type is inferred over all files of the split as TFX's CSV decoder does: int if every
  non-blank cell is an int, else float, else bytes (a column with one "twelve" becomes bytes, which
  the schema check then reports); a column blank everywhere is left out;
- a blank cell is an empty value list, as TFX writes it;
- quoted fields may contain newlines.
The split into train/eval is TFX's: it hashes the split config's partition feature (the pipeline
names request_id, pipelines/platforms.py) or, without one, each serialized example. The examples
are re-serialized deterministically (the C++ encoder's field order changes between processes), so
every row lands in the same split as under `tfx`, in every run, either way.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from pyarrow import csv as pacsv
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

# Column kinds in widening order: merging two files' kinds takes the wider one.
UNKNOWN, INT, FLOAT, BYTES = 0, 1, 2, 3
ARROW_TYPES = {INT: pa.int64(), FLOAT: pa.float32(), BYTES: pa.binary()}
ENCODE_ROWS = 20_000  # rows per encoder call: bounded memory for the serialized batch


class CsvFormatError(ValueError):
    """A CSV file cannot be read as the split's columns; the message names the file."""


def _header(path: str) -> list[str]:
    with fileio.open(path, "rb") as handle:
        line = handle.readline().decode("utf-8")
    names = next(csv.reader(io.StringIO(line)), [])
    if not names:
        raise CsvFormatError(f"{path}: no header line")
    return names


def read_as_strings(path: str) -> pa.Table:
    """Every column as strings, blanks as nulls: the types are decided over the whole split."""
    names = _header(path)
    with fileio.open(path, "rb") as handle:
        data = handle.read()
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as err:
        raise CsvFormatError(f"{path}: {err}") from err


def _kind(column: pa.ChunkedArray) -> int:
    values = column.drop_null()
    if len(values) == 0:
        return UNKNOWN
    for kind, arrow_type in ((INT, pa.int64()), (FLOAT, pa.float64())):
        try:
            pc.cast(values, arrow_type)
            return kind
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return BYTES


def column_kinds(path: str) -> dict:
    """{"columns": header, "kinds": {name: kind}, "files": [path]} of one file."""
    table = read_as_strings(path)
    return {
        "columns": table.column_names,
        "kinds": {name: _kind(table[name]) for name in table.column_names},
        "files": [path],
    }


def merge_kinds(parts) -> dict:
    """The split's columns and kinds; files whose header differs are named."""
    merged: dict | None = None
    for part in parts:
        if merged is None:
            merged = {"columns": part["columns"], "kinds": dict(part["kinds"]), "files": []}
        elif part["columns"] != merged["columns"]:
            raise CsvFormatError(
                f"{part['files'][0]}: header {part['columns']} differs from "
                f"{merged['files'][0]}'s {merged['columns']}"
            )
        for name, kind in part["kinds"].items():
            merged["kinds"][name] = max(merged["kinds"][name], kind)
        merged["files"] += part["files"]
    return merged or {"columns": [], "kinds": {}, "files": []}


def _as_lists(values: pa.Array) -> pa.ListArray:
    """One value per row, or an empty list where the cell was blank (TFX's encoding of a blank)."""
    lengths = pc.cast(pc.is_valid(values), pa.int32()).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values.drop_null())


def encode_file(path: str, kinds: dict) -> Iterator[bytes]:
    """The file's rows as serialized tf.Examples, with the split's column types."""
    table = read_as_strings(path)
    if table.column_names != kinds["columns"]:
        raise CsvFormatError(f"{path}: header {table.column_names} differs from {kinds['columns']}")
    columns = [name for name in table.column_names if kinds["kinds"][name] != UNKNOWN]
    typed = {}
    for name in columns:
        kind = kinds["kinds"][name]
        column = table[name].combine_chunks()
        if kind == FLOAT:  # float64 first: "1e-3" and "7" both parse; tf.Example holds float32
            column = pc.cast(pc.cast(column, pa.float64()), pa.float32())
        else:
            column = pc.cast(column, ARROW_TYPES[kind])
        typed[name] = column
    encoder = RecordBatchToExamplesEncoder()
    parse = tf.train.Example.FromString
    for start in range(0, table.num_rows, ENCODE_ROWS):
        batch = pa.RecordBatch.from_arrays(
            [_as_lists(typed[name].slice(start, ENCODE_ROWS)) for name in columns], columns
        )
        # The C++ encoder writes the feature map in hash order, which changes from process to
        # process; the train/eval split hashes these bytes. Re-serialized deterministically (map
        # keys sorted), they are the bytes TFX's executor hashes: the same split, in every run.
        for serialized in encoder.encode(batch):
            yield parse(serialized).SerializeToString(deterministic=True)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _ArrowCsvToExample(pipeline: beam.Pipeline, exec_properties: dict, split_pattern: str):  # noqa: N802
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    files = sorted(fileio.glob(pattern))
    if not files:
        raise RuntimeError(f"Split pattern {pattern} does not match any files.")
    paths = pipeline | "Files" >> beam.Create(files)
    kinds = (
        paths
        | "ColumnKinds" >> beam.Map(column_kinds)
        | "MergeKinds" >> beam.CombineGlobally(merge_kinds)
    )
    examples = paths | "Encode" >> beam.FlatMap(encode_file, kinds=beam.pvalue.AsSingleton(kinds))
    if partition := _partition_feature(exec_properties):
        for path in files:  # TFX's split would fail deep in Beam: name the file here
            if partition not in (names := _header(path)):
                raise CsvFormatError(
                    f"{path}: no {partition!r} column, which the train/eval split hashes "
                    f"(split_config.partition_feature_name); the file's columns: {sorted(names)}"
                )
        # TFX's split reads a partition feature only from tf.train.Example objects, not bytes.
        examples = examples | "AsExamples" >> beam.Map(tf.train.Example.FromString)
    return examples


def _partition_feature(exec_properties: dict) -> str:
    """The output config's partition_feature_name ("" when the split hashes whole examples)."""
    output_config = exec_properties.get(standard_component_specs.OUTPUT_CONFIG_KEY)
    if not output_config:
        return ""
    config = example_gen_pb2.Output()
    proto_utils.json_to_proto(output_config, config)
    return config.split_config.partition_feature_name


class Executor(BaseExampleGenExecutor):
    """CsvExampleGen's executor with the columnar reader (same inputs, properties and outputs)."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802
        return _ArrowCsvToExample
