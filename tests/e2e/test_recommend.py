"""The recommendation endpoint against the real pieces: a day of the shop played through RabbitMQ
into a lake and Redis, Feast's feature server over it, the first run's pushed model in the
predictor, and the transformer in front (serving/stack.py, what `shop-serve recommend` starts).

What must hold: k ranked products for a known user, the same list twice; the transformer's rows
are the feature store's own (the scores equal the predictor's on rows Feast's SDK reads, with the
feature's one definition of user_category_affinity); bad requests are 4xx naming the field; an
unknown user gets the popular products, said in the answer; every answer is one served-log line;
a predictor that is gone is a 503, never a 500.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from e2e_data import SEED, config_for
from repo_paths import REPO_ROOT

import contract
from features.play import play
from serving.stack import recommend_stack
from settings import load_config

# Reads first_run only: the worker that repeats it for the distributed test serves it too.
pytestmark = pytest.mark.xdist_group("distributed")

DAY_ROWS = 3000
CONTEXT = {"device": "mobile", "hour": 20, "referrer": "search", "country": "DE"}


@pytest.fixture(scope="module")
def stack(first_run, workspace, tmp_path_factory):
    """One played day, then the stack on it with the first run's model; yields (stack, config,
    config_args, lake)."""
    root = tmp_path_factory.mktemp("recommend")
    lake = root / "lake"
    publisher = [
        str(REPO_ROOT / ".venv" / "bin" / "shop-sim"), "stream", "--broker", "{broker}",
        "--out", str(lake), "--rows", str(DAY_ROWS), "--spans", "1", "--seed", str(SEED),
    ]  # fmt: skip
    overrides = [f"data.root={lake}", f"output_root={root / 'outputs'}"]
    play(lake, publisher, spans=1, services_root=root / "services", overrides=overrides)
    config = load_config("local", overrides)
    config_args = [f"--set={o}" for o in overrides]
    assert first_run.pushed, "the first run pushed no model"
    with recommend_stack(
        config,
        config_args,
        root / "stack",
        model_dir=config_for(workspace).serving_dir,
        served_log=str(root / "served.jsonl"),
        say=lambda line: None,
    ) as running:
        yield running, config, config_args, lake


def ask(stack, body, *, expect: int = 200) -> dict:
    running, config, *_ = stack
    answer = httpx.post(running.endpoint(config.serving.model_name), json=body, timeout=30)
    assert answer.status_code == expect, answer.text
    return answer.json()


def a_known_user(lake: Path) -> str:
    import pandas as pd

    return str(pd.read_csv(lake / "span-1" / "impressions.csv")["user_id"].iloc[0])


def popular_products(lake: Path) -> list[str]:
    """Every product of the lake's catalog log, most popular first (newest event per product):
    the order the retrieval index must have, derived here without the feature store."""
    import pandas as pd

    log = pd.read_parquet(lake / "features" / "product_catalog")
    newest = log.sort_values("event_timestamp", kind="stable").drop_duplicates(
        "product_id", keep="last"
    )
    return list(
        newest.sort_values(["popularity", "product_id"], ascending=[False, True])["product_id"]
    )


def test_a_user_gets_k_ranked_products_and_the_same_list_twice(stack):
    running, config, _, lake = stack
    body = {"user_id": a_known_user(lake), "context": CONTEXT, "k": 7}
    first, second = ask(stack, body), ask(stack, body)
    products = first["products"]
    assert [p["position"] for p in products] == list(range(1, 8))
    scores = [p["score"] for p in products]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert len({p["product_id"] for p in products}) == 7
    assert first["cold_start"] is False and first["candidates_from"] == "category_popularity"
    assert first["candidates"] == config.recommend.retrieval_candidates
    assert first["model_version"] and first["model_version"].isdigit()
    assert [p["impression_id"] for p in products] == [
        f"{first['request_id']}-{i}" for i in range(1, 8)
    ]
    strip = lambda a: [(p["product_id"], p["score"]) for p in a["products"]]  # noqa: E731
    assert strip(first) == strip(second), "the same request twice gave another list"
    assert first["request_id"] != second["request_id"]


def test_the_transformers_rows_are_the_feature_stores_own(stack):
    """Scores of named candidates equal the predictor's scores of the rows Feast's SDK reads for
    the same user and products (features/store.py online_features), with the request's context."""
    running, config, _, lake = stack
    user = a_known_user(lake)
    candidates = popular_products(lake)[::7][:40]
    answer = ask(stack, {"user_id": user, "context": CONTEXT, "k": 40, "candidates": candidates})
    served = {p["product_id"]: p["score"] for p in answer["products"]}
    assert set(served) == set(candidates) and answer["candidates_from"] == "request"
    rows = running.feature_rows([(user, p) for p in candidates])
    instances = [
        {**{c: v for c, v in row.items() if c in contract.COLUMNS}, **CONTEXT,
         "position": config.recommend.scoring_position}
        for row in rows
    ]  # fmt: skip
    url = f"{running.predictor_url}/v1/models/{config.serving.model_name}:predict"
    reference = httpx.post(url, json={"instances": instances}, timeout=30).json()["predictions"]
    for row, score in zip(rows, reference, strict=True):
        assert served[row["product_id"]] == pytest.approx(score, abs=1e-6), row["product_id"]


def test_an_unknown_user_gets_the_popular_products_said_in_the_answer(stack):
    lake = stack[3]
    answer = ask(stack, {"user_id": "u-never-seen", "context": CONTEXT, "k": 4})
    assert answer["cold_start"] is True and answer["candidates_from"] == "popularity"
    assert [p["product_id"] for p in answer["products"]] == popular_products(lake)[:4]
    assert all(p["score"] is None for p in answer["products"])


BAD = [
    ({"context": CONTEXT}, 400, "field 'user_id'"),
    ({"user_id": "u1", "context": {**CONTEXT, "device": "fridge"}}, 400, "context.device"),
    ({"user_id": "u1", "context": {**CONTEXT, "hour": 24}}, 400, "context.hour"),
    ({"user_id": "u1", "context": {**CONTEXT, "hour": "20"}}, 400, "context.hour"),
    ({"user_id": "u1", "context": {"device": "mobile"}}, 400, "context.referrer"),
    ({"user_id": "u1", "context": {**CONTEXT, "weather": "rain"}}, 400, "weather"),
    ({"user_id": "u1", "context": CONTEXT, "k": 0}, 400, "field 'k'"),
    ({"user_id": "u1", "context": CONTEXT, "k": 51}, 400, "field 'k'"),
    ({"user_id": "u1", "context": CONTEXT, "k": True}, 400, "field 'k'"),
    ({"user_id": "u1", "context": CONTEXT, "candidates": []}, 400, "field 'candidates'"),
    ({"user_id": "u1", "context": CONTEXT, "candidates": [3]}, 400, "candidates[0]"),
    ({"user_id": "u1", "context": CONTEXT, "candidates": ["p1"] * 501}, 413, "the limit is 500"),
    ({"user_id": "u1", "context": CONTEXT, "cohort": "b"}, 400, "unknown field(s) ['cohort']"),
    ({"user_id": "x" * 257, "context": CONTEXT}, 400, "257 characters"),
    ([1, 2], 400, "JSON object"),
]


@pytest.mark.parametrize(("body", "status", "says"), BAD, ids=[b[2] for b in BAD])
def test_a_bad_request_is_a_4xx_naming_the_field(stack, body, status, says):
    assert says in ask(stack, body, expect=status)["error"]


def test_a_body_that_is_not_json_is_a_400(stack):
    running, config, *_ = stack
    answer = httpx.post(running.endpoint(config.serving.model_name), content=b"{not json")
    assert answer.status_code == 400, answer.text


def test_unknown_candidates_are_skipped_and_said(stack):
    lake = stack[3]
    known = popular_products(lake)[0]
    body = {"user_id": a_known_user(lake), "context": CONTEXT, "candidates": [known, "p-gone"]}
    answer = ask(stack, body)
    assert [p["product_id"] for p in answer["products"]] == [known]
    assert answer["skipped"] == ["p-gone"]
    body["candidates"] = ["p-gone"]
    assert "none of the 1 product ids" in ask(stack, body, expect=400)["error"]


def test_every_answer_is_one_line_of_the_served_log(stack):
    running, _, _, lake = stack
    before = Path(running.served_log).read_text().splitlines()
    answer = ask(stack, {"user_id": a_known_user(lake), "context": CONTEXT, "k": 3})
    lines = Path(running.served_log).read_text().splitlines()
    assert len(lines) == len(before) + 1
    record = json.loads(lines[-1])
    assert record["request_id"] == answer["request_id"]
    assert record["products"] == answer["products"] and record["context"] == CONTEXT
    assert record["model_version"] == answer["model_version"]
    assert set(record["timings_ms"]) >= {"lookup_ms", "build_ms", "predict_ms", "total_ms"}


def test_the_latency_benchmark_reports_both_loads_the_floor_and_the_split(
    stack, workspace, tmp_path
):
    """benchmarks/recommend_latency.py, briefly, on its own stack over the same lake and model."""
    _, _, config_args, lake = stack
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "python"), "-m", "benchmarks.recommend_latency",
            "--requests", "40", "--rounds", "2", "--concurrency", "1", "4", "--floor-calls", "20",
            "--model-dir", config_for(workspace).serving_dir, "--json", str(out),
            *config_args,
        ],  # fmt: skip
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["candidates"] == 100 and figures["floor"]["rows"] == 100
    assert figures["floor"]["p50_ms"] > 0
    for level in ("1", "4"):
        found = figures["levels"][level]
        for load in ("recommend", "predictor"):
            assert found[load]["requests"] == 40 and found[load]["p99_ms"] >= found[load]["p50_ms"]
        assert all(found["split_ms"][s] > 0 for s in ("lookup_ms", "build_ms", "predict_ms"))
        assert found["split_ms"]["total_ms"] >= found["split_ms"]["predict_ms"]
    assert "split of a recommendation" in run.stdout and "goals (issue 21)" in run.stdout


def test_the_transport_benchmark_compares_rest_and_grpc_on_equal_scores(stack, workspace, tmp_path):
    """benchmarks/predictor_transport.py, briefly, in the serving environment; it exits non-zero
    when the two protocols answer different scores for the same rows."""
    _, _, config_args, lake = stack
    out = tmp_path / "transport.json"
    run = subprocess.run(
        [
            str(REPO_ROOT / ".venv-serving" / "bin" / "python"), "-m",
            "benchmarks.predictor_transport", "--requests", "40", "--rounds", "2",
            "--concurrency", "1", "4", "--span-dir", str(lake / "span-1"),
            "--model-dir", config_for(workspace).serving_dir, "--json", str(out), *config_args,
        ],  # fmt: skip
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["rows"] == 100 and set(figures["levels"]) == {"1", "4"}
    for by in figures["levels"].values():
        assert set(by) == {"rest", "grpc"} and all(f["requests"] == 40 for f in by.values())
    assert "gRPC / REST" in run.stdout


def listening_hosts(port: int) -> set[str]:
    """The IPv4 and IPv6 addresses a socket listens on at `port` (/proc/net/tcp, state 0A)."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]  # little-endian
                hosts.add(str(ipaddress.ip_address(b"".join(words))))
    return hosts


def test_every_process_of_the_stack_listens_on_loopback_only(stack):
    running, *_ = stack
    urls = {
        "transformer": running.url,
        "predictor": running.predictor_url,
        "feature server": running.feature_server_url,
        "redis": f"redis://{running.redis.address}",
    }
    for name, url in urls.items():
        port = int(url.rsplit(":", 1)[1])
        hosts = listening_hosts(port)
        assert hosts and all(ipaddress.ip_address(h).is_loopback for h in hosts), (name, hosts)


def test_a_predictor_that_is_gone_is_a_503_not_a_500(stack):
    """Last in the module: it stops the predictor."""
    running, _, _, lake = stack
    predictor = running.processes["predictor"]
    predictor.terminate()
    predictor.wait(30)
    body = {"user_id": a_known_user(lake), "context": CONTEXT}
    answer = httpx.post(running.endpoint(stack[1].serving.model_name), json=body, timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.headers.get("retry-after") == "1"
    assert "predictor" in answer.json()["error"]
