"""Katib's suggestion algorithms, run in-process with the libraries Katib's services use.

random, tpe -> hyperopt; multivariate-tpe, grid -> optuna; bayesianoptimization -> scikit-optimize.
Each mirrors Katib 0.16's service for the same name: how a parameter type becomes the library's
space, the algorithm settings it accepts, what it is told (completed trials only; maximize by
negating for the minimizers) and string values out, as in Katib's parameterAssignments.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from kubeflow.katib import models as katib

Assignment = dict[str, str]


class Suggester(Protocol):
    def ask(self) -> Assignment: ...

    def tell(self, assignment: Assignment, objective: float | None) -> None:
        """objective None = the trial failed: Katib's services only learn from completed ones."""


def _bounds(spec: katib.V1beta1ParameterSpec) -> tuple[float, float]:
    return float(spec.feasible_space.min), float(spec.feasible_space.max)


def _is_list(spec: katib.V1beta1ParameterSpec) -> bool:
    return spec.parameter_type in ("discrete", "categorical")


def _list_index(spec: katib.V1beta1ParameterSpec, value: str) -> int:
    """Position of a value in a discrete/categorical list (numbers compared as numbers)."""
    values = spec.feasible_space.list
    if value in values:
        return values.index(value)
    if spec.parameter_type == "discrete":
        for i, v in enumerate(values):
            if float(v) == float(value):
                return i
    raise ValueError(f"{spec.name}={value!r} is not one of {values}")


class HyperoptSuggester:
    """random and tpe, as Katib's hyperopt service: hp.uniform / hp.quniform / hp.choice."""

    def __init__(self, algorithm: str, specs, settings: dict[str, Any], seed: int, startup: int):
        import hyperopt
        from hyperopt import hp

        self._hyperopt = hyperopt
        self.specs = specs
        space = {}
        for spec in specs:
            if spec.parameter_type == "int":
                lo, hi = _bounds(spec)
                space[spec.name] = hp.quniform(
                    spec.name, lo, hi, float(spec.feasible_space.step or 1)
                )
            elif spec.parameter_type == "double":
                space[spec.name] = hp.uniform(spec.name, *_bounds(spec))
            else:
                space[spec.name] = hp.choice(spec.name, spec.feasible_space.list)
        self.domain = hyperopt.Domain(None, space, pass_expr_memo_ctrl=None)
        self.algorithm = algorithm
        self.kwargs: dict[str, Any] = {}
        if algorithm == "tpe":
            # Katib passes the size of its first request as n_startup_jobs: random until then.
            self.kwargs = {"n_startup_jobs": startup}
            for name, cast in (("gamma", float), ("prior_weight", float), ("n_EI_candidates", int)):
                if name in settings:
                    self.kwargs[name] = cast(settings[name])
        self.rng = np.random.default_rng(seed)
        self.completed: list[tuple[Assignment, float]] = []

    def _trials(self):
        """Completed trials as hyperopt documents (Katib rebuilds them on every request)."""
        h = self._hyperopt
        trials = h.Trials()
        for assignment, objective in self.completed:
            (tid,) = trials.new_trial_ids(1)
            vals = {}
            for spec in self.specs:
                value = assignment[spec.name]
                if spec.parameter_type == "int":
                    vals[spec.name] = [int(float(value))]
                elif spec.parameter_type == "double":
                    vals[spec.name] = [float(value)]
                else:
                    vals[spec.name] = [_list_index(spec, value)]
            misc = {
                "tid": tid,
                "cmd": self.domain.cmd,
                "workdir": self.domain.workdir,
                "idxs": {name: [tid] for name in vals},
                "vals": vals,
            }
            (doc,) = trials.new_trial_docs(
                [tid], [None], [{"loss": -objective, "status": h.STATUS_OK}], [misc]
            )
            doc["state"] = h.JOB_STATE_DONE
            trials.insert_trial_docs([doc])
        trials.refresh()
        return trials

    def ask(self) -> Assignment:
        h = self._hyperopt
        trials = self._trials()
        new_ids = trials.new_trial_ids(1)
        seed = int(self.rng.integers(2**31 - 1))
        if self.algorithm == "random":
            docs = h.rand.suggest(new_ids, self.domain, trials, seed)
        else:
            docs = h.tpe.suggest(new_ids, self.domain, trials, seed, **self.kwargs)
        vals = docs[0]["misc"]["vals"]
        assignment = {}
        for spec in self.specs:
            value = vals[spec.name][0]
            if spec.parameter_type == "int":
                assignment[spec.name] = str(int(value))
            elif spec.parameter_type == "double":
                assignment[spec.name] = str(value)
            else:
                assignment[spec.name] = spec.feasible_space.list[int(value)]
        return assignment

    def tell(self, assignment: Assignment, objective: float | None) -> None:
        if objective is not None:
            self.completed.append((assignment, objective))


class OptunaSuggester:
    """multivariate-tpe and grid, as Katib's optuna service (maximize, ask/tell)."""

    def __init__(self, algorithm: str, specs, settings: dict[str, Any], seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.distributions: dict[str, Any] = {}
        for spec in specs:
            if spec.parameter_type == "int":
                lo, hi = _bounds(spec)
                self.distributions[spec.name] = optuna.distributions.IntDistribution(
                    int(lo), int(hi)
                )
            elif spec.parameter_type == "double":
                self.distributions[spec.name] = optuna.distributions.FloatDistribution(
                    *_bounds(spec)
                )
            else:
                self.distributions[spec.name] = optuna.distributions.CategoricalDistribution(
                    spec.feasible_space.list
                )
        if algorithm == "grid":
            sampler = optuna.samplers.GridSampler(grid_values(specs), seed=seed)
        else:
            kwargs = {"seed": seed, "constant_liar": True, "multivariate": True}
            for name, cast in (("n_startup_trials", int), ("n_ei_candidates", int)):
                if name in settings:
                    kwargs[name] = cast(settings[name])
            sampler = optuna.samplers.TPESampler(**kwargs)
        self.study = optuna.create_study(sampler=sampler, direction="maximize")
        self.specs = {spec.name: spec for spec in specs}
        self.pending: dict[tuple, int] = {}

    @staticmethod
    def _key(assignment: Assignment) -> tuple:
        return tuple(sorted(assignment.items()))

    def ask(self) -> Assignment:
        trial = self.study.ask(fixed_distributions=self.distributions)
        assignment = {name: _as_text(value) for name, value in trial.params.items()}
        self.pending[self._key(assignment)] = trial.number
        return assignment

    def tell(self, assignment: Assignment, objective: float | None) -> None:
        number = self.pending.pop(self._key(assignment), None)
        state = self._optuna.trial.TrialState
        if number is not None:
            if objective is None:
                self.study.tell(number, state=state.FAIL)
            else:
                self.study.tell(number, objective)
        elif objective is not None:  # a trial this study did not ask for (the start point)
            params = {n: self._native(n, v) for n, v in assignment.items()}
            self.study.add_trial(
                self._optuna.trial.create_trial(
                    params=params, distributions=self.distributions, value=objective
                )
            )

    def _native(self, name: str, value: str) -> Any:
        spec = self.specs[name]
        if spec.parameter_type == "int":
            return int(float(value))
        if spec.parameter_type == "double":
            return float(value)
        return spec.feasible_space.list[_list_index(spec, value)]


def grid_values(specs) -> dict[str, list]:
    """Katib's grid: int range(min, max+1, step), double arange(min, max+step, step) within max,
    lists as they are."""
    grid: dict[str, list] = {}
    for spec in specs:
        space = spec.feasible_space
        if spec.parameter_type == "int":
            grid[spec.name] = list(range(int(space.min), int(space.max) + 1, int(space.step or 1)))
        elif spec.parameter_type == "double":
            lo, hi, step = float(space.min), float(space.max), float(space.step)
            grid[spec.name] = [
                round(float(v), 12) for v in np.arange(lo, hi + step, step) if v <= hi + 1e-12
            ]
        else:
            grid[spec.name] = list(space.list)
    return grid


class SkoptSuggester:
    """bayesianoptimization, as Katib's skopt service: a GP (by default) over Integer, Real
    (log-uniform, as in Katib 0.16) and Categorical dimensions; told -objective."""

    def __init__(self, specs, settings: dict[str, Any], seed: int):
        import skopt

        dims = []
        for spec in specs:
            if spec.parameter_type == "int":
                lo, hi = _bounds(spec)
                dims.append(skopt.space.Integer(int(lo), int(hi), name=spec.name))
            elif spec.parameter_type == "double":
                dims.append(skopt.space.Real(*_bounds(spec), "log-uniform", name=spec.name))
            else:
                dims.append(skopt.space.Categorical(spec.feasible_space.list, name=spec.name))
        self.specs = list(specs)
        self.optimizer = skopt.Optimizer(
            dims,
            base_estimator=str(settings.get("base_estimator", "GP")),
            n_initial_points=int(settings.get("n_initial_points", 10)),
            acq_func=str(settings.get("acq_func", "gp_hedge")),
            acq_optimizer=str(settings.get("acq_optimizer", "auto")),
            random_state=seed,
        )

    def ask(self) -> Assignment:
        point = self.optimizer.ask()
        return {spec.name: _as_text(v) for spec, v in zip(self.specs, point, strict=True)}

    def tell(self, assignment: Assignment, objective: float | None) -> None:
        if objective is None:
            return
        point = []
        for spec in self.specs:
            value = assignment[spec.name]
            if spec.parameter_type == "int":
                point.append(int(float(value)))
            elif spec.parameter_type == "double":
                point.append(float(value))
            else:
                point.append(spec.feasible_space.list[_list_index(spec, value)])
        self.optimizer.tell(point, -objective)


def _as_text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(float(value))
    return str(value)


def make_suggester(
    algorithm: str, specs, settings: dict[str, Any], seed: int, parallel: int
) -> Suggester:
    if algorithm in ("random", "tpe"):
        return HyperoptSuggester(algorithm, specs, settings, seed, startup=parallel)
    if algorithm in ("multivariate-tpe", "grid"):
        return OptunaSuggester(algorithm, specs, settings, seed)
    if algorithm == "bayesianoptimization":
        return SkoptSuggester(specs, settings, seed)
    raise ValueError(f"tuning.algorithm {algorithm!r} has no local implementation")
