"""The event contract: a good event parses to typed values; a bad one fails naming its field
(the text the consumer puts in the dead-letter reason), and never with another exception."""

import json

import pytest

from contract.events import (
    AFFINITY_FIELDS,
    EventError,
    encode_event,
    make_event,
    parse_event,
    span_of,
    span_start,
)

IMPRESSION = make_event(
    "impression",
    span_start(3) + 10.5,
    impression_id="s3-0",
    request_id="s3-r0",
    user_id="u1",
    product_id="p2",
    device="mobile",
    hour=0,
    referrer="email",
    country="DE",
    position=4,
)


def test_a_good_event_parses_to_typed_values_and_its_span():
    event = parse_event(encode_event({**IMPRESSION, "position": 4.0}))
    assert event == {**IMPRESSION, "position": 4}
    assert isinstance(event["position"], int)
    assert span_of(event["event_time"]) == 3
    assert span_of(span_start(3)) == 3 and span_of(span_start(4) - 0.001) == 3


def test_every_user_event_carries_all_twelve_affinities():
    user = make_event(
        "user",
        span_start(1),
        user_id="u1",
        user_avg_price=30.5,
        days_since_last_visit=2,
        **dict.fromkeys(AFFINITY_FIELDS, 0.1),
    )
    assert parse_event(encode_event(user))["affinity_books"] == 0.1
    del user["affinity_books"]
    with pytest.raises(EventError, match=r"user: missing field\(s\) \['affinity_books'\]"):
        parse_event(encode_event(user))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"device": "smart_fridge"}, "impression.device: 'smart_fridge' is not one of"),
        ({"hour": 24}, r"impression.hour: 24 is outside \[0, 23\]"),
        ({"position": 2.5}, "impression.position: expected an integer"),
        ({"position": True}, "impression.position: expected a number"),
        ({"user_id": ""}, "impression.user_id: expected a non-empty string"),
        ({"event_time": "yesterday"}, "impression.event_time: expected a number"),
        ({"event_time": float("nan")}, "impression.event_time: expected a finite number"),
        ({"schema_version": 2}, "schema_version: 2, this consumer reads 1"),
        ({"type": "refund"}, "type: 'refund' is not one of"),
        ({"coupon": "X"}, r"impression: unknown field\(s\) \['coupon'\]"),
    ],
)
def test_a_bad_field_is_named(change, reason):
    with pytest.raises(EventError, match=reason):
        parse_event(json.dumps({**IMPRESSION, **change}))


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"[1, 2]", b"null", b'"text"'])
def test_a_body_that_is_not_an_event_object_is_an_event_error(body):
    with pytest.raises(EventError, match="message: "):
        parse_event(body)
