"""The shop's app playing a day through the broker: the events of a span, and their publisher.

`day_events` turns a span of the batch simulator's traffic into what the app would emit: a
`user` event at the start of every visit (the CRM's aggregates), a `product` snapshot of the
catalog at the day's start and a `product` event whenever a product goes on or off sale, the
visit's `impression` events, a `purchase` event for each impression that led to one (within the
attribution window), and a closing `seal`. It also returns the training rows the lake must end up
with (the point-in-time join of those events, labelled), and the span's report with its truth, so
a stream-fed lake keeps a Bayes ceiling.

Users, products, traffic mix and drift come from simulator/generate.py's functions; what is new
is the time structure: visits on a 10-second grid (one user is never in two visits at once, so
"the user event before the impression" is always its own visit's) and sale windows that open and
close during the day (an alternating process, on sale ON_SALE_RATE of the time, as in the batch
spans).

`publish` sends events to a RabbitMQ exchange with publisher confirms. pika's BlockingChannel
waits for each confirm before the next message (about 800 events/s on loopback); this publisher
keeps a window of unconfirmed messages open on pika's SelectConnection instead (RabbitMQ's
"streaming confirms"), and returns only when the broker has confirmed every message.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pika

import contract
from contract.events import (
    AFFINITY_FIELDS,
    ATTRIBUTION_WINDOW_S,
    DAY_S,
    FIELDS,
    PUBLISHED_AT_HEADER,
    encode_event,
    make_event,
    span_start,
)
from simulator.generate import (
    ON_SALE_RATE,
    Shop,
    SimulationOptions,
    SpanReport,
    build_shop,
    distinct_per_page,
    noisy_affinity,
    request_ids,
    sample_devices,
    sample_hours,
    sample_recency,
    sample_referrers,
    sample_users,
    shown_price,
    truth_for,
    write_manifest,
)
from simulator.outcomes import PURCHASE_DELAY_MEAN_S
from simulator.truth import bayes_auc, purchase_probability

# A visit shows 1..MAX_SHOWN products, one a second after the user event, inside its 10 s slot.
MAX_SHOWN = 8
SLOT_S = 10
SLOTS_PER_HOUR = 3600 // SLOT_S
# Mean length of a sale; off-sale stretches last as long as keeps a product on sale ON_SALE_RATE of
# the time: a cycle of 12 h, so a product goes on and off sale about twice a day.
SALE_MEAN_S = 2.4 * 3600
OFF_SALE_MEAN_S = SALE_MEAN_S * (1.0 - ON_SALE_RATE) / ON_SALE_RATE
# Events at the same second sort in this order: a visit's profile and a price change count for the
# impression at that second (point in time: the latest event with event_time <= the impression's).
TYPE_ORDER = {
    name: rank for rank, name in enumerate(("user", "product", "impression", "purchase", "seal"))
}
# The random stream of a span's events, apart from the batch span's ([seed, span]) and its outcome
# feed's ([seed, span, 1]).
STREAM_KEY = 2


@dataclass
class DayEvents:
    """One span as the app emits it, and what the lake must make of it."""

    span: int
    events: list[dict[str, Any]]  # sorted by event_time, ending with the span's seal
    rows: pd.DataFrame  # contract.COLUMNS, sorted by impression_id: the sealed span
    report: SpanReport
    counts: dict[str, int] = field(default_factory=dict)  # events per type


@dataclass(frozen=True)
class _Visits:
    user: np.ndarray
    offset: np.ndarray  # seconds after the span's start of the visit's user event
    shown: np.ndarray  # products shown
    device: np.ndarray
    referrer: np.ndarray
    recency: np.ndarray
    affinity: np.ndarray  # (visits, categories), rounded as published


def _visits(shop: Shop, rows: int, drift: float, rng: np.random.Generator) -> _Visits:
    """Visits showing exactly `rows` products in all (the last one cut short).

    Each visit takes one 10 s slot in its hour (hours drawn as in the batch spans); a second visit
    of the same user in a taken slot is dropped and more are drawn, so a user's visits never
    overlap."""
    users, slots, shown = [], [], []
    taken = np.empty(0, dtype=np.int64)
    total = 0
    while total < rows:
        n = int((rows - total) / ((1 + MAX_SHOWN) / 2) * 1.05) + 16
        user = sample_users(shop, n, rng)
        slot = sample_hours(n, rng) * SLOTS_PER_HOUR + rng.integers(0, SLOTS_PER_HOUR, size=n)
        count = rng.integers(1, MAX_SHOWN + 1, size=n)
        key = user.astype(np.int64) * (24 * SLOTS_PER_HOUR) + slot
        _, first = np.unique(key, return_index=True)
        keep = np.zeros(n, dtype=bool)
        keep[first] = True
        keep &= ~np.isin(key, taken)
        user, slot, count, key = user[keep], slot[keep], count[keep], key[keep]
        ends = total + np.cumsum(count)
        last = int(np.searchsorted(ends, rows))  # the visit that reaches `rows`, if any
        if last < len(count):
            count[last] -= int(ends[last] - rows)
            keep = slice(0, last + 1)
            user, slot, count, key = user[keep], slot[keep], count[keep], key[keep]
        users.append(user)
        slots.append(slot)
        shown.append(count)
        taken = np.concatenate([taken, key])
        total += int(count.sum())
    user, slot, count = np.concatenate(users), np.concatenate(slots), np.concatenate(shown)
    order = np.argsort(slot, kind="stable")
    user, slot, count = user[order], slot[order], count[order]
    offset = slot * SLOT_S + rng.integers(0, SLOT_S - count)  # last impression within the slot
    affinity = noisy_affinity(shop.user_affinity[user], rng)
    return _Visits(
        user=user,
        offset=offset,
        shown=count,
        device=sample_devices(shop, user, drift, rng),
        referrer=sample_referrers(len(user), drift, rng),
        recency=sample_recency(len(user), rng),
        affinity=np.round(affinity, 4),
    )


def _sale_flips(n_products: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each product's on-sale status at the day's start, and the seconds (after the start, strictly
    increasing per product, inf past the day) at which it flips.

    An alternating process with exponential stretches, started in its stationary state, so a
    product is on sale ON_SALE_RATE of the time at every hour of the day."""
    on_sale = rng.random(n_products) < ON_SALE_RATE
    flips = np.empty((n_products, 0))
    end = np.zeros(n_products)
    while (end < DAY_S).any():
        k = flips.shape[1]
        state = on_sale[:, None] ^ (np.arange(k, k + 16) % 2 == 1)  # the stretch's status
        stretch = rng.exponential(1.0, size=(n_products, 16))
        stretch *= np.where(state, SALE_MEAN_S, OFF_SALE_MEAN_S)
        block = end[:, None] + np.cumsum(stretch, axis=1)
        flips, end = np.concatenate([flips, block], axis=1), block[:, -1]
    # Whole seconds, at least one after the start and one apart (one event per product and second).
    steps = np.arange(flips.shape[1])
    seconds = np.maximum.accumulate(np.maximum(np.ceil(flips), 1.0) - steps, axis=1) + steps
    return on_sale, np.where(seconds < DAY_S, seconds, np.inf)


def _catalog_at(
    products: np.ndarray, offsets: np.ndarray, start_on_sale: np.ndarray, flips: np.ndarray
) -> np.ndarray:
    """The on-sale status of each (product, second) pair: the start status, flipped once for every
    flip at or before that second."""
    key_span = DAY_S + 1
    rows, cols = np.nonzero(np.isfinite(flips))
    keys = rows.astype(np.int64) * key_span + flips[rows, cols].astype(np.int64)  # sorted
    base = products.astype(np.int64) * key_span
    flipped = np.searchsorted(keys, base + offsets, side="right") - np.searchsorted(keys, base)
    return (start_on_sale[products] ^ (flipped % 2 == 1)).astype(np.int64)


def day_events(options: SimulationOptions, span: int, shop: Shop | None = None) -> DayEvents:
    """The span's events, the rows the lake must seal and the span's report; deterministic in
    (seed, span). The span has exactly options.rows_per_span impressions."""
    if options.corrupt_for(span) > 0:
        raise ValueError(
            "corrupt_fraction: the stream publishes valid events only (a poison message is the "
            "consumer's fault tests' subject); set corrupt_fraction=0"
        )
    shop = shop or build_shop(options)
    drift = options.drift_for(span)
    label_shift = options.label_shift_for(span)
    truth = truth_for(drift, label_shift)
    rng = np.random.default_rng([options.seed, span, STREAM_KEY])
    start = int(span_start(span))
    n = options.rows_per_span

    visits = _visits(shop, n, drift, rng)
    start_on_sale, flips = _sale_flips(len(shop.product_popularity), rng)
    # Impressions: a visit's j-th product j + 1 s after its user event, at distinct positions;
    # numbered in time order.
    visit = np.repeat(np.arange(len(visits.user)), visits.shown)
    j = np.arange(n) - np.repeat(np.cumsum(visits.shown) - visits.shown, visits.shown)
    offset = visits.offset[visit] + 1 + j
    in_time = np.argsort(offset, kind="stable")
    visit, j, offset = visit[in_time], j[in_time], offset[in_time]
    low, high = contract.POSITIONS
    shuffled = np.argsort(rng.random((len(visits.user), high - low + 1)), axis=1)
    position = shuffled[visit, j] + low
    product = distinct_per_page(shop, visit, rng)  # no product twice in one visit
    on_sale = _catalog_at(product, offset, start_on_sale, flips)
    user = visits.user[visit]
    category = shop.product_category[product]
    rows = pd.DataFrame(
        {
            "impression_id": [f"s{span}-{i}" for i in range(n)],
            "request_id": request_ids(span, visit),  # a visit is one page view
            "user_id": [f"u{u}" for u in user],
            "product_id": [f"p{p}" for p in product],
            "category": np.asarray(contract.CATEGORIES)[category],
            "brand": np.asarray(contract.BRANDS)[shop.product_brand[product]],
            "price": np.round(shown_price(shop, product, on_sale, drift), 2),
            "on_sale": on_sale,
            "rating": np.round(shop.product_rating[product], 1),
            "user_avg_price": shop.user_avg_price[user],
            "user_category_affinity": visits.affinity[visit, category],
            "days_since_last_visit": visits.recency[visit],
            "device": np.asarray(contract.DEVICES)[visits.device[visit]],
            "hour": offset // 3600,
            "referrer": np.asarray(contract.REFERRERS)[visits.referrer[visit]],
            "country": np.asarray(contract.COUNTRIES)[shop.user_country[user]],
            "position": position,
        }
    )
    labels = (rng.random(n) < purchase_probability(rows, truth)).astype(np.int64)
    rows[contract.LABEL] = labels
    bought = np.flatnonzero(labels)
    delay = rng.exponential(PURCHASE_DELAY_MEAN_S, size=len(bought))
    delay = np.clip(np.ceil(delay), 1, ATTRIBUTION_WINDOW_S - 1)

    events, times, ranks = [], [], []

    def add(kind: str, at: np.ndarray, fields: dict[str, list]) -> None:
        names, columns = list(fields), list(fields.values())
        stamps = (start + np.asarray(at, dtype=np.float64)).tolist()
        for t, values in zip(stamps, zip(*columns, strict=True), strict=True):
            events.append(make_event(kind, t, **dict(zip(names, values, strict=True))))
        times.extend(stamps)
        ranks.extend([TYPE_ORDER[kind]] * len(stamps))

    add(
        "user",
        visits.offset,
        {
            "user_id": [f"u{u}" for u in visits.user],
            "user_avg_price": shop.user_avg_price[visits.user].tolist(),
            "days_since_last_visit": visits.recency.tolist(),
            **{name: visits.affinity[:, c].tolist() for c, name in enumerate(AFFINITY_FIELDS)},
        },
    )
    # The catalog: every product at the day's start, then each product at each of its flips.
    changed, nth = np.nonzero(np.isfinite(flips))
    catalog_product = np.concatenate([np.arange(len(start_on_sale)), changed])
    catalog_offset = np.concatenate([np.zeros(len(start_on_sale)), flips[changed, nth]])
    catalog_on_sale = np.concatenate(
        [start_on_sale, start_on_sale[changed] ^ (nth % 2 == 0)]
    ).astype(np.int64)
    add(
        "product",
        catalog_offset,
        {
            "product_id": [f"p{p}" for p in catalog_product],
            "category": _names(contract.CATEGORIES, shop.product_category[catalog_product]),
            "brand": _names(contract.BRANDS, shop.product_brand[catalog_product]),
            "price": np.round(
                shown_price(shop, catalog_product, catalog_on_sale, drift), 2
            ).tolist(),
            "on_sale": catalog_on_sale.tolist(),
            "rating": np.round(shop.product_rating[catalog_product], 1).tolist(),
            "popularity": np.round(shop.product_popularity[catalog_product], 4).tolist(),
        },
    )
    add(
        "impression",
        offset,
        {name: rows[name].tolist() for name in FIELDS["impression"]},  # all are row columns
    )
    add(
        "purchase",
        offset[bought] + delay,
        {"impression_id": rows["impression_id"].to_numpy()[bought].tolist()},
    )
    seal_at = span_start(span + 1) + ATTRIBUTION_WINDOW_S - start
    add("seal", [seal_at], {"span": [span], "impressions": [n], "purchases": [len(bought)]})
    order = np.lexsort((np.asarray(ranks), np.asarray(times)))  # stable: time, then type
    events = [events[i] for i in order]

    auc = bayes_auc(rows, labels, truth)
    report = SpanReport(
        span=span,
        path="",
        rows=n,
        purchase_rate=float(labels.mean()),
        bayes_auc=auc,
        drift=drift,
        corrupt_rows=0,
        label_shift=label_shift,
        truth=truth.to_dict(),
    )
    rows = rows.sort_values("impression_id", kind="stable", ignore_index=True)
    counts = {
        "user": len(visits.user),
        "product": len(catalog_product),
        "impression": n,
        "purchase": len(bought),
        "seal": 1,
    }
    return DayEvents(
        span=span, events=events, rows=rows[list(contract.COLUMNS)], report=report, counts=counts
    )


def _names(values: Sequence[str], index: np.ndarray) -> list[str]:
    return np.asarray(values)[index].tolist()


def write_stream_manifest(
    root: str | Path, options: SimulationOptions, reports: list[SpanReport]
) -> Path:
    """The batch simulator's manifest (simulator/generate.py), so truth_of_span and the run
    summary's ceiling work on a stream-fed lake; a report's path is where the consumer seals the
    span."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for report in reports:
        report.path = report.path or str(root / f"span-{report.span}" / "impressions.csv")
    return write_manifest(root, options, reports)


# --- publishing ----------------------------------------------------------------------------------

PUBLISH_WINDOW = 1000  # unconfirmed messages in flight (measured: 1000 is past the knee)
PROGRESS_EVERY_S = 5.0


class PublishError(RuntimeError):
    """The broker refused, returned or lost a message, or the connection failed."""


def _redacted(url: str) -> str:
    """The URL without its password (for messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _Confirmed:
    """Delivery tags the broker confirmed (1, 2, ... in publish order; an ack may cover all tags up
    to its own)."""

    def __init__(self) -> None:
        self.below = 1  # every tag below this is confirmed
        self.singles: set[int] = set()  # confirmed tags above `below`

    def ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.below = max(self.below, tag + 1)
            self.singles = {t for t in self.singles if t >= self.below}
        else:
            self.singles.add(tag)
        while self.below in self.singles:
            self.singles.remove(self.below)
            self.below += 1

    @property
    def count(self) -> int:
        return self.below - 1 + len(self.singles)


class _Publisher:
    """Publishes bodies in order on one channel in confirm mode, at most `window` unconfirmed and
    at most `rate` per second; the ioloop stops when every message is confirmed or on the first
    failure."""

    def __init__(
        self,
        bodies: list[tuple[str, bytes]],
        url: str,
        exchange: str,
        rate: float | None,
        window: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.bodies, self.url, self.exchange = bodies, url, exchange
        self.rate, self.window, self.progress = rate, window, progress
        self.sent = 0
        self.confirmed = _Confirmed()
        self.error: str | None = None
        self.returned = 0
        self.done = False
        self.timer_set = False
        self.started = 0.0
        self.reported = (0, 0.0)  # (count, time) of the last progress call
        self.channel: Any = None

    def run(self) -> int:
        self.connection = pika.SelectConnection(
            pika.URLParameters(self.url),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )
        self.connection.ioloop.start()
        if self.error:
            raise PublishError(
                f"{self.error} ({self.confirmed.count:,} of {len(self.bodies):,} events confirmed"
                + (f", {self.returned:,} returned" if self.returned else "")
                + f"; broker {_redacted(self.url)}, exchange {self.exchange!r})"
            )
        return self.confirmed.count

    def _fail(self, error: str) -> None:
        self.error = self.error or error
        if self.connection.is_open:
            self.connection.close()

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, connection: Any, err: BaseException) -> None:
        self.error = f"cannot connect: {err!r}"
        connection.ioloop.stop()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        if not self.done and not self.error:
            self.error = f"connection closed: {reason!r}"
        connection.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.exchange_declare(
            self.exchange, exchange_type="fanout", durable=True, callback=self._on_declared
        )

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if not self.done:
            self._fail(f"channel closed by the broker: {reason!r}")

    def _on_declared(self, _frame: Any) -> None:
        self.channel.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode
        )

    def _on_confirm_mode(self, _frame: Any) -> None:
        self.started = time.monotonic()
        self.reported = (0, self.started)
        self._pump()

    def _on_return(self, _channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        self.returned += 1  # the broker acks a returned message too, undelivered
        self._fail(
            f"message returned unroutable ({method.reply_code} {method.reply_text}): no queue is "
            "bound to the exchange; start the consumer (it declares and binds its queue) first"
        )

    def _pump(self) -> None:
        """Publishes what the window and the rate allow; when the rate holds it back, comes back
        when the next message is due (a timer, no busy wait)."""
        self.timer_set = False
        if self.error or self.done:
            return
        unconfirmed = self.sent - self.confirmed.count
        allowed = min(self.window - unconfirmed, len(self.bodies) - self.sent)
        if self.rate:
            # Message k (from 0) is due `k / rate` seconds after the start.
            due = int((time.monotonic() - self.started) * self.rate) + 1 - self.sent
            if due < allowed:
                next_due = self.started + (self.sent + max(due, 0)) / self.rate
                self.timer_set = True
                self.connection.ioloop.call_later(
                    max(next_due - time.monotonic(), 0.001), self._pump
                )
            allowed = min(allowed, due)
        for _ in range(max(allowed, 0)):
            kind, body = self.bodies[self.sent]
            self.channel.basic_publish(
                self.exchange, kind, body, self._properties(kind), mandatory=True
            )
            self.sent += 1

    def _properties(self, kind: str) -> Any:
        # x-published-at: the consumer measures publish -> online-store lag from it
        # (benchmarks/stream.py); wall clock, as both ends share this machine's.
        return pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            type=kind,
            headers={PUBLISHED_AT_HEADER: f"{time.time():.6f}"},
        )

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self._fail(f"the broker nacked delivery tag {method.delivery_tag}")
            return
        self.confirmed.ack(method.delivery_tag, method.multiple)
        count, total, now = self.confirmed.count, len(self.bodies), time.monotonic()
        if self.progress and (
            count == total
            or count - self.reported[0] >= total / 10
            or now - self.reported[1] >= PROGRESS_EVERY_S
        ):
            self.reported = (count, now)
            self.progress(count, total)
        if count == total and not self.error:
            self.done = True
            self.connection.close()
        elif not self.timer_set:
            self._pump()


def publish(
    events: Sequence[Mapping[str, Any]],
    url: str,
    exchange: str,
    *,
    rate: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    window: int = PUBLISH_WINDOW,
) -> int:
    """Publishes `events` in order to the durable fanout `exchange` as persistent JSON messages
    (routing key and AMQP type = the event type) and returns the number the broker confirmed: all
    of them, or PublishError says what failed and how many were confirmed before.

    Publisher confirms with up to `window` messages unconfirmed; `mandatory`, so a message no
    queue takes is an error, not a silent loss. `rate` caps events per second; `progress(confirmed,
    total)` is called about every 10 % and at least every 5 s while confirms arrive."""
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not events:
        return 0
    bodies = [(str(event["type"]), encode_event(event)) for event in events]
    return _Publisher(bodies, url, exchange, rate, window, progress).run()
