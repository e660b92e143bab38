"""Fault tests of the event stream against the real broker: after each fault, every published
impression is in exactly one row of the sealed span, with the features and label the simulator
meant, and the dead-letter queue holds exactly the bad messages.

Each test plays one small day (simulator.stream.day_events) on its own exchange and queues of the
module's RabbitMQ and Redis (tests/e2e/conftest.py stream_services); the consumers are processes
of the features environment (`shop-features consume`), as on a cluster.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pika
import pytest

import contract
from contract.events import encode_event
from features.play import FEATURES_PYTHON, consumer_command, service_overrides
from simulator.generate import SimulationOptions
from simulator.stream import day_events, publish

ROWS = 1500
SPAN = 1


@pytest.fixture
def day():
    return day_events(SimulationOptions(rows_per_span=ROWS, spans=1, seed=7), SPAN)


@pytest.fixture
def stream(stream_services, tmp_path_factory, request):
    """One test's lake and its own exchange and queues on the shared broker."""
    name = request.node.name.replace("test_", "")[:40]
    lake = tmp_path_factory.mktemp("lake")
    overrides = [
        *service_overrides(stream_services.broker, stream_services.redis, lake),
        f"stream.exchange=ex.{name}",
        f"stream.queue=q.{name}",
        f"stream.dead_letter_queue=dlq.{name}",
        f"output_root={lake / 'outputs'}",
    ]
    return Stream(stream_services.broker, lake, overrides, name)


class Stream:
    def __init__(self, broker, lake: Path, overrides: list[str], name: str) -> None:
        self.broker, self.lake, self.overrides, self.name = broker, lake, overrides, name
        self.procs: list[subprocess.Popen] = []

    def consumer(self, *extra: str, consumer_id: str | None = None) -> subprocess.Popen:
        log = open(self.lake / f"consumer-{len(self.procs) + 1}.log", "w")
        proc = subprocess.Popen(
            consumer_command(
                self.overrides, f"--id={consumer_id or f'c{len(self.procs) + 1}'}", *extra
            ),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert proc.stdout.readline(), f"consumer exited at start: {self.log(len(self.procs))}"
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.lake / f"consumer-{index + 1}.log").read_text()[-3000:]

    def publish(self, events) -> int:
        return publish(events, self.broker.url, f"ex.{self.name}")

    def finish(self, proc: subprocess.Popen, timeout_s: float = 240) -> dict:
        out, _ = proc.communicate(timeout=timeout_s)
        assert proc.returncode == 0, self.log(self.procs.index(proc))
        return json.loads(out.strip().splitlines()[-1])

    def ready(self) -> int:
        """Messages waiting in the queue (not yet handed to a consumer)."""
        connection = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        try:
            declared = connection.channel().queue_declare(f"q.{self.name}", passive=True)
            return declared.method.message_count
        finally:
            connection.close()

    def dead_letters(self) -> list[tuple[bytes, str]]:
        connection = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        channel = connection.channel()
        letters = []
        while True:
            method, properties, body = channel.basic_get(f"dlq.{self.name}", auto_ack=True)
            if method is None:
                break
            letters.append((body, properties.headers["x-reason"]))
        connection.close()
        return letters

    def sealed(self) -> pd.DataFrame:
        path = self.lake / f"span-{SPAN}" / "impressions.csv"
        assert path.exists(), f"span-{SPAN} not sealed; consumer log: {self.log(0)}"
        return pd.read_csv(path, dtype={"impression_id": str})


def assert_exactly_the_simulated_rows(stream: Stream, day) -> None:
    sealed = stream.sealed().sort_values("impression_id").reset_index(drop=True)
    expected = day.rows.sort_values("impression_id").reset_index(drop=True)
    assert list(sealed.columns) == list(contract.COLUMNS)
    assert sealed["impression_id"].is_unique
    assert len(sealed) == len(expected) == ROWS
    pd.testing.assert_frame_equal(sealed, expected, check_dtype=False, check_exact=False, atol=1e-9)


def test_a_consumer_killed_mid_batch_loses_and_duplicates_nothing(stream, day):
    # A batch larger than the day and a long flush interval: SIGKILL lands while the consumer
    # holds unacknowledged messages (and, once its first batch file is down, after a write).
    first = stream.consumer("--set=stream.batch_size=400", "--set=stream.flush_interval_s=30")
    stream.publish(day.events)
    staged = stream.lake / "_stream" / f"span-{SPAN}" / "impression"
    deadline = time.monotonic() + 60
    while not any(staged.glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = stream.consumer(f"--exit-after-seal={SPAN}")
    counters = stream.finish(second)
    assert counters["sealed"] == [SPAN]
    assert_exactly_the_simulated_rows(stream, day)
    report = json.loads((stream.lake / "_stream" / f"span-{SPAN}" / "seal.json").read_text())
    assert report["missing_impressions"] == 0 and report["missing_purchases"] == 0
    assert stream.dead_letters() == []


def test_a_consumer_restarted_under_its_name_keeps_every_batch_it_wrote_before(stream, day):
    """A pod restarted with the same consumer id counts its batches from 1 again: its files must
    not replace the first run's (they once did: the feature logs lost the earlier day, and the
    online store then did not know those users)."""
    first = stream.consumer("--set=stream.batch_size=200", consumer_id="c1")
    half = len(day.events) // 2
    stream.publish(day.events[:half])
    deadline = time.monotonic() + 60
    while stream.ready() and time.monotonic() < deadline:  # the first half is with the consumer
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)  # finishes and acknowledges its open batch, then leaves
    stream.finish(first)
    again = stream.consumer(
        f"--exit-after-seal={SPAN}", "--set=stream.batch_size=200", consumer_id="c1"
    )
    stream.publish(day.events[half:])
    stream.finish(again)
    assert_exactly_the_simulated_rows(stream, day)
    logged = {
        view: len(pd.read_parquet(stream.lake / "features" / view))
        for view in ("user_profile", "product_catalog")
    }
    published = {
        view: sum(e["type"] == kind for e in day.events)
        for kind, view in (("user", "user_profile"), ("product", "product_catalog"))
    }
    assert logged == published


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(stream, day):
    consumer = stream.consumer(f"--exit-after-seal={SPAN}")
    half = len(day.events) // 2
    stream.publish(day.events[:half])
    stream.broker.restart()  # durable queue, persistent messages: what was not acked survives
    stream.publish(day.events[half:])
    counters = stream.finish(consumer)
    assert counters["reconnects"] >= 1, stream.log(0)
    assert_exactly_the_simulated_rows(stream, day)
    assert stream.dead_letters() == []


def test_two_consumers_split_the_work_seal_once_and_serve_what_training_saw(stream, day):
    consumers = [stream.consumer(f"--exit-after-seal={SPAN}") for _ in range(2)]
    stream.publish(day.events)
    counters = [stream.finish(c) for c in consumers]
    assert all(c["consumed"] > 0 for c in counters), counters
    assert sorted(s for c in counters for s in c["sealed"]) == [SPAN]
    assert_exactly_the_simulated_rows(stream, day)
    assert stream.dead_letters() == []
    # No training/serving skew (features/skew.py): the online store, materialized up to each of
    # 8 impressions' times, serves that impression's training features; none is from the future;
    # the live store the two consumers filled holds every sampled entity's newest value.
    done = subprocess.run(
        [str(FEATURES_PYTHON), "-m", "features.cli", "skew", f"--span={SPAN}",
         "--checkpoints=8", "--live-sample=50", *(f"--set={o}" for o in stream.overrides)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"], report
    assert report["rows"] == ROWS and report["checkpoints"]["mismatches"] == 0, report


def poison(day) -> list[tuple[bytes, str]]:
    """Bad messages and the words their dead-letter reason must hold: not JSON, fields missing,
    a wrong type and a value outside the vocabulary in otherwise real events, an unknown type,
    a newer schema version."""
    user = next(e for e in day.events if e["type"] == "user")
    impression = next(e for e in day.events if e["type"] == "impression")
    return [
        (b"not json at all", "not JSON"),
        (b'{"type": "impression", "schema_version": 1}', "missing field(s)"),
        (encode_event({**user, "user_avg_price": "twelve"}), "user.user_avg_price"),
        (encode_event({**impression, "device": "smart_fridge"}), "impression.device"),
        (b'{"type": "refund", "schema_version": 1, "event_time": 1767225700}', "type: 'refund'"),
        (encode_event({**impression, "schema_version": 2}), "schema_version: 2"),
    ]


def test_poison_messages_go_to_the_dead_letter_queue_with_the_reason_and_the_day_seals(stream, day):
    consumer = stream.consumer(f"--exit-after-seal={SPAN}")
    third = len(day.events) // 3
    stream.publish(day.events[:third])
    connection = pika.BlockingConnection(pika.URLParameters(stream.broker.url))
    channel = connection.channel()
    bad = poison(day)
    for body, _ in bad:
        channel.basic_publish(f"ex.{stream.name}", "", body, pika.BasicProperties(delivery_mode=2))
    connection.close()
    stream.publish(day.events[third:])
    counters = stream.finish(consumer)
    assert counters["dead_lettered"] == len(bad)
    assert_exactly_the_simulated_rows(stream, day)
    letters = stream.dead_letters()
    assert sorted(body for body, _ in letters) == sorted(body for body, _ in bad)
    reasons = dict(letters)
    for body, expected in bad:
        assert expected in reasons[body], (body, reasons[body])
