"""The Kubeflow section: the image, volume and namespace every step's pod uses, each step's
resources, and where `compile`/`submit` write and send the package."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from settings.section import Section


class StepResources(Section):
    """Requests/limits of one pipeline step's pod on Kubeflow (ignored by the local runner)."""

    cpu: float | None = Field(None, gt=0, description="CPU request and limit, in cores")
    memory_gb: float | None = Field(None, gt=0, description="memory request and limit, in GB")
    accelerator_type: str | None = Field(
        None, description="Kubernetes resource name, e.g. nvidia.com/gpu (open-source KFP)"
    )
    accelerator_count: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _accelerator_needs_both(self) -> StepResources:
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            raise ValueError("accelerator_type and accelerator_count are set together")
        return self


# The defaults of kubeflow.resources: config, keyed by step (component id) as the YAML's
# `kubeflow.resources.<step>` is. pipelines/platforms.py puts them on the steps' containers;
# components/tfjob.py gives the Trainer's to the pods that train outside it.
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "CsvExampleGen": {"cpu": 2, "memory_gb": 8},
    "BaselineExampleGen": {"cpu": 2, "memory_gb": 8},
    "StatisticsGen": {"cpu": 2, "memory_gb": 8},
    "BaselineStatisticsGen": {"cpu": 2, "memory_gb": 8},
    "Transform": {"cpu": 4, "memory_gb": 16},
    "KatibTuner": {"cpu": 4, "memory_gb": 16},  # local backend; the cluster backend's trial pods
    "Trainer": {"cpu": 4, "memory_gb": 16},  #   get the Trainer's resources instead
    "Evaluator": {"cpu": 2, "memory_gb": 8},
}


class KubeflowConfig(Section):
    """How `shop-pipeline compile/submit` target Kubeflow Pipelines v2 (open source)."""

    image: str = Field(
        "shop-ranking:0.1.0", description="the image every step runs (built from the Dockerfile)"
    )
    package_path: str = Field(
        "outputs/kubeflow/shop-ranking.yaml", description="where `compile` writes the KFP YAML"
    )
    pvc_name: str | None = Field(
        None, description="PersistentVolumeClaim mounted into every step (data, artifacts, models)"
    )
    pvc_mount_path: str = "/mnt/shop"
    host: str | None = Field(None, description="KFP API endpoint for `submit`")
    namespace: str = Field("kubeflow", description="KFP namespace (multi-user: the profile)")
    experiment: str = "shop-ranking"
    resources: dict[str, StepResources] = Field(
        default_factory=lambda: dict(DEFAULT_RESOURCES),
        validate_default=True,
        description="per step (component id); given fields override DEFAULT_RESOURCES's",
    )

    @field_validator("resources", mode="before")
    @classmethod
    def _over_the_defaults(cls, given: Any) -> Any:
        """`--set kubeflow.resources.Trainer.accelerator_count=1` keeps Trainer's CPU/memory and
        every other step's defaults."""
        if not isinstance(given, dict):
            return given
        merged = {name: dict(values) for name, values in DEFAULT_RESOURCES.items()}
        for name, values in given.items():
            if isinstance(values, dict):
                merged[name] = {**merged.get(name, {}), **values}
            else:
                merged[name] = values
        return merged
