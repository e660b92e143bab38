"""Pusher executor that never pushes the same model twice.

TFX's Pusher copies a blessed model to a new timestamped version folder every time it runs. A rerun
on unchanged data re-evaluates the cached model (the baseline is now that same model) and would
push an identical copy, which a model server then "switches" to. This executor records the source
model in each version folder and, when the newest version already holds this model, reports it as
pushed without writing anything.

After a real push (blessed, a new version folder written) it also writes the KServe
InferenceServices for that version when custom_config carries {"kserve": {"render": ...,
"manifest_dir": ..., "config": ...}} (pipelines/kserve_push.py builds it): the custom predictor
pinned to the new version, and a canary against the version that was newest before the push.
"render" is the renderer's dotted path, as TFX names run_fn (so this step depends on no layer
above it), "config" the PipelineConfig as JSON, which the renderer validates again. A model that
is not blessed, or one already serving, leaves the manifests as they are.

With a `statistics` input (StatisticsGen's output for the examples the model was trained on) it
also copies the train split's statistics into the version folder as
`assets.extra/training_statistics.pb`, beside the serving contract: the drift monitor compares
served traffic with them (skew), wherever the version is served from, without ML Metadata.
TF Serving ignores assets.extra.

Data versions: each version folder gets `PUSH_RECORD.json`, the span its model was trained on
(`training_span` below) and, for a rollback, the version and span it went back from. A blessed
model trained on an older span than the newest version's is not pushed (the PushedModel artifact
says why, in `not_pushed_reason`): it would make older data's model the served one without
anyone asking. Only an explicit rollback pushes it: custom_config
{"rollback_to_span": N} (pusher.rollback_to_span, `shop-pipeline rollback --to-span N`) lets a model
trained on span N through, and the record and the artifact (`rolled_back_from_span`) keep it. A
newest version without a record (pushed before records existed) sets no order; the idempotent
path writes the record of the version it finds serving.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils, json_utils, proto_utils

from contract import layout

SOURCE_FILE = layout.PUSHED_FROM  # the names inside a version folder: contract/layout.py
# Custom properties TFX's Pusher sets on the PushedModel artifact (tfx.components.pusher.executor).
PUSHED_KEY, PUSHED_VERSION_KEY = "pushed", "pushed_version"
STATISTICS_KEY = "statistics"
TRAINING_STATISTICS = layout.TRAINING_STATISTICS  # assets.extra/training_statistics.pb
TRAIN_SPLIT = "train"
STATS_FILE = "FeatureStats.pb"  # the name StatisticsGen writes
# inside each version folder: {"span": ..., "rolled_back_from": ...}
PUSH_RECORD = layout.PUSH_RECORD
ROLLBACK_TO_SPAN_KEY = "rollback_to_span"  # custom_config: the span of an explicit rollback
TRAINING_SPAN_KEY = "training_span"  # custom_config: the span the run trains on, when known
# Custom properties this executor adds to the PushedModel artifact (pipelines/summary.py reads them).
TRAINED_ON_SPAN_KEY = "trained_on_span"
SERVING_SPAN_KEY = "serving_span"  # the span of the newest version before this push
SERVING_VERSION_KEY = "serving_version"
ROLLED_BACK_FROM_SPAN_KEY = "rolled_back_from_span"
NOT_PUSHED_REASON_KEY = "not_pushed_reason"


def newest_version(base_directory: str) -> str | None:
    """The highest numbered version folder (what TF Serving and KServe load), or None."""
    if not fileio.isdir(base_directory):  # fileio: local paths and object stores (gs://) alike
        return None
    return layout.newest(fileio.listdir(base_directory))


def read_push_record(version_dir: str) -> dict[str, Any] | None:
    """A version folder's PUSH_RECORD.json, or None (pushed before records existed)."""
    path = os.path.join(version_dir, PUSH_RECORD)
    if not fileio.exists(path):
        return None
    return json.loads(io_utils.read_string_file(path))


def write_push_record(version_dir: str, span: int | None, rolled_back_from: dict | None) -> None:
    record = {"span": span, "rolled_back_from": rolled_back_from}
    _write_file(os.path.join(version_dir, PUSH_RECORD), json.dumps(record, sort_keys=True))


def training_span(
    input_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]
) -> int | None:
    """The span of the examples the model was trained on, or None when unknown.

    The local pipeline knows it when it is built (custom_config["training_span"]): LocalDagRunner
    hands executors their input artifacts without ExampleGen's span (StatisticsGen then records
    span 0). On Kubeflow the span is resolved inside the ExampleGen step and travels in the
    artifacts' metadata: StatisticsGen copies it onto the statistics (the `statistics` input)."""
    configured = _custom_config(exec_properties).get(TRAINING_SPAN_KEY)
    if configured is not None:
        return int(configured)
    statistics = input_dict.get(STATISTICS_KEY)
    if statistics and statistics[0].has_property("span") and int(statistics[0].span) > 0:
        return int(statistics[0].span)  # span 0: not set (data spans start at 1)
    return None


class IdempotentPusherExecutor(pusher_executor.Executor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        base = destination.filesystem.base_directory
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        previous = newest_version(base)
        span = training_span(input_dict, exec_properties)
        record = read_push_record(os.path.join(base, previous)) if previous else None
        serving_span = record.get("span") if record else None
        if span is not None:
            model_push.set_int_custom_property(TRAINED_ON_SPAN_KEY, span)
        if serving_span is not None:
            model_push.set_int_custom_property(SERVING_SPAN_KEY, serving_span)
            model_push.set_string_custom_property(SERVING_VERSION_KEY, previous)
        source = os.path.join(base, previous, SOURCE_FILE) if previous else None
        if self.CheckBlessing(input_dict) and source and fileio.exists(source):
            if io_utils.read_string_file(source).strip() == model.uri:
                logging.info(
                    "Model %s already serves as version %s: nothing to push.", model.uri, previous
                )
                statistics = input_dict.get(STATISTICS_KEY)
                serving = os.path.join(base, previous)
                if statistics and not fileio.exists(os.path.join(serving, TRAINING_STATISTICS)):
                    # a version pushed before the statistics travelled with the model
                    copy_training_statistics(statistics[0], serving)
                if record is None and span is not None:  # pushed before records existed
                    write_push_record(serving, span, None)
                self._MarkPushed(
                    model_push,
                    pushed_destination=os.path.join(base, previous),
                    pushed_version=previous,
                )
                return
        older = span is not None and serving_span is not None and span < serving_span
        rollback_to = _custom_config(exec_properties).get(ROLLBACK_TO_SPAN_KEY)
        if older and rollback_to != span:
            if self.CheckBlessing(input_dict):  # a blessed model: say why it stays unpushed
                reason = (
                    f"trained on span {span}, older than span {serving_span} of the serving "
                    f"version {previous}; to serve it anyway: "
                    f"shop-pipeline rollback --to-span {span}"
                )
                logging.warning("Not pushing %s: %s", model.uri, reason)
                model_push.set_string_custom_property(NOT_PUSHED_REASON_KEY, reason)
            self._MarkNotPushed(model_push)
            return
        super().Do(input_dict, output_dict, exec_properties)
        if not model_push.get_int_custom_property(PUSHED_KEY):
            return  # not blessed: no version folder, no provenance, no manifest
        version = model_push.get_string_custom_property(PUSHED_VERSION_KEY)
        statistics = input_dict.get(STATISTICS_KEY)
        if statistics:
            copy_training_statistics(statistics[0], os.path.join(base, version))
        rolled_back_from = {"version": previous, "span": serving_span} if older else None
        if older:
            logging.warning(
                "Rolled back: version %s (span %s) replaces version %s (span %s) as the newest",
                version,
                span,
                previous,
                serving_span,
            )
            model_push.set_int_custom_property(ROLLED_BACK_FROM_SPAN_KEY, serving_span)
        write_push_record(os.path.join(base, version), span, rolled_back_from)
        io_utils.write_string_file(os.path.join(base, version, SOURCE_FILE), model.uri)
        kserve = _custom_config(exec_properties).get(KSERVE_KEY)
        if kserve:
            paths = write_kserve_manifests(
                kserve, version, previous if previous != version else None
            )
            logging.info("KServe InferenceServices for version %s: %s", version, paths)


def copy_training_statistics(statistics: types.Artifact, version_dir: str) -> str:
    """The train split's statistics into the pushed version (what the model learned from)."""
    source = os.path.join(artifact_utils.get_split_uri([statistics], TRAIN_SPLIT), STATS_FILE)
    target = os.path.join(version_dir, TRAINING_STATISTICS)
    fileio.makedirs(os.path.dirname(target))
    fileio.copy(source, target, overwrite=True)
    return target


def _custom_config(exec_properties: dict[str, Any]) -> dict[str, Any]:
    value = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if isinstance(value, str):  # the component stores it as JSON
        value = json_utils.loads(value)
    return value or {}


def _write_file(path: str, text: str) -> None:
    """Write-then-rename with fileio (local paths and object stores; contract/layout.py):
    kubectl, a watcher or the next push never reads half a manifest or record."""
    layout.write_with(
        path,
        text,
        open_file=fileio.open,
        rename=functools.partial(fileio.rename, overwrite=True),
        makedirs=fileio.makedirs,
        remove=fileio.remove,
    )


# custom_config[KSERVE_KEY] (pipelines/kserve_push.py): the renderer's import path
# ("module.function"), the folder to write into and the PipelineConfig (model_dump(mode="json")).
KSERVE_KEY = "kserve"
KSERVE_RENDER_KEY, KSERVE_MANIFEST_DIR_KEY, KSERVE_CONFIG_KEY = "render", "manifest_dir", "config"


def write_kserve_manifests(kserve: dict[str, Any], version: str, previous: str | None) -> list[str]:
    """The InferenceServices for a pushed version into kserve["manifest_dir"], by the renderer
    kserve["render"] names: the custom predictor pinned to it, canaryTrafficPercent when an older
    version served before. A custom_config compiled before the renderer was named by path
    (kserve["settings"]) writes none: recompile the pipeline."""
    if KSERVE_RENDER_KEY not in kserve:
        logging.warning(
            "custom_config's %r entry names no renderer (compiled by an older version): no "
            "InferenceServices written for version %s; recompile the pipeline",
            KSERVE_KEY,
            version,
        )
        return []
    module, _, function = kserve[KSERVE_RENDER_KEY].rpartition(".")
    # importlib, not TFX's import_func_from_module: that one reloads an imported module
    render = getattr(importlib.import_module(module), function)
    return render(
        kserve[KSERVE_MANIFEST_DIR_KEY],
        kserve[KSERVE_CONFIG_KEY],
        model_version=int(version),
        previous_version=int(previous) if previous else None,
        write=_write_file,
    )


class PusherWithStatisticsSpec(standard_component_specs.PusherSpec):
    """TFX's PusherSpec plus the training statistics that travel with the model."""

    INPUTS = {
        **standard_component_specs.PusherSpec.INPUTS,
        STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
    }


class IdempotentPusher(pusher_component.Pusher):
    """TFX's Pusher with the executor above: same inputs, outputs and push_destination, plus the
    optional `statistics` of the training examples."""

    SPEC_CLASS = PusherWithStatisticsSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(IdempotentPusherExecutor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        push_destination: pusher_pb2.PushDestination,
        custom_config: dict[str, Any] | None = None,
        statistics: types.BaseChannel | None = None,
    ):
        # Pusher.__init__ builds a plain PusherSpec; build ours and start from BaseComponent.
        spec = PusherWithStatisticsSpec(
            model=model,
            model_blessing=model_blessing,
            infra_blessing=None,
            push_destination=push_destination,
            custom_config=json_utils.dumps(custom_config),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            **({STATISTICS_KEY: statistics} if statistics is not None else {}),
        )
        base_component.BaseComponent.__init__(self, spec=spec)
