"""The model server's pure-Python parts: contract validation, sticky A/B buckets, the
micro-batcher, the request log, the A/B report, and the server command built from config."""

from __future__ import annotations

import asyncio
import hashlib
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from serving import ab
from serving.ab_report import auc, build_report, render
from serving.batcher import MicroBatcher
from serving.contract import Contract, RequestError
from serving.request_log import RequestLog, read_log
from settings import load_config

CONTRACT = Contract(
    features={
        "user_id": {"type": "string", "required": True},
        "device": {"type": "string", "required": True, "values": ["mobile", "desktop"]},
        "hour": {"type": "int", "required": True, "min": 0, "max": 23},
        "price": {"type": "float", "required": True, "min": 0.01},
    },
    signature="serving_raw",
    output="purchase_probability",
    max_instances=3,
)
ROW = {"user_id": "u1", "device": "mobile", "hour": 13, "price": 9.5}


def test_valid_rows_and_columns_become_typed_columns():
    columns, ids = CONTRACT.from_instances([ROW, {**ROW, "hour": 7.0, "impression_id": "i2"}])
    assert columns["hour"].tolist() == [13, 7] and columns["hour"].dtype == np.int64
    assert columns["price"].tolist() == [9.5, 9.5] and ids == [None, "i2"]
    columns, _ = CONTRACT.from_columns({k: [v, v] for k, v in ROW.items()})
    assert columns["device"].tolist() == ["mobile", "mobile"]


@pytest.mark.parametrize(
    ("change", "needle", "status"),
    [
        ({"hour": "13"}, "field 'hour' (instance 0): expected int, got str", 400),
        ({"hour": 13.5}, "field 'hour' (instance 0): expected int", 400),
        ({"hour": True}, "field 'hour' (instance 0): expected int, got bool", 400),
        ({"hour": 24}, "field 'hour' (instance 0): 24 is above the domain's maximum 23", 400),
        ({"price": 0.0}, "field 'price' (instance 0): 0.0 is below the domain's minimum", 400),
        ({"price": float("nan")}, "field 'price' (instance 0): nan is not a finite number", 400),
        ({"device": "phone"}, "field 'device' (instance 0): 'phone' is not in the domain", 400),
        ({"device": 3}, "field 'device' (instance 0): expected a string, got int", 400),
        ({"user_id": None}, "field 'user_id' (instance 0): missing value", 400),
        ({"colour": "red"}, "instance 0: unknown field(s) ['colour']", 400),
        ({"price": 1e308}, "field 'price' (instance 0): 1e+308 is outside float32's range", 400),
        ({"price": 10**400}, "field 'price' (instance 0): 1000000000", 400),
        ({"hour": 2**64}, "field 'hour' (instance 0): 18446744073709551616 is outside int64", 400),
        (
            {"user_id": "u" * 257},
            "field 'user_id' (instance 0): 257 characters; the limit is 256",
            400,
        ),
        ({"device": "m" * 10**6}, "is not in the domain", 400),
        ({"impression_id": 7}, "field 'impression_id' (instance 0): expected a string", 400),
        ({"impression_id": "i" * 300}, "'impression_id' (instance 0): 300 characters", 400),
    ],
)
def test_each_bad_value_names_its_field(change, needle, status):
    with pytest.raises(RequestError) as err:
        CONTRACT.from_instances([{**ROW, **change}])
    assert needle in str(err.value) and err.value.status == status


def test_string_limits_come_from_the_domain_the_contract_or_the_server_setting():
    contract = Contract(
        features={**CONTRACT.features, "product_id": {"type": "string", "required": True,
                                                       "max_length": 8}},
        signature="serving_raw", output="p", max_string_length=5,
    )  # fmt: skip
    assert [contract.max_length(n) for n in ("user_id", "device", "product_id")] == [5, 7, 8]
    row = {**ROW, "product_id": "p1"}
    assert contract.from_instances([{**row, "user_id": "u" * 5}])[0]["user_id"] == ["uuuuu"]
    for field, value in (("user_id", "u" * 6), ("product_id", "p" * 9)):
        with pytest.raises(RequestError, match=f"field '{field}'.*characters; the limit is"):
            contract.from_instances([{**row, field: value}])
    with pytest.raises(RequestError) as err:  # a huge value is never echoed back whole
        contract.from_instances([{**row, "device": "x" * 10**6}])
    assert len(str(err.value)) < 200


def test_shape_errors_of_whole_requests():
    missing = {k: v for k, v in ROW.items() if k != "price"}
    cases = [
        (lambda: CONTRACT.from_instances([missing]), "missing required field(s) ['price']", 400),
        (lambda: CONTRACT.from_instances([ROW] * 4), "4 instances in one request", 413),
        (lambda: CONTRACT.from_instances([]), "no instances", 400),
        (lambda: CONTRACT.from_instances({"a": 1}), "'instances' must be a list", 400),
        (lambda: CONTRACT.from_instances(["row"]), "instance 0: expected an object", 400),
        (lambda: CONTRACT.from_columns([ROW]), "'inputs' must be an object", 400),
        (lambda: CONTRACT.from_columns({**{k: [v] for k, v in ROW.items()}, "hour": 3}),
         "field 'hour': expected a list", 400),
        (lambda: CONTRACT.from_columns({**{k: [v] for k, v in ROW.items()}, "hour": [1, 2]}),
         "different lengths", 400),
    ]  # fmt: skip
    for call, needle, status in cases:
        with pytest.raises(RequestError) as err:
            call()
        assert needle in str(err.value) and err.value.status == status


def test_v2_metadata_lists_every_feature_with_its_datatype():
    meta = {m["name"]: m["datatype"] for m in CONTRACT.input_metadata()}
    assert meta == {"user_id": "BYTES", "device": "BYTES", "hour": "INT64", "price": "FP32"}


def test_ab_buckets_are_stable_and_split_by_the_percentage():
    assert ab.bucket("u1") == ab.bucket("u1")  # no per-process hash seed
    digest = hashlib.sha256(b"u1").digest()
    assert ab.bucket("u1") == int.from_bytes(digest[:8], "big") % 100
    users = [f"u{i}" for i in range(10_000)]
    share = sum(ab.variant(u, 30) == ab.CANDIDATE for u in users) / len(users)
    assert abs(share - 0.30) < 0.02
    assert {ab.variant(u, 0) for u in users} == {ab.CONTROL}
    assert {ab.variant(u, 100) for u in users} == {ab.CANDIDATE}


def test_micro_batcher_merges_concurrent_requests_and_splits_the_answers():
    calls = []

    def score(columns):
        calls.append(len(columns["x"]))
        return [2.0 * v for v in columns["x"]]

    async def scenario(max_size, timeout_s):
        batcher = MicroBatcher(score, max_size=max_size, timeout_s=timeout_s)
        answers = await asyncio.gather(*(batcher.submit({"x": [i, i + 0.5]}, 2) for i in range(10)))
        return answers

    expected = [[2.0 * i, 2.0 * i + 1.0] for i in range(10)]
    for max_size, timeout_s in [(64, 0.05), (64, 0.0)]:  # waiting, and greedy (what queued up)
        calls.clear()
        assert asyncio.run(scenario(max_size, timeout_s)) == expected
        assert sum(calls) == 20 and len(calls) < 10, calls  # merged into fewer model calls
    calls.clear()
    assert asyncio.run(scenario(1, 0.0)) == expected and calls == [2] * 10  # batching off


def test_micro_batcher_hands_a_model_error_to_every_waiting_request_and_lives_on():
    def score(columns):
        if any(v < 0 for v in columns["x"]):
            raise ValueError("bad batch")
        return list(columns["x"])

    async def scenario():
        batcher = MicroBatcher(score, max_size=8, timeout_s=0.05)
        first = await asyncio.gather(
            batcher.submit({"x": [-1]}, 1), batcher.submit({"x": [1]}, 1), return_exceptions=True
        )
        second = await batcher.submit({"x": [3]}, 1)
        return first, second

    first, second = asyncio.run(scenario())
    assert all(isinstance(r, ValueError) for r in first) and second == [3]


def test_request_log_writes_one_line_per_instance_with_the_version(tmp_path):
    log = RequestLog(str(tmp_path / "logs" / "r.jsonl"))
    columns, ids = CONTRACT.from_instances([ROW, {**ROW, "impression_id": "i9"}])
    log.write(request_id="r1", model="m", version="17", variant=None, protocol="v1",
              columns=columns, ids=ids, scores=[0.25, 0.5])  # fmt: skip
    (tmp_path / "logs" / "r.jsonl").open("a").write('{"half": ')  # a line being written
    records = read_log(str(tmp_path / "logs" / "r.jsonl"))
    assert [(r["version"], r["id"], r["score"]) for r in records] == [
        ("17", None, 0.25),
        ("17", "i9", 0.5),
    ]
    assert records[1]["features"] == ROW


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500), 1)  # many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert auc(np.ones(3), np.arange(3)) is None


def test_ab_report_compares_variants_on_their_outcomes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "log.jsonl"
    outcomes = {}
    with path.open("w") as f:
        for i in range(2000):
            user = f"u{i % 300}"
            variant = ab.variant(user, 50)
            y = int(rng.random() < 0.3)
            noise = 0.35 if variant == ab.CONTROL else 0.2  # the candidate separates better
            score = float(np.clip(0.3 + (y - 0.3) * 0.4 + rng.normal(0, noise), 0.01, 0.99))
            outcomes[f"i{i}"] = y
            f.write(json.dumps({"variant": variant, "version": "2" if variant == ab.CANDIDATE
                                else "1", "id": f"i{i}", "features": {"user_id": user},
                                "score": score}) + "\n")  # fmt: skip
    requests = {f"i{i}": f"r{i % 300}-{i // 900}" for i in range(2000)}  # a user's pages
    report = build_report(str(path), outcomes, rounds=100, requests=requests, ndcg_k=10)
    control, candidate = report["variants"]["control"], report["variants"]["candidate"]
    assert candidate["ndcg"] > control["ndcg"] and control["ndcg_requests"] > 50
    assert build_report(str(path), outcomes, rounds=10)["variants"]["control"]["ndcg"] is None
    assert (control["versions"], candidate["versions"]) == (["1"], ["2"])
    assert control["labelled"] + candidate["labelled"] == 2000
    assert candidate["auc"] > control["auc"]
    low, high = report["auc_difference_95ci"]
    assert 0 < low < report["auc_difference"] < high
    assert "AUC candidate - control" in render(report)


def test_server_command_comes_from_config(tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text("")
    monkeypatch.setenv("SHOP_SERVING_PYTHON", str(fake))
    from serving.cli import server_command

    config = load_config("local", [f"output_root={tmp_path}", "serving.ab_candidate_percent=20",
                                   "serving.batch_timeout_ms=0"])  # fmt: skip
    cmd = server_command(config, 8123, model_version="7")
    words = [w for arg in cmd[3:] for w in arg.split("=", 1)]  # --flag value and --flag=value
    flags = dict(zip(words[::2], words[1::2], strict=True))
    assert cmd[:3] == [str(fake), "-m", "serving.server"]
    assert flags["--model-dir"] == str(tmp_path / "serving" / "shop-ranking")
    assert flags["--request-log"] == str(tmp_path / "serving_logs" / "shop-ranking.jsonl")
    assert (flags["--ab-candidate-percent"], flags["--batch-timeout-ms"]) == ("20", "0")
    assert (flags["--max-string-length"], flags["--max-concurrency"]) == ("256", "16")
    assert (flags["--http-port"], flags["--model-version"]) == ("8123", "7")
    assert flags["--http-host"] == "127.0.0.1", "a local server must listen on loopback only"
    monkeypatch.setenv("SHOP_SERVING_PYTHON", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="make serving-env"):
        server_command(config, 8123)


def test_micro_batcher_worker_exits_when_idle_and_restarts_on_demand():
    """A retired version's batcher must answer what it accepted and then hold nothing alive."""

    async def scenario():
        batcher = MicroBatcher(lambda c: list(c["x"]), max_size=8, timeout_s=0.0)
        first = await asyncio.gather(*(batcher.submit({"x": [i]}, 1) for i in range(5)))
        await asyncio.sleep(0)
        idle = batcher._worker.done()
        second = await batcher.submit({"x": [9]}, 1)
        return first, idle, second

    first, idle, second = asyncio.run(scenario())
    assert first == [[i] for i in range(5)] and idle and second == [9]
