"""The command every Kubeflow Pipelines step runs: TFX's KFP v2 executor entrypoint, made to read
what the real KFP v2 backend hands it.

`python -m components.kfp_entrypoint --executor_class_path ... --json_serialized_invocation_args
{{$}} --json_serialized_inputs_spec_args ...` takes TFX's own arguments. It mends the ExecutorInput
in the ways below, then calls TFX's `kubeflow_v2_run_executor` unchanged (no import hooks, no patched
TFX files):

1. Input artifacts arrive with an empty type: KFP's driver builds them from ML Metadata with
   `instanceSchema: ""` (backend/src/v2/metadata/client.go), and TFX's
   `_retrieve_class_path` fails on `yaml.safe_load("")` (None). The type is filled from the
   component's inputs spec, which TFX's compiler wrote into the step's own arguments.
   Input metadata came through ML Metadata, which wraps lists and structs ({"list": [...]}):
   they are unwrapped.
2. With PUBLISH_LOGS (the driver's default) every task gets an extra `executor-logs` output typed
   `system.Artifact`, which TFX tries to import as a Python class. Outputs the component does not
   declare are left out of what TFX parses (the launcher uploads the logs itself).
3. Object-store URIs: s3:// needs tensorflow-io's filesystem registered before TFX touches a URI
   (TensorFlow 2.16 has no S3 filesystem of its own). gs:// is built in, but the zero-byte
   "directory marker" objects (`dir/`) TensorFlow's GCS filesystem writes make the launcher's
   download of the next step's inputs fail (kubeflow/pipelines#13476): they are removed from
   the step's outputs once the executor is done.
4. A clean exit: once the executor output file is written the process leaves with os._exit, so
   the AWS SDK's C++ destructors (tensorflow-io) cannot abort it ("pure virtual method called",
   exit 134) after a successful step.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

from components.filesystems import exit_process, register_filesystems
from components.runtime import prepare_tensorflow_process

# The logs output the KFP driver adds (backend/src/v2/driver provisionOutputs, 2.5+), typed
# system.Artifact: `executor-logs`, and from 2.17 `executor-logs-<retry index>`.
EXECUTOR_LOGS_KEY = re.compile(r"executor-logs(-\d+)?")

_log = logging.getLogger("shop.kfp_entrypoint")


def artifact_uris(
    executor_input: dict[str, Any], sides: tuple[str, ...] = ("inputs", "outputs")
) -> Iterator[str]:
    """Every artifact URI of an ExecutorInput's inputs and/or outputs."""
    for side in sides:
        for entry in executor_input.get(side, {}).get("artifacts", {}).values():
            for artifact in entry.get("artifacts", []):
                if artifact.get("uri"):
                    yield artifact["uri"]


def _has_type(artifact_type: dict[str, Any]) -> bool:
    return bool(artifact_type.get("schemaTitle") or artifact_type.get("instanceSchema"))


def fill_input_types(
    executor_input: dict[str, Any], inputs_spec: dict[str, Any] | None
) -> list[str]:
    """Gives each input artifact without a type the one its component declares; returns the
    keys filled. An input with no declaration and no type is an error naming it."""
    declared = (inputs_spec or {}).get("artifacts", {})
    filled = []
    for key, entry in executor_input.get("inputs", {}).get("artifacts", {}).items():
        for artifact in entry.get("artifacts", []):
            if _has_type(artifact.get("type") or {}):
                continue
            artifact_type = declared.get(key, {}).get("artifactType")
            if not artifact_type or not _has_type(artifact_type):
                raise ValueError(
                    f"input artifact {key!r} arrived without a type and the component's inputs "
                    "spec (--json_serialized_inputs_spec_args) declares none"
                )
            artifact["type"] = dict(artifact_type)
            filled.append(key)
    return filled


def unwrap_metadata(executor_input: dict[str, Any]) -> list[str]:
    """Undoes what ML Metadata did to the input artifacts' metadata: KFP stores a list as the
    struct {"list": [...]} and a struct as {"struct": {...}} and hands them back wrapped
    (metadata/converter.go); returns "<input>.<key>" of each value unwrapped. Bools come back as
    1/0, which TFX reads as it writes them (ints), so they stay."""
    unwrapped = []
    for name, entry in executor_input.get("inputs", {}).get("artifacts", {}).items():
        for artifact in entry.get("artifacts", []):
            metadata = artifact.get("metadata") or {}
            for key, value in metadata.items():
                if isinstance(value, dict) and len(value) == 1:
                    ((kind, inner),) = value.items()
                    if (kind, type(inner)) in (("list", list), ("struct", dict)):
                        metadata[key] = inner
                        unwrapped.append(f"{name}.{key}")
    return unwrapped


def drop_undeclared_outputs(executor_input: dict[str, Any]) -> list[str]:
    """Leaves KFP's own `executor-logs` output out of what TFX parses; returns the keys dropped.

    Only that output is dropped: any other output whose type TFX cannot import is a real error.
    """
    outputs = executor_input.get("outputs", {}).get("artifacts", {})
    dropped = []
    for key in list(outputs):
        types = {
            (a.get("type") or {}).get("schemaTitle") for a in outputs[key].get("artifacts", [])
        }
        if EXECUTOR_LOGS_KEY.fullmatch(key) and types <= {"system.Artifact", None}:
            del outputs[key]
            dropped.append(key)
    return dropped


def remove_gcs_directory_markers(uris: Iterable[str], client: Any = None) -> list[str]:
    """Deletes the zero-byte `.../name/` objects under each gs:// URI; returns their gs:// URIs.

    TensorFlow's GCS filesystem writes such a marker for every folder it creates. The KFP
    launcher downloads each input artifact of the next step object by object and turns a marker
    into a file where a folder belongs, so that step fails with "mkdir ...: not a directory"
    (kubeflow/pipelines#13476, open). Removing the markers from a step's outputs keeps every
    real object; GCS has no folders to lose. `client` is a google.cloud.storage.Client."""
    removed = []
    for uri in uris:
        if not uri.startswith("gs://"):
            continue
        if client is None:
            from google.cloud import storage

            client = storage.Client()
        bucket, _, prefix = uri[len("gs://") :].partition("/")
        for blob in client.list_blobs(bucket, prefix=prefix.rstrip("/")):
            if blob.name.endswith("/") and not blob.size:
                blob.delete()
                removed.append(f"gs://{bucket}/{blob.name}")
    return removed


def adapt(executor_input: dict[str, Any], inputs_spec: dict[str, Any] | None) -> dict[str, Any]:
    """The ExecutorInput as TFX's entrypoint can read it (a copy; the argument is not changed)."""
    adapted = json.loads(json.dumps(executor_input))
    filled = fill_input_types(adapted, inputs_spec)
    unwrapped = unwrap_metadata(adapted)
    dropped = drop_undeclared_outputs(adapted)
    _log.info(
        "input types filled from the inputs spec: %s; metadata unwrapped: %s; outputs left out: %s",
        filled, unwrapped, dropped,
    )  # fmt: skip
    return adapted


def main(argv: list[str] | None = None) -> int:
    """Runs the step and returns 0; a failure raises (`python -m` turns both into the exit code,
    with components.filesystems.exit_process)."""
    prepare_tensorflow_process()  # the image sets TF_USE_LEGACY_KERAS too; this quiets the import
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    logging.basicConfig(level=logging.INFO)
    args, beam_args = kubeflow_v2_run_executor._parse_flags(list(argv or sys.argv[1:]))
    executor_input = json.loads(args.json_serialized_invocation_args)
    inputs_spec = (
        json.loads(args.json_serialized_inputs_spec_args)
        if args.json_serialized_inputs_spec_args
        else None
    )
    adapted = adapt(executor_input, inputs_spec)
    parameters = adapted.get("inputs", {}).get("parameterValues", {}).values()
    # artifact URIs and parameters such as ExampleGen's input_base (data.root)
    registered = register_filesystems([*artifact_uris(adapted), *map(str, parameters)])
    if registered:
        _log.info("object-store filesystems registered: %s", registered)
    args.json_serialized_invocation_args = json.dumps(adapted)
    kubeflow_v2_run_executor.main((args, beam_args))
    removed = remove_gcs_directory_markers(artifact_uris(adapted, ("outputs",)))
    if removed:
        _log.info("gs:// directory markers removed from the outputs: %s", removed)
    output_file = adapted.get("outputs", {}).get("outputFile")
    if output_file:
        _log.info("executor output written to %s", output_file)
    return 0


if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    exit_process(status)  # os._exit once tensorflow-io is loaded: see components/filesystems.py
