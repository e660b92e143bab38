"""What a trial reported, read the way Katib reads it, and Katib's medianstop rule.

Katib's StdOut collector keeps every `name=value` match of its default filter on lines that
mention a wanted metric; the objective's value is then picked by the metric strategy (`latest`
here). Median stop, as Katib 0.16 implements it: once `min_trials_required` trials have
succeeded, the rule value is the mean of their averages over the first `start_step` reports, and
a running trial whose best value by its `start_step`-th report is below it is stopped.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence

# Katib 0.16's DefaultFilter (pkg/metricscollector/v1beta1/common/const.go).
DEFAULT_FILTER = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


def parse_metrics(lines: Iterable[str], names: Sequence[str]) -> dict[str, list[float]]:
    """Every reported value of each wanted metric, in order."""
    found: dict[str, list[float]] = {name: [] for name in names}
    for line in lines:
        if not any(name in line for name in names):
            continue
        for match in DEFAULT_FILTER.finditer(line):
            name, value = match.group(1).strip(), match.group(2)
            if name in found and value not in ("", "+", "-"):
                found[name].append(float(value))
    return found


def median_stop_rule(
    completed_reports: Sequence[Sequence[float]], min_trials: int, start_step: int
) -> float | None:
    """The value a running trial must reach by its start_step-th report; None = not enough
    completed trials yet."""
    averages = [statistics.fmean(r[:start_step]) for r in completed_reports if r]
    if len(averages) < min_trials:
        return None
    return statistics.fmean(averages)


def should_stop(reports: Sequence[float], rule: float | None, start_step: int) -> bool:
    """The trial's best of its first start_step reports is below the rule (maximize). The caller
    checks each trial once, when it has start_step reports."""
    return rule is not None and len(reports) >= start_step and max(reports[:start_step]) < rule
