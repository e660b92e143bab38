"""Kubeflow runner: compile create_pipeline(config, target="kubeflow") to a KFP v2 YAML package.

Thin on purpose: TFX's KubeflowV2DagRunner compiles; this adds what the open-source KFP backend
needs and TFX does not write (the pipeline root, caching off for span readers, an optional PVC
mount) and refuses to write a spec that backend would not run.
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.orchestration import data_types

from pipelines import kfp_spec
from pipelines.config import PipelineConfig
from pipelines.pipeline import create_pipeline

# The image's entrypoint is not relied on: every step names its command in the spec.
EXECUTOR_COMMAND = [
    "python",
    "-m",
    "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
]


def compile_spec(config: PipelineConfig) -> tuple[kfp_spec.PipelineSpec, dict | None]:
    """Returns the PipelineSpec (and the PVC platform document when configured)."""
    pipeline = create_pipeline(config, target="kubeflow")
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            display_name=config.name,
            default_image=config.kubeflow.image,
            default_commands=EXECUTOR_COMMAND,
            use_pipeline_spec_2_1=True,
        ),
    )
    spec = runner.run(pipeline, write_out=False)["pipelineSpec"]
    # Open-source KFP reads the root from the spec; without it artifacts would go to the
    # cluster default (minio://), which TFX's file I/O cannot write.
    spec["defaultPipelineRoot"] = config.pipeline_root
    # TFX keeps RuntimeParameter defaults in the PipelineJob wrapper, which the bare spec drops:
    # put them where the KFP UI's run form and a run without arguments find them.
    root_parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, default in _runtime_parameter_defaults(pipeline).items():
        root_parameters[name]["defaultValue"] = default
    # A span reader must look at the data every run: its inputs (data_root, span=0 "newest") do
    # not change when a new span lands, so a KFP cache hit would silently reuse an old span.
    for name in kfp_spec.EXTERNAL_INPUT_TASKS:
        task = spec["root"]["dag"]["tasks"].get(name)
        if task is not None:
            task["cachingOptions"] = {}
    kfp_spec.check_runs_on_open_source_kfp(spec)
    platform = None
    if config.kubeflow.pvc_name:
        platform = kfp_spec.pvc_platform_spec(
            spec, config.kubeflow.pvc_name, config.kubeflow.pvc_mount_path
        )
    return spec, platform


def _runtime_parameter_defaults(pipeline) -> dict:
    defaults = {}
    for component in pipeline.components:
        for value in component.exec_properties.values():
            if isinstance(value, data_types.RuntimeParameter):
                defaults[value.name] = value.default
    return defaults


def compile_package(config: PipelineConfig, output_path: str | None = None) -> str:
    """Writes the package (YAML) and returns its path."""
    path = output_path or config.kubeflow.package_path
    spec, platform = compile_spec(config)
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    header = (
        f"# PIPELINE DEFINITION (KFP v2, compiled by `shop-pipeline compile` from TFX "
        f"{spec['sdkVersion']})\n# Name: {spec['pipelineInfo']['name']}\n"
        f"# Image: {config.kubeflow.image}\n"
        f"# Run parameters: {', '.join(sorted(parameters))}\n"
    )
    kfp_spec.write_package(path, spec, platform, header)
    return path
