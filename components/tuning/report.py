"""The tuning report: every trial's parameters, status and objective, and the best one.

Both backends produce it (the cluster one from the Katib Experiment's trials); the KatibTuner
writes it as its TunerResults artifact and the Trainer's HyperParameters come from `best`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

RUNNING, SUCCEEDED, EARLY_STOPPED = "Running", "Succeeded", "EarlyStopped"
FAILED, KILLED = "Failed", "Killed"
REPORT_FILE = "tuning_report.json"


class TuningError(RuntimeError):
    """The search could not produce a best trial; the message says why and names the setting."""


@dataclass
class TrialRecord:
    name: str
    assignments: dict[str, str]  # as Katib gives them: strings
    values: dict[str, Any]  # typed as TrainingConfig declares
    status: str
    objective: float | None = None
    reports: list[float] = field(default_factory=list)
    seconds: float | None = None
    message: str = ""
    start_point: bool = False

    @property
    def counts(self) -> bool:
        """Katib picks the optimal trial among those with an observation."""
        return self.status in (SUCCEEDED, EARLY_STOPPED) and self.objective is not None


@dataclass
class TuningReport:
    backend: str
    algorithm: str
    objective_metric: str
    experiment: str
    parameters: list[dict[str, Any]]  # the Experiment's spec.parameters (camelCase JSON)
    trials: list[TrialRecord] = field(default_factory=list)
    best: TrialRecord | None = None
    seconds: float = 0.0

    def pick_best(self) -> TrialRecord:
        candidates = [t for t in self.trials if t.counts]
        if not candidates:
            raise TuningError(
                f"no trial of {self.experiment} reported {self.objective_metric}: "
                + "; ".join(f"{t.name}: {t.status} {t.message}".strip() for t in self.trials)
            )
        self.best = max(candidates, key=lambda t: t.objective)
        return self.best

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TuningReport:
        data = json.loads(text)
        trials = [TrialRecord(**t) for t in data.pop("trials")]
        best = data.pop("best")
        return cls(**data, trials=trials, best=TrialRecord(**best) if best else None)

    def table(self) -> str:
        """One line per trial, for logs and the CLI."""
        names = [p["name"] for p in self.parameters]
        lines = []
        for t in self.trials:
            mark = "*" if self.best is not None and t.name == self.best.name else " "
            objective = f"{t.objective:.4f}" if t.objective is not None else "   -  "
            params = " ".join(f"{n}={t.assignments.get(n, '?')}" for n in names)
            lines.append(f"{mark} {t.name:<10} {t.status:<12} {objective}  {params}")
        return "\n".join(lines)
