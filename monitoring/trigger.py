"""When a window's signals start a retraining: thresholds, confirmation, once per crossing.

A window is *judged* when it holds enough predictions. Its signals are the thresholds it crosses:
features past the schema's skew/drift comparators, live AUC or calibration past the config's
limits, an outcome rate too many times the training rate (a label shift), a score shift when
one is set. A crossing is *confirmed* when `confirm_windows` judged
windows in a row have signals (one noisy window is not a crossing). A confirmed crossing fires
once; it re-arms when a judged window is clean or a new model version serves, and a crossing
that persists (the retrain failed or was not blessed) fires again only after
`retrain_cooldown_hours`. The state is a small JSON file, written by rename.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from contract import layout
from settings import MonitoringConfig

STATE_FILE = "trigger_state.json"


@dataclass
class TriggerState:
    version: str | None = None  # the model version the recent verdicts are about
    recent: list[bool] = field(default_factory=list)  # signals of the last judged windows
    crossed: bool = False  # a confirmed crossing is on (fired or suppressed)
    crossing_since: float | None = None
    last_fired: float | None = None
    last_window_end: float | None = None  # a window checked again (a retried job) counts once
    fired: list[dict[str, Any]] = field(default_factory=list)  # every firing and its outcome

    @classmethod
    def load(cls, directory: str) -> TriggerState:
        path = os.path.join(directory, STATE_FILE)
        if not os.path.exists(path):
            return cls()
        with open(path) as handle:
            try:
                return cls(**json.load(handle))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"{path}: not a trigger state ({err}); move it away to reset"
                ) from err

    def save(self, directory: str) -> None:
        layout.write_json(os.path.join(directory, STATE_FILE), asdict(self), indent=2)


@dataclass(frozen=True)
class Verdict:
    judged: bool
    signals: list[str]  # this window's crossed thresholds, in words
    confirmed: bool  # signals in `confirm_windows` judged windows in a row
    fire: bool  # start a retrain now
    note: str

    @property
    def alert(self) -> bool:
        return bool(self.signals) or self.confirmed


def signals(
    shifts: list[Any], quality: dict[str, Any] | None, prediction_shift: float | None,
    config: MonitoringConfig, outcome_rate: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """The thresholds this window crosses, each named with its value."""
    out = []
    crossed = [s for s in shifts if s.crossed]
    features = sorted({s.feature for s in crossed})
    if len(features) >= config.retrain_on_drifted_features:
        out.append(f"{len(features)} feature(s) past the schema's thresholds: "
                   + "; ".join(s.line() for s in crossed))  # fmt: skip
    if quality and quality.get("judged"):
        auc = quality.get("auc")
        if config.min_live_auc is not None and auc is not None and auc < config.min_live_auc:
            out.append(f"live AUC {auc:.3f} < {config.min_live_auc:g}")
        error = quality.get("calibration_error")
        if config.max_calibration_error is not None and error is not None:
            if error > config.max_calibration_error:
                out.append(
                    f"calibration: mean score / purchase rate {quality['calibration']:.2f} "
                    f"(|ratio - 1| {error:.2f} > {config.max_calibration_error:g})"
                )
    limit = config.max_outcome_rate_ratio
    if limit is not None and outcome_rate and outcome_rate.get("judged"):
        ratio = outcome_rate["ratio"]
        if ratio > limit or ratio < 1 / limit:
            out.append(
                f"outcome rate {outcome_rate['rate']:.4f} vs {outcome_rate['training_rate']:.4f} "
                f"in training ({ratio:.2f}x, outside {1 / limit:.2g}x..{limit:g}x)"
            )
    if (
        config.max_prediction_shift is not None
        and prediction_shift is not None
        and prediction_shift > config.max_prediction_shift
    ):
        out.append(
            f"score distribution shift {prediction_shift:.3f} > {config.max_prediction_shift:g}"
        )
    return out


def decide(
    state: TriggerState,
    *,
    judged: bool,
    window_signals: list[str],
    version: str | None,
    now: float,
    config: MonitoringConfig,
) -> tuple[Verdict, TriggerState]:
    """The verdict for this window and the state after it (the caller saves it)."""
    if state.last_window_end is not None and now <= state.last_window_end:
        note = "window already judged (a re-check): the trigger's state is unchanged"
        return Verdict(judged, window_signals, state.crossed, False, note), state
    if not judged:
        return Verdict(
            False, window_signals, state.crossed, False, "too few predictions to judge"
        ), state
    if version != state.version:  # a new model: the old one's verdicts say nothing about it
        state = TriggerState(last_fired=state.last_fired, fired=state.fired, version=version)
    state.last_window_end = now
    confirm_windows = config.confirm_windows
    signal = bool(window_signals)
    state.recent = (state.recent + [signal])[-confirm_windows:]
    confirmed = len(state.recent) == confirm_windows and all(state.recent)
    if not signal:
        state.crossed, state.crossing_since = False, None
    cooldown_s = (config.retrain_cooldown_hours or 0) * 3600
    cooled = state.last_fired is None or now - state.last_fired >= cooldown_s
    fire, note = (
        False,
        "no signal" if not signal else f"signal {sum(state.recent)}/{confirm_windows}",
    )
    if confirmed:
        repeat = state.crossed and config.retrain_cooldown_hours is not None
        if (not state.crossed or repeat) and cooled:
            fire = True
            note = (
                "crossing confirmed: retrain"
                if not state.crossed
                else "crossing persists past the cooldown: retrain again"
            )
        elif not cooled:
            note = f"crossing confirmed, but the last retrain was {(now - state.last_fired) / 3600:.1f} h ago (cooldown {config.retrain_cooldown_hours:g} h)"
        else:
            note = "crossing already handled: no retrain storm"
        if not state.crossed:
            state.crossed, state.crossing_since = True, now
    if fire and config.retrain == "off":
        fire, note = False, note + " (monitoring.retrain=off: alert only)"
    if fire:
        state.last_fired = now
    return Verdict(True, window_signals, confirmed, fire, note), state
