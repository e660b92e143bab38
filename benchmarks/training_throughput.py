"""Is the input pipeline the training bottleneck? Examples/s from the TFRecord input pipeline
(components.transformed_data.make_dataset: parallel reads and parsing, autotuned prefetch) next to
examples/s on the same batches cached in memory, measured in one run on the same model and steps.

    .venv/bin/python -m benchmarks.training_throughput --rows 100000 --steps 300

A ratio (TFRecord / in memory) near 1 means the accelerator (here: the CPU) is kept fed; aim >= 0.8.
The script generates a span with the simulator and transforms it with the repo's preprocessing_fn
(tf.Transform on Beam, in memory), so it needs nothing but the environment. On a GPU machine the
same command reports GPU figures (the model runs on the GPU tf.distribute picks by default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from components.runtime import prepare_tensorflow_process

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _say(text: str) -> None:
    print(f"[throughput] {text}", flush=True)


def transformed_span(rows: int, seed: int, work: Path) -> tuple[str, str]:
    """Writes one simulated span through preprocessing_fn: (transform_output dir, TFRecord glob)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import metadata_io, schema_utils

    from components.preprocessing import preprocessing_fn
    from contract.schema_tool import load_schema
    from simulator.generate import SimulationOptions, generate_span

    frame = generate_span(SimulationOptions(rows_per_span=rows, seed=seed), 1)[0]
    records = frame.to_dict("records")
    instances = [
        {k: [v.encode() if isinstance(v, str) else v] for k, v in row.items()} for row in records
    ]
    raw = tft.DatasetMetadata.from_feature_spec(
        schema_utils.schema_as_feature_spec(load_schema()).feature_spec
    )
    out = work / "transform"
    with tft_beam.Context(temp_dir=str(work / "tmp"), force_tf_compat_v1=False):
        (data, _), transform_fn = (instances, raw) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=False
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(out))
    metadata_io.write_metadata(raw, str(out / tft.TFTransformOutput.RAW_METADATA_DIR))
    shards = 4  # several files, as Transform writes them, so reads can run in parallel
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = [
        tf.io.TFRecordWriter(str(work / f"examples-{i:05d}.gz"), options) for i in range(shards)
    ]
    for index, row in enumerate(data):
        example = tf.train.Example()
        for name, value in row.items():
            feature = example.features.feature[name]
            if isinstance(value, float):
                feature.float_list.value.append(value)
            else:
                feature.int64_list.value.append(int(value))
        writers[index % shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return str(out), str(work / "examples-*.gz")


def measure(rows: int, steps: int, batch: int, warmup: int, seed: int, rounds: int = 5) -> dict:
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.model import build_model
    from components.preprocessing import categorical_sizes, params_from
    from components.transformed_data import make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        _say(f"generating and transforming {rows:,} rows")
        started = time.perf_counter()
        transform_dir, files = transformed_span(rows, seed, Path(tmp))
        _say(f"data ready in {time.perf_counter() - started:.0f}s")
        output = tft.TFTransformOutput(transform_dir)
        sizes = categorical_sizes(output, params_from(None))
        streamed = make_dataset(files, output, batch, repeat=True, seed=seed)
        parsed_once = make_dataset(files, output, batch, repeat=True, seed=seed, cache=True)
        cached = streamed.take(min(steps, max(1, rows // batch))).cache().repeat()
        for _ in cached.take(min(steps, max(1, rows // batch))):
            pass  # fill the cache before timing
        inputs = (("tfrecord", streamed), ("tfrecord_cached", parsed_once), ("in_memory", cached))
        models = {}
        for name, dataset in inputs:
            tf.keras.utils.set_random_seed(seed)
            models[name] = build_model(
                sizes,
                embedding_dim=8,
                hidden_units=(64, 32),
                cross_layers=2,
                dropout=0.3,
                l2=1e-3,
                learning_rate=0.003,
            )
            # Warm-up: traces the step and, for tfrecord_cached, fills its cache (one pass).
            fill = max(1, rows // batch) if name == "tfrecord_cached" else 0
            models[name].fit(dataset, steps_per_epoch=warmup + fill, epochs=1, verbose=0)
        # Interleaved rounds, median per input: this machine's speed drifts over minutes, and
        # measuring one input after the other would fold that drift into the ratio.
        rates: dict[str, list[float]] = {name: [] for name, _ in inputs}
        per_round = max(1, steps // rounds)
        for round_index in range(rounds):
            for name, dataset in inputs:
                started = time.perf_counter()
                models[name].fit(dataset, steps_per_epoch=per_round, epochs=1, verbose=0)
                rates[name].append(per_round * batch / (time.perf_counter() - started))
            _say(
                f"round {round_index + 1}/{rounds}: "
                + ", ".join(f"{n} {r[-1]:,.0f}" for n, r in rates.items())
                + " examples/s"
            )
        figures = {name: statistics.median(values) for name, values in rates.items()}
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    return {
        "rows": rows,
        "steps": steps,
        "rounds": rounds,
        "batch": batch,
        "devices": sorted(set(devices)),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "cpu_count": os.cpu_count(),
        "examples_per_s": {k: round(v, 1) for k, v in figures.items()},
        "ratio_tfrecord_to_memory": round(figures["tfrecord"] / figures["in_memory"], 3),
        "ratio_tfrecord_cached_to_memory": round(
            figures["tfrecord_cached"] / figures["in_memory"], 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    prepare_tensorflow_process()  # environment, warning filters, tf_keras out of AutoGraph
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per input")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    result = measure(args.rows, args.steps, args.batch, args.warmup, args.seed, args.rounds)
    figures = result["examples_per_s"]
    print(
        f"\ninput pipeline ({result['devices']}, {result['cpu_count']} cores), examples/s:\n"
        f"  TFRecords streamed  {figures['tfrecord']:>10,.0f}  ratio "
        f"{result['ratio_tfrecord_to_memory']:.2f}\n"
        f"  TFRecords, cached   {figures['tfrecord_cached']:>10,.0f}  ratio "
        f"{result['ratio_tfrecord_cached_to_memory']:.2f}  (distribution.cache_examples=true)\n"
        f"  in memory           {figures['in_memory']:>10,.0f}  (the ceiling)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
