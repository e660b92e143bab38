"""ImportSchemaGen that can read the curated schema from the installed package.

On Kubeflow every step runs in the image, where the repo checkout path of schema.pbtxt does not
exist. `package://contract/schema.pbtxt` names the file inside the installed package, so
the schema a run uses is the one shipped with the image's code (and a new image tag, which KFP
puts in its cache key, never reuses an old schema).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from tfx.components.schema_gen.import_schema_gen import executor as import_schema_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs
from tfx.v1.components import ImportSchemaGen

PACKAGE_SCHEME = "package://"


def resolve_schema_file(path: str) -> str:
    """`package://pkg/rel/path` -> the file's path in the installed package; other paths as is."""
    if not path.startswith(PACKAGE_SCHEME):
        return path
    package, _, relative = path[len(PACKAGE_SCHEME) :].partition("/")
    located = resources.files(package).joinpath(relative)
    if not located.is_file():
        raise FileNotFoundError(f"schema_file {path}: {relative} is not in package {package}")
    return str(located)


class PackagedSchemaExecutor(import_schema_executor.Executor):
    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        key = standard_component_specs.SCHEMA_FILE_KEY
        exec_properties = {**exec_properties, key: resolve_schema_file(exec_properties[key])}
        super().Do(input_dict, output_dict, exec_properties)


class PackagedImportSchemaGen(ImportSchemaGen):
    """ImportSchemaGen whose schema_file may be a package:// reference."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(PackagedSchemaExecutor)
