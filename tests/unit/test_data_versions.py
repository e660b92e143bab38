"""Data versions: an empty or partial newest span stops a run (both runners' span resolution), the
Pusher never makes a model trained on an older span the newest version unless the run is an
explicit rollback, and the run summary says which happened (docs/data-versions.md)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from tfx import v1 as tfx
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import json_utils, proto_utils

from components import pusher as P
from components.span_example_gen import SpanError as StepSpanError
from components.span_example_gen import resolve_span
from contract import layout
from pipelines.cli import main as pipeline_cli
from pipelines.pipeline import create_pipeline
from pipelines.platforms import LocalPlatform
from pipelines.spans import SpanError, SpanSelection, available_spans, select_spans
from pipelines.summary import RunSummary, render
from settings import ConfigError, load_config

HEADER = "impression_id,price,purchased\n"
ROWS = "i1,1.5,0\ni2,2.5,1\n"


def write_span(root: Path, span: int, text: str | None = HEADER + ROWS, name="impressions.csv"):
    folder = root / f"span-{span}"
    folder.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (folder / name).write_text(text)
    return folder


def data_config(root: Path, *overrides: str):
    return load_config("local", [f"data.root={root}", *overrides]).data


# ---- which span a run trains on ----------------------------------------------------------------


@pytest.mark.parametrize(
    "newest, problem",
    [
        (lambda root: write_span(root, 3, None), r"has no file matching span-\{SPAN\}/\*\.csv"),
        (lambda root: write_span(root, 3, ""), r"impressions\.csv empty \(0 bytes\)"),
        (lambda root: write_span(root, 3, HEADER), r"impressions\.csv with a header and no rows"),
        (
            lambda root: write_span(root, 3, HEADER, name=".impressions.csv.partial"),
            r"still being written \(\.impressions\.csv\.partial\)",
        ),
        (lambda root: write_span(root, 3, HEADER + ROWS, name="impressions.tsv"), "holds only"),
    ],
    ids=["empty-folder", "zero-bytes", "header-only", "being-written", "no-matching-file"],
)
def test_an_incomplete_newest_span_is_an_error_naming_the_folder(tmp_path, newest, problem):
    write_span(tmp_path, 1)
    write_span(tmp_path, 2)
    newest(tmp_path)
    with pytest.raises(SpanError, match=problem) as raised:
        select_spans(data_config(tmp_path))
    message = str(raised.value)
    assert f"newest span folder {tmp_path}/span-3 " in message
    assert "shop-pipeline rollback --to-span N" in message


def test_a_complete_newest_span_and_an_explicit_older_one_still_select(tmp_path):
    for span in (1, 2, 3):
        write_span(tmp_path, span)
    assert select_spans(data_config(tmp_path)) == SpanSelection(current=3, previous=2)
    (tmp_path / "span-4").mkdir()
    # data.span picks an older span on purpose: the empty newest folder does not matter then
    assert select_spans(data_config(tmp_path, "data.span=3")) == SpanSelection(3, 2)
    # available_spans (batch scoring, the monitor) still lists the spans that hold files
    assert available_spans(data_config(tmp_path)) == [1, 2, 3]


def test_an_explicit_span_must_be_complete_and_an_incomplete_baseline_is_passed_over(tmp_path):
    write_span(tmp_path, 1)
    write_span(tmp_path, 2, HEADER)
    write_span(tmp_path, 3)
    with pytest.raises(SpanError, match=rf"span 2 \(data.span\): {tmp_path}/span-2 has "):
        select_spans(data_config(tmp_path, "data.span=2"))
    assert select_spans(data_config(tmp_path)) == SpanSelection(current=3, previous=1)


def test_the_kubeflow_step_refuses_an_incomplete_newest_span_too(tmp_path):
    write_span(tmp_path, 1)
    write_span(tmp_path, 2)
    input_config = proto_utils.proto_to_json(
        tfx.proto.Input(splits=[tfx.proto.Input.Split(name="s", pattern="span-{SPAN}/*.csv")])
    )
    assert resolve_span(str(tmp_path), input_config, 0, 0)["span"] == 2
    write_span(tmp_path, 3, None)
    with pytest.raises(StepSpanError, match=f"newest span folder {tmp_path}/span-3 has no file"):
        resolve_span(str(tmp_path), input_config, 0, 0)
    with pytest.raises(StepSpanError, match=f"newest span folder {tmp_path}/span-3"):
        resolve_span(str(tmp_path), input_config, 0, 1)  # the baseline step stops as well
    assert resolve_span(str(tmp_path), input_config, 2, 1)["span"] == 1  # an explicit span


# ---- what the Pusher may make the newest version -----------------------------------------------


class PushRig:
    """IdempotentPusherExecutor on local folders: a model, its blessing and its statistics.

    The span reaches the Pusher as a local run hands it over (custom_config, the statistics'
    span left 0 as LocalDagRunner leaves it), or as on Kubeflow (`kubeflow`: the statistics)."""

    def __init__(self, root: Path, monkeypatch, kubeflow: bool = False):
        self.root, self.serving, self.kubeflow = root, root / "serving", kubeflow
        clock = iter(range(1_700_000_000, 1_700_001_000))  # one second per push: new versions
        monkeypatch.setattr(tfx_pusher_executor, "time", SimpleNamespace(time=lambda: next(clock)))
        self.runs = 0

    def push(self, span: int, *, blessed=True, model: str | None = None, rollback_to=None):
        self.runs += 1
        run = self.root / f"run-{self.runs}"
        model_artifact = standard_artifacts.Model()
        model_artifact.uri = model or str(run / "model")
        serving_model = Path(model_artifact.uri) / "Format-Serving"
        serving_model.mkdir(parents=True, exist_ok=True)
        (serving_model / "saved_model.pb").write_text(f"model of span {span}")
        blessing = standard_artifacts.ModelBlessing()
        blessing.uri = str(run / "blessing")
        blessing.set_int_custom_property("blessed", int(blessed))
        statistics = standard_artifacts.ExampleStatistics()
        statistics.uri = str(run / "statistics")
        statistics.span = span if self.kubeflow else 0
        statistics.split_names = artifact_utils.encode_split_names(["train", "eval"])
        (run / "statistics" / "Split-train").mkdir(parents=True)
        (run / "statistics" / "Split-train" / P.STATS_FILE).write_bytes(b"stats")
        pushed = standard_artifacts.PushedModel()
        pushed.uri = str(run / "pushed")
        destination = tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(self.serving))
        )
        custom = {} if self.kubeflow else {P.TRAINING_SPAN_KEY: span}
        if rollback_to is not None:
            custom[P.ROLLBACK_TO_SPAN_KEY] = rollback_to
        P.IdempotentPusherExecutor().Do(
            {
                standard_component_specs.MODEL_KEY: [model_artifact],
                standard_component_specs.MODEL_BLESSING_KEY: [blessing],
                P.STATISTICS_KEY: [statistics],
            },
            {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
            {
                standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(
                    destination
                ),
                standard_component_specs.CUSTOM_CONFIG_KEY: json_utils.dumps(custom or None),
            },
        )
        return pushed, model_artifact.uri

    def versions(self) -> list[str]:
        return layout.local_versions(self.serving)

    def record(self, version: str) -> dict:
        return json.loads((self.serving / version / P.PUSH_RECORD).read_text())


@pytest.mark.parametrize("kubeflow", [False, True], ids=["local", "kubeflow"])
def test_each_pushed_version_records_its_span_and_newer_spans_push(tmp_path, monkeypatch, kubeflow):
    rig = PushRig(tmp_path, monkeypatch, kubeflow)
    first, _ = rig.push(2)
    assert first.get_int_custom_property(P.PUSHED_KEY) == 1
    [v1] = rig.versions()
    assert rig.record(v1) == {"span": 2, "rolled_back_from": None}
    second, _ = rig.push(3)
    assert second.get_int_custom_property(P.PUSHED_KEY) == 1
    assert second.get_int_custom_property(P.SERVING_SPAN_KEY) == 2
    assert rig.record(rig.versions()[-1]) == {"span": 3, "rolled_back_from": None}
    rig.push(3)  # another model on the same span (say, new hyperparameters) pushes as well
    assert len(rig.versions()) == 3


@pytest.mark.parametrize("kubeflow", [False, True], ids=["local", "kubeflow"])
def test_a_blessed_model_of_an_older_span_is_not_pushed_and_says_why(
    tmp_path, monkeypatch, kubeflow
):
    rig = PushRig(tmp_path, monkeypatch, kubeflow)
    rig.push(2)
    rig.push(3)
    before = rig.versions()
    refused, _ = rig.push(2)
    assert rig.versions() == before
    assert refused.get_int_custom_property(P.PUSHED_KEY) == 0
    assert refused.get_string_custom_property(P.NOT_PUSHED_REASON_KEY) == (
        f"trained on span 2, older than span 3 of the serving version {before[-1]}; "
        "to serve it anyway: shop-pipeline rollback --to-span 2"
    )
    # a rollback to some other span does not let this one through
    rig.push(2, rollback_to=1)
    assert rig.versions() == before
    # not blessed: not pushed either, and the Evaluator is the reason (nothing from the span rule)
    unblessed, _ = rig.push(2, blessed=False)
    assert not unblessed.has_custom_property(P.NOT_PUSHED_REASON_KEY)


def test_an_explicit_rollback_pushes_the_older_model_and_records_it(tmp_path, monkeypatch):
    rig = PushRig(tmp_path, monkeypatch)
    _, span_2_model = rig.push(2)
    rig.push(3)
    newer = rig.versions()[-1]
    rolled, _ = rig.push(2, model=span_2_model, rollback_to=2)  # the cached span-2 model
    assert rolled.get_int_custom_property(P.PUSHED_KEY) == 1
    assert rolled.get_int_custom_property(P.ROLLED_BACK_FROM_SPAN_KEY) == 3
    [*_, newest] = rig.versions()
    assert newest > newer
    assert rig.record(newest) == {"span": 2, "rolled_back_from": {"version": newer, "span": 3}}
    assert (rig.serving / newest / P.SOURCE_FILE).read_text() == span_2_model
    # from there, the regular runs on span 2 and newer push again; nothing older than 2
    assert rig.push(2)[0].get_int_custom_property(P.PUSHED_KEY) == 1
    assert rig.push(1)[0].get_int_custom_property(P.PUSHED_KEY) == 0


def test_a_version_pushed_before_records_sets_no_order_and_gets_its_record(tmp_path, monkeypatch):
    rig = PushRig(tmp_path, monkeypatch)
    _, model = rig.push(3)
    [v1] = rig.versions()
    (rig.serving / v1 / P.PUSH_RECORD).unlink()  # as pushed by the Pusher before records
    again, _ = rig.push(3, model=model)  # the same model: nothing pushed, the record written
    assert again.get_int_custom_property(P.PUSHED_KEY) == 1 and rig.versions() == [v1]
    assert rig.record(v1) == {"span": 3, "rolled_back_from": None}
    (rig.serving / v1 / P.PUSH_RECORD).unlink()
    assert rig.push(2)[0].get_int_custom_property(P.PUSHED_KEY) == 1  # unknown: no order


def test_a_model_of_unknown_span_pushes_as_before(tmp_path, monkeypatch):
    unset = standard_artifacts.ExampleStatistics()
    unset.span = 0  # what StatisticsGen records under LocalDagRunner
    assert P.training_span({P.STATISTICS_KEY: [unset]}, {}) is None
    rig = PushRig(tmp_path, monkeypatch)
    rig.push(3)
    rig.kubeflow = True
    pushed, _ = rig.push(0)  # no training_span, statistics of span 0: the span is unknown
    assert pushed.get_int_custom_property(P.PUSHED_KEY) == 1
    assert rig.record(rig.versions()[-1]) == {"span": None, "rolled_back_from": None}


# ---- the rollback setting, the DAG and the summary ---------------------------------------------


def test_a_rollback_names_its_span_twice_and_the_cli_sets_both(tmp_path, capsys):
    with pytest.raises(ConfigError, match="set data.span=2 too"):
        load_config("local", ["pusher.rollback_to_span=2"])
    config = load_config("local", ["pusher.rollback_to_span=2", "data.span=2"])
    assert config.pusher.rollback_to_span == config.data.span == 2
    assert load_config("local").pusher.rollback_to_span is None  # the default: no rollback
    # `rollback` adds both overrides; a missing span folder stops it before anything runs
    write_span(tmp_path, 1)
    code = pipeline_cli(
        ["rollback", "--to-span", "2"]
        + ["--set", f"data.root={tmp_path}", "--set", f"output_root={tmp_path / 'out'}"]
    )
    assert code == 2
    assert "span 2 not found under" in capsys.readouterr().err


def test_a_rollback_pipeline_skips_the_baseline_comparison_and_tells_the_pusher():
    def nodes(*overrides):
        config = load_config("local", list(overrides))
        pipeline = create_pipeline(
            config, LocalPlatform(config, SpanSelection(current=2, previous=1))
        )
        return {component.id: component for component in pipeline.components}

    regular = nodes()
    assert "LatestBlessedModelResolver" in regular
    assert json_utils.loads(regular["Pusher"].exec_properties["custom_config"]) == {
        P.TRAINING_SPAN_KEY: 2  # the span this local pipeline was built for
    }
    rollback = nodes("data.span=2", "pusher.rollback_to_span=2")
    assert "LatestBlessedModelResolver" not in rollback  # absolute thresholds only
    assert json_utils.loads(rollback["Pusher"].exec_properties["custom_config"]) == {
        P.TRAINING_SPAN_KEY: 2,
        P.ROLLBACK_TO_SPAN_KEY: 2,
    }


def test_the_summary_says_rolled_back_or_not_pushed_because_older():
    rolled = RunSummary(
        pipeline="p",
        span=2,
        pushed=True,
        pushed_destination="/serving/p/17",
        trained_on_span=2,
        serving_span=3,
        rolled_back_from_span=3,
    )
    assert "  rolled back to span 2 (newest pushed was span 3): pushed model: /serving/p/17" in (
        render(rolled)
    )
    refused = RunSummary(
        pipeline="p",
        span=2,
        blessed=True,
        pushed=False,
        trained_on_span=2,
        serving_span=3,
        not_pushed_reason="trained on span 2, older than span 3 ...",
    )
    text = render(refused)
    assert "  not pushed: trained on span 2, older than pushed span 3;" in text
    assert "shop-pipeline rollback --to-span 2" in text
    assert json.loads(refused.to_json())["not_pushed_reason"].startswith("trained on span 2")
    plain = render(RunSummary(pipeline="p", pushed=False))
    assert "not pushed: the serving folder keeps its previous model" in plain
