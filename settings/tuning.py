"""The tuning section: the search space declared once, and the rules a Katib search puts on it
(which fields are tunable, what each algorithm accepts). The Katib Experiment, the trial's flags
and the Trainer's hyperparameters derive from it (components/tuning)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from settings.section import Section
from settings.training import TrainingConfig

# Hyperparameters a search may change: TrainingConfig's fields except the step counts (a trial's
# budget, not a model setting) and the seed.
NOT_TUNABLE = frozenset({"train_steps", "eval_steps", "seed"})


# The settings each Katib 0.16 suggestion service accepts (besides random_state = tuning.seed).
ALGORITHM_SETTINGS: dict[str, frozenset[str]] = {
    "random": frozenset(),
    "tpe": frozenset({"gamma", "prior_weight", "n_EI_candidates"}),
    "multivariate-tpe": frozenset({"n_startup_trials", "n_ei_candidates"}),
    "grid": frozenset(),
    "bayesianoptimization": frozenset(
        {"base_estimator", "n_initial_points", "acq_func", "acq_optimizer"}
    ),
}


class SearchParameter(Section):
    """One tuned hyperparameter, named after its TrainingConfig field.

    Types are Katib's: double and int take min/max (and step), discrete takes numbers, categorical
    takes strings (hidden_units as "64,32"). Katib 0.16's feasibleSpace has no distribution field
    (it came in 0.18), so log_scale turns a double into a discrete geometric grid of log_points.
    """

    type: Literal["double", "int", "discrete", "categorical"]
    min: float | None = None
    max: float | None = None
    step: float | None = Field(None, gt=0)
    values: list[int | float | str] | None = None
    log_scale: bool = False
    log_points: int = Field(7, ge=2, description="grid size of a log_scale parameter")

    @model_validator(mode="after")
    def _space_fits_the_type(self) -> SearchParameter:
        if self.type in ("double", "int"):
            if self.min is None or self.max is None or not self.min < self.max:
                raise ValueError(f"a {self.type} parameter needs min < max")
            if self.values is not None:
                raise ValueError(f"a {self.type} parameter takes min/max, not values")
            if self.type == "int" and not (
                float(self.min).is_integer() and float(self.max).is_integer()
            ):
                raise ValueError("an int parameter needs whole min and max")
            if self.log_scale and (self.type != "double" or self.min <= 0):
                raise ValueError("log_scale needs a double parameter with min > 0")
        else:
            if not self.values:
                raise ValueError(f"a {self.type} parameter needs a non-empty values list")
            if self.min is not None or self.max is not None or self.log_scale:
                raise ValueError(f"a {self.type} parameter takes values, not min/max/log_scale")
            if self.type == "discrete" and any(isinstance(v, str) for v in self.values):
                raise ValueError("discrete values are numbers (use categorical for strings)")
        return self


def _default_search_space() -> dict[str, SearchParameter]:
    return {
        "learning_rate": SearchParameter(
            type="double", min=0.0003, max=0.03, log_scale=True, log_points=5
        ),  # the grids hold training's defaults (0.003, 0.001, 8): the first trial can run them
        "dropout": SearchParameter(type="double", min=0.05, max=0.5),
        "l2": SearchParameter(type="double", min=1e-5, max=1e-2, log_scale=True, log_points=7),
        "embedding_dim": SearchParameter(type="discrete", values=[4, 8, 16]),
    }


class TuningConfig(Section):
    """The search, declared once: the Katib Experiment, the trial's flags and the Trainer's
    hyperparameters all derive from it (components/tuning)."""

    enabled: bool = Field(False, description="run the KatibTuner step before the Trainer")
    backend: Literal["local", "cluster"] = Field(
        "local", description="local: trials as subprocesses here; cluster: a Katib Experiment"
    )
    algorithm: Literal["random", "tpe", "multivariate-tpe", "grid", "bayesianoptimization"] = "tpe"
    algorithm_settings: dict[str, str | int | float] = Field(
        default_factory=dict,
        description="Katib's algorithmSettings by Katib's names (n_startup_trials, gamma, ...)",
    )
    objective_metric: Literal["auc"] = Field(
        "auc", description="maximized; each trial reports it on its held-out validation share"
    )
    goal: float | None = Field(None, gt=0, le=1, description="stop once a trial reaches this")
    max_trials: int = Field(8, ge=1)
    parallel_trials: int = Field(2, ge=1)
    max_failed_trials: int = Field(3, ge=1)
    trial_train_steps: int | None = Field(
        None, ge=1, description="steps per trial; None = training.train_steps"
    )
    validation_every: int = Field(
        5, ge=2, description="every n-th train example validates the trials, the rest train them"
    )
    early_stopping: Literal["none", "medianstop"] = "none"
    early_stopping_min_trials: int = Field(3, ge=1, description="medianstop min_trials_required")
    early_stopping_start_step: int = Field(4, ge=1, description="medianstop start_step (reports)")
    start_from_config: bool = Field(
        True, description="local backend: trial 1 runs training's values, so tuning never loses"
    )
    trial_timeout_s: int = Field(3600, ge=1)
    timeout_s: int = Field(6 * 3600, ge=60, description="the whole search")
    seed: int = Field(42, description="random_state of the suggestion algorithm")
    cleanup: bool = Field(True, description="cluster: delete the Experiment once read")
    search_space: dict[str, SearchParameter] = Field(default_factory=_default_search_space)

    @field_validator("search_space", mode="before")
    @classmethod
    def _over_the_default_space(cls, given: Any) -> Any:
        """`--set tuning.search_space.dropout.max=0.4` keeps the other parameters and dropout's
        other fields; `--set tuning.search_space.l2=null` takes l2 out of the search."""
        if not isinstance(given, dict):
            return given
        merged = {n: p.model_dump(exclude_unset=True) for n, p in _default_search_space().items()}
        for name, values in given.items():
            if values is None:
                merged.pop(name, None)
            elif isinstance(values, dict) and name in merged and "type" not in values:
                merged[name] = {**merged[name], **values}
            else:
                merged[name] = values
        return merged

    @field_serializer("search_space", mode="wrap")
    def _dump_what_the_validator_reads_back(self, space: dict[str, SearchParameter], handler):
        """A default parameter taken out of the search is dumped as null (`l2: null`), so the
        section validated again on the other side of a process boundary (the KatibTuner step)
        searches this space, not the default one merged back in."""
        removed = {name: None for name in _default_search_space() if name not in space}
        return {**handler(space), **removed}

    @field_validator("search_space")
    @classmethod
    def _names_are_hyperparameters(
        cls, space: dict[str, SearchParameter]
    ) -> dict[str, SearchParameter]:
        tunable = set(TrainingConfig.model_fields) - NOT_TUNABLE
        unknown = sorted(set(space) - tunable)
        if unknown:
            raise ValueError(f"{unknown} are not tunable training fields; use {sorted(tunable)}")
        if not space:
            raise ValueError("an empty search space has nothing to tune")
        return space

    @model_validator(mode="after")
    def _algorithm_accepts_the_space(self) -> TuningConfig:
        if self.algorithm == "grid":
            sizes = []
            for name, p in self.search_space.items():
                if p.type == "double" and not p.log_scale and p.step is None:
                    raise ValueError(f"search_space.{name}: grid needs a step for a double")
                if p.log_scale:
                    sizes.append(p.log_points)
                elif p.type in ("double", "int"):
                    sizes.append(int((p.max - p.min) / (p.step or 1) + 1e-9) + 1)
                else:
                    sizes.append(len(p.values))
            combinations = math.prod(sizes)
            if self.max_trials > combinations:  # Katib's grid service refuses this too
                raise ValueError(
                    f"max_trials {self.max_trials} > all {combinations} grid combinations"
                )
        if self.algorithm == "bayesianoptimization":
            # Katib 0.16's skopt service gives every double a log-uniform prior.
            for name, p in self.search_space.items():
                if p.type == "double" and not p.log_scale and p.min <= 0:
                    raise ValueError(
                        f"search_space.{name}: bayesianoptimization (skopt, log-uniform "
                        "doubles in Katib 0.16) needs min > 0"
                    )
        allowed = ALGORITHM_SETTINGS[self.algorithm]
        unknown = sorted(set(self.algorithm_settings) - allowed)
        if unknown:
            raise ValueError(
                f"algorithm_settings {unknown}: {self.algorithm} takes {sorted(allowed) or 'none'}"
                " (random_state comes from tuning.seed)"
            )
        if self.parallel_trials > self.max_trials:
            raise ValueError("parallel_trials is more than max_trials")
        return self
