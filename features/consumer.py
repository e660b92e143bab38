"""The stateless consumer: the shop's events from the broker into the lake and the online store.

Any number run on one queue (the broker hands each message to one of them). A consumer holds
nothing the lake does not: it buffers up to `stream.batch_size` messages (or
`stream.flush_interval_s` worth), writes them durably
(features/lake.py), pushes the profile events to the online store, and only then acknowledges
the whole batch. Killed anywhere before the acknowledgement, its messages go to another
consumer; after it, they are in the lake. Redeliveries are duplicates the seal drops.

A `seal` event (the shop: every event of span N is published) seals the span once the lake holds
every impression and purchase it counts: the label of an impression is 1 when a purchase for it
arrived, else 0 (the attribution window has closed, so none will). When some are still in another
consumer's batch, the seal goes back to the queue's tail and is tried again; after
`stream.seal_timeout_s` the span is sealed with what arrived and the shortfall is recorded.
Messages outside the contract go to the dead-letter queue with the reason (header `x-reason`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pika
import pika.exceptions

import contract
from contract.events import PUBLISHED_AT_HEADER, EventError, encode_event, parse_event, span_of
from features import store as feature_store
from features.lake import Lake
from settings import PipelineConfig

log = logging.getLogger("features.consumer")
# Profile events -> the Feast view they feed.
VIEWS = {"user": "user_profile", "product": "product_catalog"}
RECONNECT_DELAY_S = 1.0
LAG_SAMPLE = 50


@dataclass
class Counters:
    """What one consumer did, for its log line and the tests."""

    consumed: int = 0
    batches: int = 0
    dead_lettered: int = 0
    late_duplicates: int = 0
    sealed: list[int] = field(default_factory=list)
    reconnects: int = 0
    # publish -> online-store write, per profile event (the first LAG_SAMPLE of each batch)
    online_lags_s: list[float] = field(default_factory=list)


class Consumer:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        consumer_id: str | None = None,
        exit_after_seal: int | None = None,
        idle_exit_s: float | None = None,
        open_store: Callable[[PipelineConfig], Any] = feature_store.open_store,
    ) -> None:
        self.config = config
        self.stream = config.stream
        self.lake = Lake(config.data.root)
        self.store = open_store(config)
        self.id = consumer_id or f"{socket.gethostname()}-{os.getpid()}"
        self.exit_after_seal = exit_after_seal
        self.idle_exit_s = idle_exit_s
        self.counters = Counters()
        self._batch: list[dict[str, Any]] = []
        self._published: list[float | None] = []  # the open batch's profile events' publish times
        self._batch_opened = 0.0
        self._last_tag: int | None = None
        self._sealed_ids: dict[int, set[str]] = {}
        self._seq = 0
        # A batch file is never replaced: the same consumer id started again (a restarted pod, the
        # next day's `features.play`) counts its batches from 1 again, and a name without this
        # process's token once overwrote the earlier run's feature logs (notebook 08 found it).
        self._run = uuid.uuid4().hex[:8]
        self._stopping = False

    # -- the broker ---------------------------------------------------------------------------
    def _connect(self) -> pika.adapters.blocking_connection.BlockingChannel:
        params = pika.URLParameters(self.stream.broker_url)
        params.heartbeat = 30
        self._connection = pika.BlockingConnection(params)
        channel = self._connection.channel()
        declare_topology(channel, self.config)
        channel.confirm_delivery()  # dead letters and requeued seals are confirmed before acks
        channel.basic_qos(prefetch_count=self.stream.prefetch)
        return channel

    def stop(self) -> None:
        """Ends the loop after the current message (SIGTERM): the open batch is written and
        acknowledged first."""
        self._stopping = True

    def run(self, on_ready: Callable[[], None] | None = None) -> Counters:
        """Consumes until stopped, idle for idle_exit_s, or span exit_after_seal is sealed;
        reconnects when the broker goes away (messages not acknowledged are redelivered)."""
        while True:
            try:
                channel = self._connect()
                if on_ready:  # the queue exists and is bound: publishing may start
                    on_ready()
                    on_ready = None
                if self._consume(channel):
                    self._connection.close()
                    return self.counters
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed) as err:
                # What was not acknowledged on the lost channel will be redelivered: drop it.
                self._batch, self._published, self._last_tag = [], [], None
                if self._stopping:
                    return self.counters
                self.counters.reconnects += 1
                log.warning("%s: connection lost (%s); reconnecting", self.id, err)
                time.sleep(RECONNECT_DELAY_S)

    def _consume(self, channel) -> bool:
        idle_since = time.monotonic()
        for method, properties, body in channel.consume(
            self.stream.queue, inactivity_timeout=self.stream.flush_interval_s
        ):
            if method is None:
                self._flush(channel)
                if (
                    self._stopping
                    or (
                        self.idle_exit_s is not None
                        and time.monotonic() - idle_since > self.idle_exit_s
                    )
                    # another replica sealed the last span this one was asked to wait for
                    or (
                        self.exit_after_seal is not None
                        and self.lake.is_sealed(self.exit_after_seal)
                    )
                ):
                    channel.cancel()
                    return True
                continue
            idle_since = time.monotonic()
            self.counters.consumed += 1
            if self._handle(channel, method.delivery_tag, properties, body):
                channel.cancel()
                return True
            if self._stopping:
                self._flush(channel)
                channel.cancel()
                return True
        return False

    def _handle(self, channel, tag: int, properties, body: bytes) -> bool:
        """True when the consumer should exit (it sealed exit_after_seal)."""
        try:
            event = parse_event(body)
        except EventError as err:
            self._dead_letter(channel, body, str(err))
            self._last_tag = tag
            return False
        if event["type"] == "seal":
            self._flush(channel)
            return self._seal(channel, tag, event, properties)
        span = span_of(event["event_time"])
        if event["type"] in ("impression", "purchase") and self.lake.is_sealed(span):
            self._late(channel, body, event, span)
            self._last_tag = tag
            return False
        if event["type"] in VIEWS:
            published = (properties.headers or {}).get(PUBLISHED_AT_HEADER)
            self._published.append(float(published) if published else None)
        if not self._batch:
            self._batch_opened = time.monotonic()
        self._batch.append(event)
        self._last_tag = tag
        # Full, or its oldest message has waited flush_interval_s: what bounds the lag to the
        # online store when traffic is steady but slower than a batch per interval.
        if (
            len(self._batch) >= self.stream.batch_size
            or time.monotonic() - self._batch_opened >= self.stream.flush_interval_s
        ):
            self._flush(channel)
        return False

    def _dead_letter(self, channel, body: bytes, reason: str) -> None:
        channel.basic_publish(
            exchange="",
            routing_key=self.stream.dead_letter_queue,
            body=body,
            properties=pika.BasicProperties(
                delivery_mode=2, headers={"x-reason": reason, "x-consumer": self.id}
            ),
        )
        self.counters.dead_lettered += 1
        log.warning("%s: dead-lettered: %s", self.id, reason)

    def _late(self, channel, body: bytes, event: dict[str, Any], span: int) -> None:
        """An impression or purchase of a sealed span: a redelivered duplicate is dropped; one
        the span does not hold broke the shop's seal and is dead-lettered."""
        if span not in self._sealed_ids:
            self._sealed_ids[span] = self.lake.sealed_ids(span)
        if event["impression_id"] in self._sealed_ids[span]:
            self.counters.late_duplicates += 1
        else:
            self._dead_letter(channel, body, f"{event['type']}: span {span} is already sealed")

    # -- batches ------------------------------------------------------------------------------
    def _flush(self, channel) -> None:
        """Writes the open batch to the lake and the online store, then acknowledges it."""
        if self._batch:
            self._seq += 1
            batch_id = f"{self.id}-{self._run}-{self._seq:06d}-{self._last_tag}"
            by_kind: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
            for event in self._batch:
                kind = event["type"]
                key = (
                    kind,
                    span_of(event["event_time"]) if kind in ("impression", "purchase") else 0,
                )
                by_kind[key].append(event)
            for (kind, span), events in sorted(by_kind.items()):
                if kind in VIEWS:
                    frame = profile_frame(kind, events)
                    self.lake.log_features(feature_store.OFFLINE_DIRS[VIEWS[kind]], frame, batch_id)
                    feature_store.write_online(self.store, VIEWS[kind], frame)
                else:
                    self.lake.stage(span, kind, events, batch_id)
            self.counters.batches += 1
            visible = time.time()
            lags = [visible - t for t in self._published if t is not None]
            self.counters.online_lags_s += [round(lag, 4) for lag in lags[:LAG_SAMPLE]]
            self._batch, self._published = [], []
        if self._last_tag is not None:
            channel.basic_ack(self._last_tag, multiple=True)
            self._last_tag = None

    # -- sealing ------------------------------------------------------------------------------
    def _seal(self, channel, tag: int, event: dict[str, Any], properties) -> bool:
        span = event["span"]
        if not self.lake.is_sealed(span):
            impressions, dup_impressions = self.lake.staged(span, "impression")
            # A purchase is staged under the day it happened: within the attribution window,
            # so the impression's day or the next one.
            purchases, dup_purchases = self.lake.staged(span, "purchase", span + 1)
            unmatched = ~purchases["impression_id"].isin(impressions["impression_id"])
            purchases = purchases[~unmatched]
            headers = dict(properties.headers or {})
            first_seen = float(headers.get("x-first-seen", time.time()))
            complete = (
                len(impressions) >= event["impressions"] and len(purchases) >= event["purchases"]
            )
            waited = time.time() - first_seen
            if not complete and waited < self.stream.seal_timeout_s:
                # Some events are still in a batch of another consumer (or being redelivered):
                # back to the tail of the queue, tried again after the next messages.
                time.sleep(min(self.stream.flush_interval_s, 0.2))
                channel.basic_publish(
                    exchange="",
                    routing_key=self.stream.queue,
                    body=encode_event(event),
                    properties=pika.BasicProperties(
                        delivery_mode=2, headers={"x-first-seen": f"{first_seen:.3f}"}
                    ),
                )
                channel.basic_ack(tag)
                return False
            rows = self._joined(impressions, purchases)
            report = {
                "span": span,
                "rows": len(rows),
                "purchases": int(rows[contract.LABEL].sum()),
                "expected_impressions": event["impressions"],
                "expected_purchases": event["purchases"],
                "missing_impressions": max(event["impressions"] - len(impressions), 0),
                "missing_purchases": max(event["purchases"] - len(purchases), 0),
                # purchases of the two days whose impression this span does not hold (the next
                # day's own, or ones whose impression was lost)
                "purchases_of_other_impressions": int(unmatched.sum()),
                "redelivered_duplicates": dup_impressions + dup_purchases,
                "waited_s": round(waited, 1),
                "sealed_by": self.id,
            }
            self.lake.seal(span, rows, report)
            self.counters.sealed.append(span)
            log.info("%s: sealed span-%d: %s", self.id, span, report)
        channel.basic_ack(tag)
        return self.exit_after_seal is not None and span >= self.exit_after_seal

    def _joined(self, impressions: pd.DataFrame, purchases: pd.DataFrame) -> pd.DataFrame:
        """The training rows: each impression with its features as of its time (point in time,
        Feast's offline join) and its label."""
        entity = impressions.assign(
            event_timestamp=feature_store.event_timestamps(impressions["event_time"])
        )
        rows = feature_store.training_features(self.store, entity)
        rows[contract.LABEL] = rows["impression_id"].isin(purchases["impression_id"]).astype(int)
        return rows.sort_values(["event_time", "impression_id"], kind="stable")


def profile_frame(kind: str, events: list[dict[str, Any]]) -> pd.DataFrame:
    """Profile events as a feature view's rows (entity id, features, event_timestamp)."""
    frame = pd.DataFrame(events).drop(columns=["type", "schema_version"])
    frame["event_timestamp"] = feature_store.event_timestamps(frame.pop("event_time"))
    return frame


def declare_topology(channel, config: PipelineConfig) -> None:
    """The durable exchange the app publishes to, the consumers' queue bound to it, and the
    dead-letter queue; declaring is idempotent, so every publisher and consumer does it."""
    stream = config.stream
    channel.exchange_declare(stream.exchange, exchange_type="fanout", durable=True)
    channel.queue_declare(stream.queue, durable=True)
    channel.queue_bind(stream.queue, stream.exchange)
    channel.queue_declare(stream.dead_letter_queue, durable=True)
