"""The drift monitor and the retraining trigger on simulator data, without a pipeline run: TFDV
skew/drift on request-log windows, live quality from delayed outcomes, the report and metrics,
the trigger's once-per-crossing rule, and retrains that fail or push nothing."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

import contract
from contract import layout
from contract.schema_tool import load_schema
from monitoring import checks, trigger
from monitoring.monitor import check
from monitoring.report import summary_lines
from monitoring.retrain import RetrainOutcome, retrain, retrain_local
from monitoring.traffic import Window, arrived_outcomes, read_outcome_feed, settled_outcomes
from serving.request_log import RequestLog
from settings import MonitoringConfig, load_config
from simulator.generate import SimulationOptions, write_dataset
from simulator.outcomes import ATTRIBUTION_WINDOW_S, outcomes_path
from simulator.truth import TruthParams, purchase_probability

ROWS = 12_000
WINDOW_ROWS = 3000  # 300 pages: a page's context is one draw (simulator PAGE_SIZE)
FEATURES = [c for c in contract.COLUMNS if c not in contract.NOT_MODEL_INPUTS]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Spans 1-2 normal, 3-4 drifted; the 'model' of version 1 was trained on span 1."""
    root = tmp_path_factory.mktemp("monitor")
    options = SimulationOptions(rows_per_span=ROWS, spans=4, seed=3, drift=0.8, drift_from_span=3)
    write_dataset(options, root / "data")
    spans = {s: pd.read_csv(root / "data" / f"span-{s}" / "impressions.csv") for s in range(1, 5)}
    return root, spans


def _config(root, tmp, **monitoring):
    overrides = [f"data.root={root / 'data'}", f"output_root={tmp / 'outputs'}"]
    overrides += [f"monitoring.{k}={'null' if v is None else v}" for k, v in monitoring.items()]
    return load_config("local", overrides)


def _push_version(config, version: str, train: pd.DataFrame) -> None:
    """A version folder with what the monitor reads: the training statistics (the model itself
    is not needed; scores come from the log)."""
    path = os.path.join(config.serving_dir, version, layout.TRAINING_STATISTICS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stats = tfdv.generate_statistics_from_dataframe(train.drop(columns=["impression_id"]))
    with open(path, "wb") as handle:
        handle.write(stats.SerializeToString())


def _serve(config, rows: pd.DataFrame, version: str, start: float, scores=None) -> Window:
    """Writes rows to the request log as the server does, with timestamps from `start`."""
    log = RequestLog(config.request_log_path)
    score = scores if scores is not None else np.full(len(rows), 0.05)
    for i, (_, row) in enumerate(rows.iterrows()):
        columns = {
            name: [row[name].item() if hasattr(row[name], "item") else row[name]]
            for name in FEATURES
        }
        log.write(request_id=str(i), model=config.serving.model_name, version=version, variant=None,
                  protocol="v1", columns=columns, ids=[row["impression_id"]], scores=[float(score[i])])  # fmt: skip
    # RequestLog stamps time.time(); rewrite the stamps to a known, simulated clock.
    lines = open(config.request_log_path).read().splitlines()
    tail = lines[-len(rows) :]
    stamped = []
    for i, line in enumerate(tail):
        record = json.loads(line)
        record["ts"] = start + i * 0.01
        stamped.append(json.dumps(record))
    with open(config.request_log_path, "w") as handle:
        handle.write("\n".join(lines[: -len(rows)] + stamped) + "\n")
    return Window(start, start + len(rows) * 0.01 + 0.001)


def _stats(frame: pd.DataFrame):
    return checks.window_statistics(frame, FEATURES)


def test_no_false_alarm_on_traffic_from_the_training_distribution(shop):
    _, spans = shop
    training = _stats(spans[1])
    previous = None
    for start in range(0, ROWS, WINDOW_ROWS):
        window = _stats(spans[2].iloc[start : start + WINDOW_ROWS])
        shifts, problems = checks.compare(window, load_schema(), training, previous)
        assert not [s.line() for s in shifts if s.crossed], start
        assert not problems
        assert {s.comparison for s in shifts} == ({"skew", "drift"} if previous else {"skew"})
        previous = window


def test_drifted_traffic_names_the_moved_features_with_their_distance(shop):
    _, spans = shop
    shifts, _ = checks.compare(
        _stats(spans[3].iloc[:WINDOW_ROWS]),
        load_schema(),
        _stats(spans[1]),
        _stats(spans[2].iloc[:WINDOW_ROWS]),
    )
    crossed = {(s.feature, s.comparison) for s in shifts if s.crossed}
    # the simulator's drift moves traffic to mobile and social/ads: those must be named
    assert {
        ("device", "skew"),
        ("referrer", "skew"),
        ("device", "drift"),
        ("referrer", "drift"),
    } <= crossed
    assert not {f for f, _ in crossed} & {"category", "country", "hour", "position"}
    device = next(s for s in shifts if s.feature == "device" and s.comparison == "skew")
    assert (
        device.measure == "L_INFTY" and device.ratio > 1.5 and "device: skew L-inf" in device.line()
    )
    lines = trigger.signals(shifts, None, None, MonitoringConfig())
    assert len(lines) == 1 and "device" in lines[0] and "referrer" in lines[0]


def test_outcomes_arrive_late_and_live_quality_counts_only_those(shop):
    root, spans = shop
    feed = read_outcome_feed(os.path.dirname(outcomes_path(root / "data", 1)))
    assert len(feed) == 4 * ROWS and set(feed["delay_s"].unique()) >= {ATTRIBUTION_WINDOW_S}
    traffic = (
        spans[2].iloc[:1000].rename(columns={"impression_id": "id"}).assign(ts=100.0, score=0.05)
    )
    soon = arrived_outcomes(traffic, feed, as_of=100.0 + 3600)
    later = arrived_outcomes(traffic, feed, as_of=100.0 + ATTRIBUTION_WINDOW_S)
    # after an hour only some purchases are known; after the attribution window, everything
    assert 0 < len(soon) < 0.2 * len(later) and soon[contract.LABEL].all()
    assert (
        len(later) == 1000
        and later[contract.LABEL].sum() == spans[2][contract.LABEL].iloc[:1000].sum()
    )
    q = checks.live_quality(later, 1000, min_labelled=300, min_positives=10)
    assert q["judged"] and q["auc"] == pytest.approx(0.5) and q["coverage"] == 1.0
    assert q["calibration"] == pytest.approx(0.05 / later[contract.LABEL].mean())


def test_outcome_rate_counts_settled_impressions_only(shop):
    """Purchases arrive within hours, non-purchases after the attribution window: the rate is read
    only from impressions whose window has closed, never from the early, all-purchase arrivals."""
    root, spans = shop
    feed = read_outcome_feed(os.path.dirname(outcomes_path(root / "data", 1)))
    rows = spans[2].iloc[:1000]
    traffic = rows.rename(columns={"impression_id": "id"}).assign(ts=100.0, score=0.05)
    training = tfdv.generate_statistics_from_dataframe(spans[1].drop(columns=["impression_id"]))
    soon = checks.outcome_rate(settled_outcomes(traffic, feed, 100.0 + 3600), 1000, training, 300)
    assert soon["settled"] == 0 and soon["rate"] is None and not soon["judged"]
    assert len(arrived_outcomes(traffic, feed, 100.0 + 3600))  # some purchases are known already
    later = checks.outcome_rate(
        settled_outcomes(traffic, feed, 100.0 + ATTRIBUTION_WINDOW_S), 1000, training, 300
    )
    assert later["settled"] == 1000 and later["judged"] and later["coverage"] == 1.0
    assert later["rate"] == pytest.approx(rows[contract.LABEL].mean())
    assert later["training_rate"] == pytest.approx(spans[1][contract.LABEL].mean())
    assert 0.5 < later["ratio"] < 2.0  # the same shop a day later: no label shift
    assert not trigger.signals([], None, None, MonitoringConfig(), outcome_rate=later)


@pytest.mark.parametrize(
    "ratio, judged, limit, signal",
    [(2.5, True, 2.0, True), (0.4, True, 2.0, True), (1.9, True, 2.0, False),
     (0.6, True, 2.0, False), (5.0, False, 2.0, False), (5.0, True, None, False)],
)  # fmt: skip
def test_outcome_rate_signals_past_the_ratio_either_way(ratio, judged, limit, signal):
    rate = {"rate": 0.07 * ratio, "training_rate": 0.07, "ratio": ratio, "judged": judged}
    lines = trigger.signals([], None, None, MonitoringConfig(max_outcome_rate_ratio=limit), rate)
    assert bool(lines) == signal
    if signal:
        assert lines[0].startswith("outcome rate ") and "in training" in lines[0]


def test_label_shift_on_served_traffic_is_reported_against_the_training_rate(tmp_path):
    """The served day's purchase rate is a few times the training day's (a prior shift only: the
    features do not move): the report, the metrics and the verdict say so."""
    options = SimulationOptions(rows_per_span=3000, spans=2, seed=3, label_shift=5.0)
    write_dataset(options, tmp_path / "data")
    spans = {s: pd.read_csv(tmp_path / "data" / f"span-{s}" / "impressions.csv") for s in (1, 2)}
    config = _config(tmp_path, tmp_path, min_window_rows=1000)
    _push_version(config, "1", spans[1])
    part = spans[2].iloc[:WINDOW_ROWS]
    window = _serve(config, part, "1", 3_000_000.0)
    result = check(config, window, outcomes_as_of=window.end + ATTRIBUTION_WINDOW_S,
                   trigger_retrain=False, echo=lambda s: None)  # fmt: skip
    rate = result.report["outcome_rate"]
    assert rate["settled"] == WINDOW_ROWS and rate["judged"]
    assert rate["rate"] == pytest.approx(part[contract.LABEL].mean())
    assert rate["training_rate"] == pytest.approx(spans[1][contract.LABEL].mean())
    assert rate["ratio"] > 2.5
    assert not result.report["drifted_features"]  # the features did not move
    assert any(s.startswith("outcome rate ") for s in result.report["signals"])
    assert result.exit_code == 1
    line = next(x for x in summary_lines(result.report) if "outcome rate" in x)
    assert f"vs {rate['training_rate']:.4f} in training ({rate['ratio']:.2f}x)" in line
    metrics = open(os.path.join(config.monitoring_dir, "metrics.prom")).read()
    for name in ("outcome_rate", "training_outcome_rate", "outcome_rate_ratio"):
        assert f'shop_monitor_{name}{{model="shop-ranking"}}' in metrics


def _decide(state, signal: bool, now: float, version="1", judged=True, **settings):
    return trigger.decide(
        state, judged=judged, window_signals=["x"] if signal else [], version=version, now=now,
        config=MonitoringConfig(**settings),
    )  # fmt: skip


def test_trigger_fires_once_per_confirmed_crossing():
    state, fired = trigger.TriggerState(), []
    pattern = [False, True, False, True, True, True, True, True, True, False, True, True]
    for hour, signal in enumerate(pattern):
        verdict, state = _decide(state, signal, hour * 3600.0, retrain_cooldown_hours=None)
        fired.append(verdict.fire)
    # one noisy window is not a crossing; a crossing fires once however long it lasts;
    # a clean window re-arms, and the next confirmed crossing fires again
    assert [h for h, f in enumerate(fired) if f] == [4, 11]


def test_a_persisting_crossing_retries_only_after_the_cooldown():
    state, fired = trigger.TriggerState(), []
    for hour in range(30):
        verdict, state = _decide(state, True, hour * 3600.0, retrain_cooldown_hours=24)
        fired.append(verdict.fire)
    assert [h for h, f in enumerate(fired) if f] == [1, 25]
    # a new crossing right after a retrain waits for the cooldown too
    verdict, state = _decide(state, False, 30 * 3600.0, retrain_cooldown_hours=24)
    for hour in (31, 32):
        verdict, state = _decide(state, True, hour * 3600.0, retrain_cooldown_hours=24)
    assert not verdict.fire and "cooldown" in verdict.note


def test_a_window_checked_twice_counts_once():
    state = trigger.TriggerState()
    verdict, state = _decide(state, True, 10.0)
    verdict, state = _decide(state, True, 10.0)  # the same window again (a retried job)
    assert not verdict.confirmed and state.recent == [True] and "already judged" in verdict.note
    verdict, state = _decide(state, True, 20.0)
    assert verdict.fire


def test_trigger_ignores_thin_windows_resets_on_a_new_version_and_obeys_retrain_off():
    state = trigger.TriggerState()
    _, state = _decide(state, True, 0.0)
    verdict, state = _decide(state, True, 1.0, judged=False)
    assert not verdict.judged and state.recent == [True]
    verdict, state = _decide(state, True, 2.0, version="2")  # the new model starts afresh
    assert state.recent == [True] and not verdict.fire
    verdict, state = _decide(state, True, 3.0, version="2", retrain="off")
    assert verdict.confirmed and not verdict.fire and "alert only" in verdict.note


def test_check_reports_alerts_retrains_once_and_keeps_the_model_on_a_failed_retrain(shop, tmp_path):
    root, spans = shop
    config = _config(root, tmp_path, min_window_rows=1000)
    _push_version(config, "1", spans[1])
    calls = []

    def failing(cfg, log_dir, echo):
        calls.append(log_dir)
        versions = layout.local_versions(cfg.serving_dir)
        return RetrainOutcome("failed", 4, "gate stopped the run", versions, versions)

    t, results = 1_000_000.0, []
    for span in (2, 2, 3, 3, 4, 4):
        part = (
            spans[span].iloc[:WINDOW_ROWS]
            if len(results) % 2 == 0
            else spans[span].iloc[WINDOW_ROWS : 2 * WINDOW_ROWS]
        )
        window = _serve(config, part, "1", t, scores=purchase_probability(part, TruthParams()))
        results.append(check(config, window, outcomes_as_of=window.end + ATTRIBUTION_WINDOW_S,
                             retrainer=failing, echo=lambda s: None))  # fmt: skip
        t = window.end + 1
    codes = [r.exit_code for r in results]
    assert codes == [0, 0, 1, 1, 1, 1]
    assert [r.retrain is not None for r in results] == [False, False, False, True, False, False]
    assert len(calls) == 1  # no retrain storm while the crossing lasts
    assert os.listdir(config.serving_dir) == ["1"]  # the failed retrain left the model in place
    fired = results[3].report
    assert {"device", "referrer"} <= set(fired["drifted_features"])
    assert fired["retrain"]["status"] == "failed" and fired["retrains_so_far"] == 1
    assert fired["previous_window"]["end"] == results[2].report["window"]["end"]
    assert results[0].report["previous_window"] is None and "drift not checked" in " ".join(
        results[0].report["notes"]
    )
    assert (
        results[0].report["quality"]["judged"]
        and results[0].report["quality"]["labelled"] == WINDOW_ROWS
    )
    html = open(os.path.join(results[3].report_dir, "report.html")).read()
    assert html.count("data:image/png;base64,") >= 4 and "ALERT" in html and "device" in html
    metrics = open(os.path.join(config.monitoring_dir, "metrics.prom")).read()
    assert (
        'shop_monitor_feature_distance{comparison="skew",feature="device",model="shop-ranking"}'
        in metrics
    )
    assert (
        "shop_monitor_alert{" in metrics
        and 'shop_monitor_retrains{model="shop-ranking"} 1.0' in metrics
    )
    state = json.load(open(os.path.join(config.monitoring_dir, trigger.STATE_FILE)))
    assert state["crossed"] and state["fired"][0]["status"] == "failed"


def test_check_reports_a_missing_log_and_names_a_log_of_another_model(shop, tmp_path):
    root, spans = shop
    config = _config(root, tmp_path)
    empty = check(config, Window(0, 1), echo=lambda s: None)  # before any traffic: reported
    assert empty.exit_code == 0 and not empty.report["judged"] and empty.report["traffic_rows"] == 0
    assert "no request log" in " ".join(empty.report["notes"])
    os.makedirs(config.request_log_dir)
    with open(config.request_log_path, "w") as handle:
        handle.write(
            json.dumps({"ts": 5, "features": {"colour": "red"}, "score": 0.1, "version": "1"})
            + "\n"
        )
    with pytest.raises(ValueError, match="lacks feature"):
        check(config, Window(0, 10), echo=lambda s: None)


def test_a_retrain_that_fails_leaves_the_serving_versions_as_they_were(shop, tmp_path):
    """The real `shop-pipeline run` child process on a data root without spans: it exits
    non-zero, and the outcome says so with the serving folder unchanged."""
    config = load_config(
        "local", [f"data.root={tmp_path / 'empty'}", f"output_root={tmp_path / 'out'}"]
    )
    os.makedirs(os.path.join(config.serving_dir, "7"))
    (tmp_path / "empty").mkdir()
    lines = []
    outcome = retrain_local(config, str(tmp_path / "retrains"), lines.append)
    assert outcome.status == "failed" and outcome.versions_before == outcome.versions_after == ["7"]
    assert "exited 2" in outcome.detail and "no span" in outcome.detail
    assert os.path.exists(outcome.log_path) and any(
        line.startswith("pipeline run:") for line in lines
    )


def test_a_retrain_with_an_empty_newest_span_fails_naming_it_and_runs_nothing(tmp_path):
    """Issue 18: the monitor's retrain used to pick the newest span that had files, i.e. the span
    before an emptied newest one; now the retrain fails with the folder's name, for both kinds."""
    data = tmp_path / "data"
    for span in (1, 2):
        (data / f"span-{span}").mkdir(parents=True)
        (data / f"span-{span}" / "impressions.csv").write_text("a,b\n1,2\n")
    (data / "span-3").mkdir()
    for kind in ("local", "kubeflow"):
        config = load_config("local", [f"data.root={data}", f"output_root={tmp_path / 'out'}",
                                       f"monitoring.retrain={kind}", "kubeflow.host=http://kfp"])  # fmt: skip
        outcome = retrain(config, str(tmp_path / "retrains"), lambda line: None)
        assert outcome.status == "failed" and outcome.span is None, kind
        assert "span-3" in outcome.detail and "empty folder" in outcome.detail, outcome.detail
    assert not (tmp_path / "retrains").exists()  # no pipeline run was started


def test_the_cli_exits_1_on_an_alert_unless_told_otherwise(shop, tmp_path, capsys):
    from monitoring.cli import _time
    from monitoring.cli import main as monitor_cli

    root, spans = shop
    config = _config(root, tmp_path)
    _push_version(config, "1", spans[1])
    window = _serve(config, spans[3].iloc[:WINDOW_ROWS], "1", 2_000_000.0)
    flags = ["check", "--since", str(window.start), "--until", str(window.end), "--no-retrain",
             "--set", f"data.root={root / 'data'}", "--set", f"output_root={tmp_path / 'outputs'}"]  # fmt: skip
    assert monitor_cli(flags) == 1
    out = capsys.readouterr().out
    assert "device (skew" in out and "referrer (skew" in out and "report: " in out
    assert monitor_cli([*flags, "--alert-exit-code", "0"]) == 0
    assert monitor_cli(["check", "--set", "monitoring.confirm_windows=0"]) == 2
    assert "confirm_windows" in capsys.readouterr().err
    assert _time("2026-11-29T10:00") == _time("2026-11-29T10:00Z") == 1_795_946_400.0  # naive = UTC
