"""A TFX executor for the entrypoint tests: writes one file into its `model` output, wherever the
URI points (s3:// through tensorflow-io), and reports the span it was given as metadata."""

from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio


class WriteModelExecutor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        [model] = output_dict["model"]
        fileio.makedirs(model.uri)
        with fileio.open(f"{model.uri}/model.txt", "w") as handle:
            handle.write(f"trained on span {exec_properties.get('span')}")
        examples = input_dict.get("examples", [])
        model.set_string_custom_property(
            "read", ",".join(sorted(e.split_names for e in examples)) if examples else "nothing"
        )
