"""TuningConfig.search_space -> Katib parameters, trial flags, and typed values back.

Everything downstream (the Experiment, the local suggestion libraries, the trial CLI) reads the
Katib ParameterSpecs built here, so a local search and a cluster search explore the same space.
"""

from __future__ import annotations

import math
from typing import Any

from kubeflow.katib import models as katib

from settings import SearchParameter, TrainingConfig, TuningConfig


def _number(value: float) -> str:
    """Katib feasible-space values are strings; ints without a trailing .0, floats round-tripped."""
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else repr(float(value))


def log_grid(parameter: SearchParameter) -> list[str]:
    """A geometric grid from min to max with log_points values (3 significant digits)."""
    lo, hi, n = math.log10(parameter.min), math.log10(parameter.max), parameter.log_points
    return [f"{10 ** (lo + (hi - lo) * i / (n - 1)):.3g}" for i in range(n)]


def parameter_spec(name: str, parameter: SearchParameter) -> katib.V1beta1ParameterSpec:
    if parameter.log_scale:
        return katib.V1beta1ParameterSpec(
            name=name,
            parameter_type="discrete",
            feasible_space=katib.V1beta1FeasibleSpace(list=log_grid(parameter)),
        )
    if parameter.type in ("double", "int"):
        space = katib.V1beta1FeasibleSpace(
            min=_number(parameter.min),
            max=_number(parameter.max),
            step=_number(parameter.step) if parameter.step is not None else None,
        )
    else:
        space = katib.V1beta1FeasibleSpace(
            list=[v if isinstance(v, str) else _number(v) for v in parameter.values]
        )
    return katib.V1beta1ParameterSpec(
        name=name, parameter_type=parameter.type, feasible_space=space
    )


def parameter_specs(tuning: TuningConfig) -> list[katib.V1beta1ParameterSpec]:
    """The Experiment's spec.parameters, in the config's order."""
    return [parameter_spec(name, p) for name, p in tuning.search_space.items()]


def trial_flags(tuning: TuningConfig) -> list[str]:
    """The trial container's tuned flags: `--learning_rate=${trialParameters.learning_rate}`.

    Flag, trial parameter, Katib parameter and TrainingConfig field share one name."""
    return [f"--{name}=${{trialParameters.{name}}}" for name in tuning.search_space]


def typed_assignments(assignments: dict[str, str] | list[Any]) -> dict[str, Any]:
    """Katib's parameterAssignments (string values) -> values typed as TrainingConfig declares.

    Accepts a {name: value} mapping or Katib's [{name, value}] list (dicts or SDK models)."""
    if isinstance(assignments, list):
        pairs = {}
        for item in assignments:
            name = item["name"] if isinstance(item, dict) else item.name
            pairs[name] = item["value"] if isinstance(item, dict) else item.value
        assignments = pairs
    fields = TrainingConfig.model_fields
    typed: dict[str, Any] = {}
    for name, raw in assignments.items():
        if name not in fields:
            raise ValueError(f"Katib assigned {name!r}, which is not a TrainingConfig field")
        kind = fields[name].annotation
        text = str(raw)
        if kind is int:
            typed[name] = int(float(text))  # Katib's hyperopt service may say "8.0"
        elif kind is float:
            typed[name] = float(text)
        elif name == "hidden_units":
            typed[name] = [int(v) for v in text.strip("[]() ").split(",") if v.strip()]
        else:
            typed[name] = text
    # Validated through the config model, so a value out of a field's bounds fails here by name.
    TrainingConfig.model_validate({**TrainingConfig().model_dump(), **typed})
    return typed


def start_assignment(tuning: TuningConfig, training: TrainingConfig) -> dict[str, str] | None:
    """training's own values as a Katib assignment, or None when one lies outside the space
    (the local backend's first trial, so the search can only match or beat the config)."""
    assignment: dict[str, str] = {}
    for spec in parameter_specs(tuning):
        value = getattr(training, spec.name)
        space = spec.feasible_space
        if spec.parameter_type in ("double", "int"):
            if not float(space.min) <= float(value) <= float(space.max):
                return None
            assignment[spec.name] = str(value)
        else:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            match = [v for v in space.list if v == text or _same_number(v, text)]
            if not match:
                return None
            assignment[spec.name] = match[0]
    return assignment


def _same_number(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return False
