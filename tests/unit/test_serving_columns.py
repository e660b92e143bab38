"""The model server's column-wise validation (serving/contract.py): for every kind of bad value
it answers the error the value-by-value path gives for the first offending value, word for word;
good columns become numpy arrays of the contract's types; numpy columns flow through the
batcher and the request log as plain JSON values."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.batcher import MicroBatcher, merge
from serving.contract import Contract, RequestError
from serving.request_log import RequestLog, read_log

CONTRACT = Contract(
    features={
        "user_id": {"type": "string", "required": True},
        "device": {"type": "string", "required": True, "values": ["mobile", "desktop", "tablé"]},
        "code": {"type": "string", "required": True, "max_length": 3},
        "hour": {"type": "int", "required": True, "min": 0, "max": 23},
        "count": {"type": "int", "required": True},
        "price": {"type": "float", "required": True, "min": 0.01},
        "rating": {"type": "float", "required": True, "min": 1.0, "max": 5.0},
        "score": {"type": "float", "required": True},
    },
    signature="serving_raw",
    output="purchase_probability",
    max_instances=50,
    max_string_length=8,
)
ROW = {"user_id": "u1", "device": "mobile", "code": "abc", "hour": 13, "count": 7, "price": 9.5,
       "rating": 4.5, "score": -2.0, "impression_id": "i1"}  # fmt: skip
KINDS = {name: spec["type"] for name, spec in CONTRACT.features.items()}


# -- the reference: the per-value path as it was, one _value call per value -------------------
def per_value_columns(contract: Contract, inputs: dict) -> tuple[dict, list | None]:
    """What from_columns answered before it was column-wise (after its shape checks)."""
    columns = {
        name: [contract._value(name, v, row) for row, v in enumerate(inputs[name])]
        for name in contract.features
    }
    ids = None
    if contract.id_field and contract.id_field in inputs:
        ids = [contract._id(v, row) for row, v in enumerate(inputs[contract.id_field])]
    return columns, ids


def per_value_rows(contract: Contract, instances: list) -> tuple[dict, list | None]:
    """What from_instances answered before it was column-wise (after its size check)."""
    columns: dict[str, list] = {name: [] for name in contract.features}
    ids = []
    for row, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RequestError(f"instance {row}: expected an object of features")
        contract._check_names_row(instance, row)
        for name in contract.features:
            columns[name].append(contract._value(name, instance.get(name), row))
        ids.append(contract._id(instance.get(contract.id_field), row))
    return columns, ids


def outcome(call):
    try:
        return "ok", call()
    except RequestError as err:
        return "error", (str(err), err.status)


def assert_same(got, expected):
    """Both raised the same error, or both returned the same columns (new: typed arrays)."""
    assert got[0] == expected[0], (got, expected)
    if got[0] == "error":
        assert got[1] == expected[1]
        return
    (columns, ids), (ref_columns, ref_ids) = got[1], expected[1]
    assert ids == ref_ids
    for name, ref in ref_columns.items():
        column = columns[name]
        assert isinstance(column, np.ndarray) and column.ndim == 1
        values = [v.decode() if isinstance(v, bytes) else v for v in column.tolist()]
        assert values == ref, name
        assert [type(v) for v in values] == [type(v) for v in ref], name
        kind = KINDS[name]
        assert column.dtype == {"string": object, "int": np.int64}.get(kind, column.dtype)
        if kind == "float":
            assert column.dtype in (np.float32, np.float64)


def columns_of(rows: list[dict]) -> dict[str, list]:
    return {name: [row.get(name) for row in rows] for name in {n for r in rows for n in r}}


BAD = [  # (field, value) for each kind of value some check refuses
    ("user_id", None),
    ("user_id", 3),
    ("user_id", True),
    ("user_id", ["u"]),
    ("user_id", 1.5),
    ("user_id", "u" * 9),
    ("device", "phone"),
    ("device", "m" * 10**5),
    ("device", 7),
    ("code", "abcd"),
    ("code", ""),
    ("hour", None),
    ("hour", "13"),
    ("hour", True),
    ("hour", False),
    ("hour", 13.5),
    ("hour", float("nan")),
    ("hour", float("inf")),
    ("hour", 24),
    ("hour", -1),
    ("hour", 2**63),
    ("hour", -(2**63) - 1),
    ("hour", 2**64),
    ("hour", {"a": 1}),
    ("hour", 23.0),
    ("count", 2**63 - 1),
    ("count", -(2**63)),
    ("count", 2**63),
    ("count", 1e19),
    ("count", -0.5),
    ("price", None),
    ("price", "9.5"),
    ("price", True),
    ("price", 0.0),
    ("price", 0.00999),
    ("price", float("nan")),
    ("price", float("inf")),
    ("price", float("-inf")),
    ("price", 1e39),
    ("price", 3.5e38),
    ("price", 10**400),
    ("price", 10**39),
    ("price", 3),
    ("price", [1.0]),
    ("rating", 5.000001),
    ("rating", 0.999),
    ("rating", 5),
    ("rating", 1),
    ("score", -1e39),
    ("score", 3.4028234663852886e38),
    ("score", -(10**38)),
    ("impression_id", 7),
    ("impression_id", "i" * 9),
    ("impression_id", None),
    ("impression_id", b"i"),
]  # fmt: skip  (some are good values next to the limits: both paths must accept them alike)


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r:.20}" for f, v in BAD])
@pytest.mark.parametrize("at", [0, 2, 4])
def test_each_bad_value_gets_the_per_value_error_at_any_position(field, value, at):
    rows = [dict(ROW, impression_id=f"i{i}") for i in range(5)]
    rows[at][field] = value
    inputs = columns_of(rows)
    assert_same(outcome(lambda: CONTRACT.from_columns(inputs)),
                outcome(lambda: per_value_columns(CONTRACT, inputs)))  # fmt: skip
    assert_same(outcome(lambda: CONTRACT.from_instances(rows)),
                outcome(lambda: per_value_rows(CONTRACT, rows)))  # fmt: skip


def test_the_first_bad_value_is_the_one_named_columns_in_order_rows_in_order():
    rows = [dict(ROW) for _ in range(6)]
    rows[4]["hour"] = 99  # an earlier row, a later field
    rows[1]["price"] = -1.0
    rows[3]["price"] = "x"
    rows[2]["device"] = "phone"
    inputs = columns_of(rows)
    with pytest.raises(RequestError) as columns_err:  # columns: fields in the contract's order
        CONTRACT.from_columns(inputs)
    assert str(columns_err.value) == "field 'device' (instance 2): 'phone' is not in the domain " \
        "(mobile, desktop, tablé)"  # fmt: skip
    assert_same(("error", (str(columns_err.value), 400)),
                outcome(lambda: per_value_columns(CONTRACT, inputs)))  # fmt: skip
    with pytest.raises(RequestError) as rows_err:  # rows: the first row with a bad value
        CONTRACT.from_instances(rows)
    assert str(rows_err.value).startswith("field 'price' (instance 1): -1.0 is below")
    shuffled = [dict(rows[0], colour="red"), *rows[1:]]  # a bad field name in an earlier row
    with pytest.raises(RequestError, match=r"^instance 0: unknown field\(s\) \['colour'\]"):
        CONTRACT.from_instances(shuffled)


def test_good_columns_become_arrays_of_the_contract_types():
    rows = [dict(ROW, hour=h, price=p) for h, p in ((0, 1), (23, 2.5), (7, 10**20))]
    columns, ids = CONTRACT.from_columns(columns_of(rows))
    assert {n: c.dtype for n, c in columns.items()} == {
        "user_id": object, "device": object, "code": object, "hour": np.int64, "count": np.int64,
        "price": np.float64, "rating": np.float64, "score": np.float64,
    }  # fmt: skip
    assert columns["price"].tolist() == [1.0, 2.5, 1e20] and columns["hour"].tolist() == [0, 23, 7]
    assert ids == ["i1"] * 3
    assert {type(v) for v in columns["user_id"]} == {str}
    fast = columns_of(rows)  # typical columns take the column-wise path, not the per-value one
    assert all(CONTRACT._column(n, fast[n]) is not None for n in CONTRACT.features)
    arrays = binary(rows[:2])
    assert all(CONTRACT._column(n, arrays[n]) is not None for n in CONTRACT.features)
    mixed = columns_of([dict(ROW, hour=3), dict(ROW, hour=4.0)])  # value by value: same result
    assert CONTRACT.from_columns(mixed)[0]["hour"].tolist() == [3, 4]
    by_rows, row_ids = CONTRACT.from_instances([{k: v for k, v in r.items() if k != "impression_id"}
                                                for r in rows])  # fmt: skip
    assert row_ids == [None] * 3 and all(
        by_rows[n].dtype == c.dtype and by_rows[n].tolist() == c.tolist()
        for n, c in columns.items()
    )


def binary(rows: list[dict]) -> dict[str, np.ndarray]:
    """The rows as V2 binary tensor data decodes them: strings as bytes, FP32, INT64."""
    dtypes = {"string": object, "int": np.int64, "float": np.float32}
    arrays = {}
    for name, kind in KINDS.items():
        values = [row[name] for row in rows]
        if kind == "string":
            values = [v.encode() for v in values]
        arrays[name] = np.array(values, dtype=dtypes[kind])
    arrays["impression_id"] = np.array([row["impression_id"].encode() for row in rows], object)
    return arrays


def as_json(arrays: dict[str, np.ndarray]) -> dict[str, list]:
    """What the server made of binary tensors before: .tolist(), bytes decoded."""
    return {n: [v.decode() if isinstance(v, bytes) else v for v in a.tolist()]
            for n, a in arrays.items()}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [(None, None), ("device", "phone"), ("device", "tablé"), ("user_id", "é" * 8),
     ("user_id", "é" * 9), ("code", "abcd"), ("code", "éé"), ("hour", 24), ("count", -(2**63)),
     ("price", 0.0), ("price", np.float32(np.inf)), ("rating", np.float32(np.nan)),
     ("score", np.float32(3.4e38))],
)  # fmt: skip
def test_binary_tensor_arrays_are_checked_like_the_lists_they_were(field, value):
    rows = [dict(ROW, impression_id=f"i{i}") for i in range(4)]
    if field:
        rows[1][field] = value
    arrays = binary(rows)
    assert_same(outcome(lambda: CONTRACT.from_columns(arrays)),
                outcome(lambda: per_value_columns(CONTRACT, as_json(arrays))))  # fmt: skip
    if field is None:
        columns, _ = CONTRACT.from_columns(arrays)
        assert columns["price"].dtype == np.float32 and columns["device"][0] == b"mobile"


def test_binary_int32_and_fp64_become_int64_and_float_and_bad_utf8_is_a_400():
    rows = [dict(ROW, impression_id=f"i{i}") for i in range(3)]
    arrays = {**binary(rows), "hour": np.array([1, 2, 3], np.int32),
              "price": np.array([1.0, 2.0, 1e39])}  # fmt: skip
    with pytest.raises(RequestError, match=r"^field 'price' \(instance 2\): 1e\+39 is outside"):
        CONTRACT.from_columns(arrays)
    arrays["price"] = np.array([1.0, 2.0, 3.0])
    columns, ids = CONTRACT.from_columns(arrays)
    assert columns["hour"].dtype == np.int64 and columns["hour"].tolist() == [1, 2, 3]
    assert ids == ["i0", "i1", "i2"]
    for field in ("device", "impression_id"):
        broken = dict(arrays, **{field: np.array([b"mobile", b"\xc3", b"\xff"], dtype=object)})
        with pytest.raises(RequestError) as err:
            CONTRACT.from_columns(broken)
        assert str(err.value) == f"field '{field}' (instance 1): not UTF-8 text (b'\\xc3')"
    split = dict(arrays, user_id=np.array([b"u1", b"u\xc3", b"\xa9"], dtype=object))
    with pytest.raises(RequestError, match="not UTF-8"):  # two halves of one é are not one é
        CONTRACT.from_columns(split)


# -- the property: any column of mixed good and bad values, both paths answer alike ------------
VALUES = {
    "string": st.sampled_from(["mobile", "desktop", "tablé", "phone", "", "abc", "abcd", "u1"])
    | st.text(max_size=10),
    "int": st.integers(-3, 30)
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([0.0, 23.0, 13.5, float("nan"), float("inf")]),
    "float": st.floats(-10, 10)
    | st.floats()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0.01, 0.00999, 1.0, 5.0, 1e39, 3.4028234663852886e38, 10**400]),
}
ANY = st.none() | st.booleans() | st.text(max_size=3) | st.integers() | st.floats()


@st.composite
def requests(draw):
    """Rows of mostly valid values, some replaced by values of the field's type near or past its
    limits, now and then by anything; ids present, absent, bad."""
    n = draw(st.integers(1, 6))
    rows = [dict(ROW) for _ in range(n)]
    for row in rows:
        for name in draw(st.lists(st.sampled_from(sorted(ROW)), max_size=3, unique=True)):
            kind = KINDS.get(name, "string")
            row[name] = draw(VALUES[kind] if draw(st.integers(0, 4)) else ANY)
    if draw(st.booleans()):
        for row in rows:
            del row["impression_id"]
    return rows


@settings(max_examples=600, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(rows=requests())
def test_any_column_gets_the_answer_of_the_per_value_path(rows):
    inputs = columns_of(rows)
    assert_same(outcome(lambda: CONTRACT.from_columns(inputs)),
                outcome(lambda: per_value_columns(CONTRACT, inputs)))  # fmt: skip
    assert_same(outcome(lambda: CONTRACT.from_instances(rows)),
                outcome(lambda: per_value_rows(CONTRACT, rows)))  # fmt: skip


# -- numpy columns downstream -------------------------------------------------------------------
def test_batcher_merges_numpy_columns_and_hands_back_array_slices():
    seen = []

    def score(columns):
        seen.append({n: c.dtype for n, c in columns.items()})
        return columns["x"].astype(np.float64) * 2

    async def scenario():
        batcher = MicroBatcher(score, max_size=64, timeout_s=0.05)
        parts = [{"x": np.array([i, i + 1], np.float32), "s": np.array([b"a", "b"], dtype=object)}
                 for i in range(4)]  # fmt: skip
        return await asyncio.gather(*(batcher.submit(p, 2) for p in parts))

    answers = asyncio.run(scenario())
    assert [a.tolist() for a in answers] == [[2.0 * i, 2.0 * i + 2] for i in range(4)]
    assert seen and all(s == {"x": np.float32, "s": object} for s in seen)
    single = {"x": np.array([1.0])}
    assert merge([single]) is single  # one request: no copy


def test_request_log_writes_numpy_columns_as_plain_json(tmp_path):
    path = tmp_path / "r.jsonl"
    log = RequestLog(str(path))
    columns = {"device": np.array([b"tabl\xc3\xa9", b"mobile"], dtype=object),
               "user_id": np.array(["u1", "u2"], dtype=object), "hour": np.array([3, 4]),
               "price": np.array([0.1, 2.5]), "rating": np.array([4.5, 1.0], np.float32)}  # fmt: skip
    log.write(request_id="r", model="m", version="1", variant=None, protocol="v2",
              columns=columns, ids=["i1", None], scores=np.array([0.25, 0.5]))  # fmt: skip
    records = read_log(str(path))
    assert [r["features"] for r in records] == [
        {"device": "tablé", "user_id": "u1", "hour": 3, "price": 0.1, "rating": 4.5},
        {"device": "mobile", "user_id": "u2", "hour": 4, "price": 2.5, "rating": 1.0},
    ]
    assert [(r["id"], r["score"]) for r in records] == [("i1", 0.25), (None, 0.5)]
    line = path.read_text().splitlines()[0]
    assert json.loads(line)["features"]["price"] == 0.1  # the value sent, not its float32
