"""The columnar CSV reader (data.csv_reader: arrow) writes the same tf.Examples as TFX's
CsvExampleGen executor, bad rows included, and names the file it cannot read."""

import glob

import apache_beam as beam
import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv

from components import arrow_csv
from simulator.generate import SimulationOptions, write_dataset


def _examples(transform, input_base, pattern, out_dir) -> dict[bytes, tf.train.Example]:
    with beam.Pipeline() as pipeline:
        _ = (
            pipeline
            | transform({"input_base": str(input_base)}, pattern)
            | beam.Map(
                lambda r: r if isinstance(r, bytes) else r.SerializeToString(deterministic=True)
            )
            | beam.io.WriteToTFRecord(str(out_dir / "examples"))
        )
    records = tf.data.TFRecordDataset(glob.glob(str(out_dir / "examples*")))
    return {
        tf.train.Example.FromString(r.numpy())
        .features.feature["impression_id"]
        .bytes_list.value[0]: r.numpy()
        for r in records
    }


def test_same_examples_as_tfx_on_a_span_with_bad_rows(tmp_path):
    write_dataset(
        SimulationOptions(rows_per_span=600, spans=1, seed=5, corrupt_fraction=0.02),
        tmp_path / "data",
    )
    ours = _examples(
        arrow_csv._ArrowCsvToExample, tmp_path / "data", "span-1/*.csv", tmp_path / "a"
    )
    theirs = _examples(tfx_csv._CsvToExample, tmp_path / "data", "span-1/*.csv", tmp_path / "t")
    assert len(ours) == 600 and ours.keys() == theirs.keys()
    # Byte for byte: the split hashes these bytes, so every row lands where TFX's reader puts it.
    assert all(ours[key] == theirs[key] for key in theirs)
    ours = {k: tf.train.Example.FromString(v) for k, v in ours.items()}
    theirs = {k: tf.train.Example.FromString(v) for k, v in theirs.items()}
    # "twelve" in one price cell makes the whole column bytes, in both readers.
    kinds = {e.features.feature["price"].WhichOneof("kind") for e in ours.values()}
    assert kinds == {"bytes_list"}

    def blank_devices(examples):
        return sorted(
            k
            for k, e in examples.items()
            if not e.features.feature["device"].HasField("bytes_list")
            or not e.features.feature["device"].bytes_list.value
        )

    assert blank_devices(ours) == blank_devices(theirs)


def test_types_widen_across_files_and_quoted_newlines_stay_in_one_cell(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text('impression_id,n,note\ns1,1,"two\nlines"\ns2,,x\n')
    (tmp_path / "in" / "b.csv").write_text("impression_id,n,note\ns3,2.5,y\n")
    ours = _examples(arrow_csv._ArrowCsvToExample, tmp_path, "in/*.csv", tmp_path / "a")
    theirs = _examples(tfx_csv._CsvToExample, tmp_path, "in/*.csv", tmp_path / "t")
    assert ours == theirs
    ours = {k: tf.train.Example.FromString(v) for k, v in ours.items()}
    assert list(ours[b"s1"].features.feature["n"].float_list.value) == [1.0]  # int + float: float
    assert list(ours[b"s2"].features.feature["n"].float_list.value) == []  # blank: empty list
    assert ours[b"s1"].features.feature["note"].bytes_list.value == [b"two\nlines"]


def test_a_file_with_other_columns_is_named(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("impression_id,n\ns1,1\n")
    (tmp_path / "in" / "b.csv").write_text("impression_id,m\ns2,1\n")
    with pytest.raises(Exception, match=r"b\.csv: header \['impression_id', 'm'\] differs"):
        _examples(arrow_csv._ArrowCsvToExample, tmp_path, "in/*.csv", tmp_path / "a")
