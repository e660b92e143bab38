"""Pusher executor that never pushes the same model twice.

TFX's Pusher copies a blessed model to a new timestamped version folder every time it runs. A rerun
on unchanged data re-evaluates the cached model (the baseline is now that same model) and would
push an identical copy, which a model server then "switches" to. This executor records the source
model in each version folder and, when the newest version already holds this model, reports it as
pushed without writing anything.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

SOURCE_FILE = "PUSHED_FROM"


def newest_version(base_directory: str) -> str | None:
    """The highest numbered version folder (what TF Serving and KServe load), or None."""
    if not fileio.isdir(base_directory):  # fileio: local paths and object stores (gs://) alike
        return None
    versions = [v.rstrip("/") for v in fileio.listdir(base_directory) if v.rstrip("/").isdigit()]
    return max(versions, key=int) if versions else None


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
        version = newest_version(base)
        source = os.path.join(base, version, SOURCE_FILE) if version else None
        if self.CheckBlessing(input_dict) and source and fileio.exists(source):
            if io_utils.read_string_file(source).strip() == model.uri:
                model_push = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY]
                )
                logging.info(
                    "Model %s already serves as version %s: nothing to push.", model.uri, version
                )
                self._MarkPushed(
                    model_push,
                    pushed_destination=os.path.join(base, version),
                    pushed_version=version,
                )
                return
        super().Do(input_dict, output_dict, exec_properties)
        version = newest_version(base)
        if version:
            io_utils.write_string_file(os.path.join(base, version, SOURCE_FILE), model.uri)


class IdempotentPusher(pusher_component.Pusher):
    """TFX's Pusher with the executor above (same inputs, outputs and push_destination)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(IdempotentPusherExecutor)
