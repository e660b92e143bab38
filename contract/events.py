"""The shop's event contract: what the app publishes to the broker, one JSON object per message.

The app knows ids and the request's context, nothing more; the aggregates a row of the training
data carries come from the profile events (`user`, `product`) through the feature store. Five
types, every one with `type`, `schema_version` and `event_time` (UTC epoch seconds):

    user        a user's profile at the start of a visit (the CRM's aggregates)
    product     a product's catalog entry whenever it changes (price, sale)
    impression  one product shown to one user in one context, on one page (request_id)
    purchase    an impression that led to a purchase, within the attribution window
    seal        the shop's word that every event of a day (span) has been published

`parse_event` turns a message body into a typed dict or raises `EventError` whose text names the
field: the consumer sends such a message to the dead-letter queue with that text as the reason.
Nothing here imports the rest of the repo.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from contract.columns import (
    BRANDS,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    HOURS,
    POSITIONS,
    RATING,
    REFERRERS,
)

SCHEMA_VERSION = 1
DAY_S = 24 * 3600
# Span N is the UTC day EPOCH_S + (N - 1) days (2026-01-01 is span 1).
EPOCH_S = 1_767_225_600
# A purchase counts for an impression when it comes within this window (simulator/outcomes.py).
ATTRIBUTION_WINDOW_S = 24 * 3600

# A message header the app stamps with its wall-clock publish time (seconds): the consumer's
# publish -> online-store lag is measured from it (benchmarks/stream.py). Not part of the event.
PUBLISHED_AT_HEADER = "x-published-at"

AFFINITY_FIELDS: tuple[str, ...] = tuple(f"affinity_{c}" for c in CATEGORIES)

_STR, _INT, _FLOAT = "str", "int", "float"
# Field -> (kind, allowed values or (low, high) or None); `event_time` and `type` are common.
FIELDS: dict[str, dict[str, tuple[str, Any]]] = {
    "user": {
        "user_id": (_STR, None),
        "user_avg_price": (_FLOAT, (0.0, math.inf)),
        "days_since_last_visit": (_INT, (0, math.inf)),
        **{name: (_FLOAT, (0.0, 1.0)) for name in AFFINITY_FIELDS},
    },
    "product": {
        "product_id": (_STR, None),
        "category": (_STR, CATEGORIES),
        "brand": (_STR, BRANDS),
        "price": (_FLOAT, (0.0, math.inf)),
        "on_sale": (_INT, (0, 1)),
        "rating": (_FLOAT, RATING),
        "popularity": (_FLOAT, (0.0, math.inf)),
    },
    "impression": {
        "impression_id": (_STR, None),
        "request_id": (_STR, None),
        "user_id": (_STR, None),
        "product_id": (_STR, None),
        "device": (_STR, DEVICES),
        "hour": (_INT, HOURS),
        "referrer": (_STR, REFERRERS),
        "country": (_STR, COUNTRIES),
        "position": (_INT, POSITIONS),
    },
    "purchase": {"impression_id": (_STR, None)},
    "seal": {
        "span": (_INT, (1, math.inf)),
        "impressions": (_INT, (0, math.inf)),
        "purchases": (_INT, (0, math.inf)),
    },
}
EVENT_TYPES: tuple[str, ...] = tuple(FIELDS)
# The profile events' features as the feature store keeps them (every field but the entity id):
# the feature views (features/definitions.py) and the transformer's reads (serving/) share them.
USER_PROFILE_FEATURES: tuple[str, ...] = tuple(n for n in FIELDS["user"] if n != "user_id")
PRODUCT_CATALOG_FEATURES: tuple[str, ...] = tuple(n for n in FIELDS["product"] if n != "product_id")


class EventError(ValueError):
    """A message outside the contract; the text names the field (the dead-letter reason)."""


def span_of(event_time: float) -> int:
    """The span (UTC day, 1-based from EPOCH_S) an event time falls in."""
    return int((event_time - EPOCH_S) // DAY_S) + 1


def span_start(span: int) -> float:
    return float(EPOCH_S + (span - 1) * DAY_S)


def _checked(event_type: str, name: str, value: Any, kind: str, allowed: Any) -> Any:
    where = f"{event_type}.{name}"
    if kind == _STR:
        if not isinstance(value, str) or not value:
            raise EventError(f"{where}: expected a non-empty string, got {value!r}")
        if allowed is not None and value not in allowed:
            raise EventError(f"{where}: {value!r} is not one of the contract's values")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventError(f"{where}: expected a number, got {value!r}")
    if kind == _INT:
        if isinstance(value, float) and not value.is_integer():
            raise EventError(f"{where}: expected an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise EventError(f"{where}: expected a finite number, got {value!r}")
    low, high = allowed
    if not low <= value <= high:
        raise EventError(f"{where}: {value!r} is outside [{low}, {high}]")
    return value


def validate_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with its values checked and typed; EventError names the first bad field."""
    if not isinstance(event, Mapping):
        raise EventError(f"message: expected a JSON object, got {type(event).__name__}")
    event_type = event.get("type")
    if event_type not in FIELDS:
        raise EventError(f"type: {event_type!r} is not one of {list(EVENT_TYPES)}")
    version = event.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EventError(f"schema_version: {version!r}, this consumer reads {SCHEMA_VERSION}")
    spec = FIELDS[event_type]
    missing = sorted(set(spec) - set(event)) + ([] if "event_time" in event else ["event_time"])
    if missing:
        raise EventError(f"{event_type}: missing field(s) {missing}")
    unknown = sorted(set(event) - set(spec) - {"type", "schema_version", "event_time"})
    if unknown:
        raise EventError(f"{event_type}: unknown field(s) {unknown}")
    checked: dict[str, Any] = {"type": event_type, "schema_version": version}
    checked["event_time"] = _checked(
        event_type, "event_time", event["event_time"], _FLOAT, (0.0, math.inf)
    )
    for name, (kind, allowed) in spec.items():
        checked[name] = _checked(event_type, name, event[name], kind, allowed)
    return checked


def parse_event(body: bytes | str) -> dict[str, Any]:
    """A message body as a validated event; EventError says what is wrong (never another error)."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EventError(f"message: not JSON ({err})") from None
    return validate_event(event)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The wire form the publisher sends (compact JSON, keys sorted so equal events are equal
    bytes)."""
    return json.dumps(dict(event), separators=(",", ":"), sort_keys=True).encode()


def make_event(event_type: str, event_time: float, **fields: Any) -> dict[str, Any]:
    """An event of the current schema version (not validated: the consumer does that)."""
    return {
        "type": event_type,
        "schema_version": SCHEMA_VERSION,
        "event_time": event_time,
        **fields,
    }
