"""CsvExampleGen for Kubeflow Pipelines v2: the span is resolved inside the step, not by a driver.

TFX's FileBasedExampleGen relies on a driver that resolves `{SPAN}` in the input pattern before the
executor runs. The KubeflowV2 compiler emits that driver as a `lifecycle.preCacheCheck` hook, which
only Vertex AI Pipelines executes: open-source KFP v2 ignores it and the executor then globs the
literal `span-{SPAN}/*.csv` and fails. This component runs the same resolution code (TFX's
FileBasedInputProcessor) at the start of the executor, with the span as a run-time parameter
(0 = the newest span under input_base, minus `span_offset` for the previous-span baseline), and
records span, version and fingerprint on the output artifact as the driver would.

Trade-off (docs/kubeflow.md): without the pre-cache-check hook, KFP cannot skip this step when the span
is unchanged, so the compiler turns caching off for it (a cached result could be a stale span).
"""

from __future__ import annotations

from typing import Any

from absl import logging
from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import input_processor, utils
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

from components import arrow_csv
from components.span_folders import span_entries, span_problem

SPAN_KEY = "span"
SPAN_OFFSET_KEY = "span_offset"


class SpanError(ValueError):
    """The requested span does not exist under the input base; the message names both."""


def resolve_span(input_base: str, input_config_json: str, span: int, span_offset: int) -> dict:
    """Returns span, version, fingerprint and the input config with its patterns filled in."""
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(input_config_json, input_config)
    patterns = [split.pattern for split in input_config.splits]
    checked = None
    if span <= 0:  # the newest span folder under input_base, complete or not
        newest = max(
            (s for pattern in patterns for s in span_entries(input_base, pattern)), default=None
        )
        if newest is None:
            raise SpanError(f"no span matching {patterns} under {input_base}")
        _refuse_incomplete(input_base, patterns, newest, "the newest span folder")
        span = checked = newest
    target = span - span_offset
    if target < 0:
        raise SpanError(f"span {span} minus offset {span_offset} is below 0 under {input_base}")
    if target != checked:
        _refuse_incomplete(input_base, patterns, target, f"span {target}")
    range_config = range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(start_span_number=target, end_span_number=target)
    )
    processor = input_processor.FileBasedInputProcessor(
        input_base, input_config.splits, range_config
    )
    try:
        resolved_span, version = processor.resolve_span_and_version()
    except ValueError as err:
        patterns = [split.pattern for split in input_config.splits]
        raise SpanError(f"span {target} not found under {input_base} ({patterns}): {err}") from err
    fingerprint = processor.get_input_fingerprint(resolved_span, version)
    for split in input_config.splits:
        split.pattern = processor.get_pattern_for_span_version(
            split.pattern, resolved_span, version
        )
    return {
        utils.SPAN_PROPERTY_NAME: resolved_span,
        utils.VERSION_PROPERTY_NAME: version,
        utils.FINGERPRINT_PROPERTY_NAME: fingerprint,
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
    }


def _refuse_incomplete(input_base: str, patterns: list[str], span: int, what: str) -> None:
    """An empty or partial span folder is an error naming it (components/span_folders.py), not
    a reason to read the span before it: that older model could be pushed over a newer one."""
    for pattern in patterns:
        problem = span_problem(input_base, pattern, span)
        if problem:
            folder = "/".join([input_base.rstrip("/"), pattern.split("/")[0]])
            raise SpanError(
                f"{what} {folder.replace('{SPAN}', str(span))} {problem}: the step stops rather "
                "than read an older span. Finish writing it or remove it. Training on an older span "
                "is the run parameter `span`; serving its model over a newer one takes a package "
                "compiled with --set pusher.rollback_to_span=N (docs/data-versions.md)"
            )


class _ResolvesSpan:
    """Does the driver's work before the CSV executor runs: span, patterns, artifact properties."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        exec_properties = dict(exec_properties)
        span = int(exec_properties.pop(SPAN_KEY, 0) or 0)
        offset = int(exec_properties.pop(SPAN_OFFSET_KEY, 0) or 0)
        resolved = resolve_span(
            exec_properties[standard_component_specs.INPUT_BASE_KEY],
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
            span,
            offset,
        )
        exec_properties.update(resolved)
        logging.info(
            "Resolved span %s (requested %s, offset %s), fingerprint %s",
            resolved[utils.SPAN_PROPERTY_NAME],
            span,
            offset,
            resolved[utils.FINGERPRINT_PROPERTY_NAME],
        )
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY]
        )
        example_gen_driver.update_output_artifact(exec_properties, examples.mlmd_artifact)
        # TFX's driver code records span and version as custom properties only; the Examples'
        # own `span` property is what StatisticsGen copies onto the statistics, and so what the
        # Pusher reads on Kubeflow to keep an older span's model from being pushed over a newer
        # one (components/pusher.py). Without it every downstream artifact says span 0.
        examples.span = resolved[utils.SPAN_PROPERTY_NAME]
        if resolved.get(utils.VERSION_PROPERTY_NAME) is not None:
            examples.version = resolved[utils.VERSION_PROPERTY_NAME]
        super().Do(input_dict, output_dict, exec_properties)


class SpanCsvExampleGenExecutor(_ResolvesSpan, csv_executor.Executor):
    """TFX's CSV executor (data.csv_reader: tfx) after the span resolution."""


class SpanArrowCsvExampleGenExecutor(_ResolvesSpan, arrow_csv.Executor):
    """The columnar CSV executor (data.csv_reader: arrow) after the span resolution."""


EXECUTORS = {"arrow": SpanArrowCsvExampleGenExecutor, "tfx": SpanCsvExampleGenExecutor}


class SpanCsvExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        SPAN_KEY: ExecutionParameter(type=int),
        SPAN_OFFSET_KEY: ExecutionParameter(type=int),
    }


class SpanCsvExampleGen(base_beam_component.BaseBeamComponent):
    """Reads span `span - span_offset` of CSV files under input_base into TFRecord Examples.

    Deliberately not a FileBasedExampleGen subclass: the KubeflowV2 compiler would attach the
    Vertex-only driver hook to it.
    """

    SPEC_CLASS = SpanCsvExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(SpanCsvExampleGenExecutor)

    def __init__(
        self,
        input_base: Any,
        input_config: example_gen_pb2.Input,
        output_config: example_gen_pb2.Output,
        span: Any = 0,
        span_offset: int = 0,
        csv_reader: str = "arrow",
    ):
        spec = SpanCsvExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            span=span,
            span_offset=span_offset,
            examples=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(
            spec=spec, custom_executor_spec=executor_spec.BeamExecutorSpec(EXECUTORS[csv_reader])
        )
