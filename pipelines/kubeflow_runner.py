"""Kubeflow runner: compile create_pipeline(config, KubeflowPlatform(config)) to a KFP v2 YAML package.

Thin on purpose: TFX's KubeflowV2DagRunner compiles; this adds what the open-source KFP backend
needs and TFX does not write (the pipeline root, caching off for span readers, an optional PVC
mount) and refuses to write a spec that backend would not run.
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.orchestration import data_types

from pipelines import kfp_spec
from pipelines.pipeline import create_pipeline
from pipelines.platforms import KubeflowPlatform
from settings import PipelineConfig

# The image's entrypoint is not relied on: every step names its command in the spec. It is our
# wrapper of TFX's KFP v2 entrypoint (components/kfp_entrypoint.py: what the real backend hands
# an executor, mended, then TFX unchanged), with TFX's own arguments.
EXECUTOR_COMMAND = ["python", "-m", "components.kfp_entrypoint"]
# TFX's stock entrypoint, which fails on a real KFP v2 backend (tests run it to show how).
TFX_EXECUTOR_MODULE = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def compile_spec(config: PipelineConfig) -> tuple[kfp_spec.PipelineSpec, dict | None]:
    """Returns the PipelineSpec and its kfp-kubernetes platform document (PVC mount, the object
    store's Secret as env), or None when neither is configured."""
    # The KFP backend ignores the spec's defaultPipelineRoot (kfp_spec.check_pipeline_root):
    # `submit` sends this root with every run. It stays in the spec for the KFP UI and other
    # runners, and a root KFP would refuse fails here, before anything is built or uploaded.
    root = kfp_spec.check_pipeline_root(config.pipeline_root)
    pipeline = create_pipeline(config, KubeflowPlatform(config))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            display_name=config.name,
            default_image=config.kubeflow.image,
            default_commands=EXECUTOR_COMMAND,
            use_pipeline_spec_2_1=True,
        ),
    )
    spec = runner.run(pipeline, write_out=False)["pipelineSpec"]
    spec["defaultPipelineRoot"] = root
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
    store = config.object_store
    secret_env = None
    if config.uses_s3():
        kfp_spec.set_executor_env(spec, store.environment())
        if store.credentials_secret:
            secret_env = {
                "secretName": store.credentials_secret,
                "keyToEnv": [
                    {"secretKey": key, "envVar": variable}
                    for variable, key in store.key_variables().items()
                ],
            }
    platform = kfp_spec.kubernetes_platform_spec(
        spec,
        pvc_name=config.kubeflow.pvc_name,
        mount_path=config.kubeflow.pvc_mount_path,
        secret_env=secret_env,
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
