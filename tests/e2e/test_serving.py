"""The model server (serving environment, kserve ModelServer) on the first local run's pushed
model: both protocols score exactly like the in-process SavedModel, bad requests get a 4xx that
names the field while the server stays up, a new version is picked up under load without a failed
request, and the sticky A/B split tags, logs and reports both variants."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import tensorflow as tf
from e2e_data import config_for
from repo_paths import REPO_ROOT

from serving import ab
from serving.cli import main as shop_serve
from serving.contract import Contract
from serving.loadgen import run_load, span_instances, v2_body
from serving.process import running_server
from serving.request_log import read_log
from serving.versions import numbered_versions

# Reads first_run only: the worker that repeats it for the distributed test serves it too.
pytestmark = pytest.mark.xdist_group("distributed")


def newest(models) -> str:
    return numbered_versions(str(models))[-1]


@pytest.fixture(scope="module")
def served(first_run, workspace, tmp_path_factory):
    config = config_for(workspace)
    root = tmp_path_factory.mktemp("served")
    models = root / "models"
    shutil.copytree(config.serving_dir, models)  # the version-switch test adds a version
    contract = Contract.load(str(models / newest(models)))
    log = root / "requests.jsonl"
    with running_server(config, str(models), root / "server.log", request_log=str(log)) as url:
        yield SimpleNamespace(
            url=url,
            models=models,
            log=log,
            config=config,
            contract=contract,
            rows=span_instances(str(workspace / "data" / "span-2"), contract, 64),
            v1=f"{url}/v1/models/{config.serving.model_name}:predict",
            v2=f"{url}/v2/models/{config.serving.model_name}/infer",
        )


def in_process_scores(model_dir, contract: Contract, rows) -> np.ndarray:
    fn = tf.saved_model.load(str(model_dir)).signatures[contract.signature]
    dtypes = {"string": tf.string, "int": tf.int64, "float": tf.float32}
    tensors = {
        name: tf.constant([r[name] for r in rows], dtype=dtypes[spec["type"]])
        for name, spec in contract.features.items()
    }
    return fn(**tensors)[contract.output].numpy()


def test_both_protocols_score_like_the_in_process_model(served):
    expected = in_process_scores(
        served.models / newest(served.models), served.contract, served.rows
    )
    rows = served.rows
    v1_rows = httpx.post(served.v1, json={"instances": rows}, timeout=30)
    assert v1_rows.status_code == 200, v1_rows.text
    assert v1_rows.headers["x-model-version"] == newest(served.models)
    np.testing.assert_allclose(v1_rows.json()["predictions"], expected, atol=1e-6)

    columns = {name: [r[name] for r in rows] for name in served.contract.features}
    v1_columns = httpx.post(served.v1, json={"inputs": columns}, timeout=30)
    assert v1_columns.status_code == 200, v1_columns.text
    np.testing.assert_allclose(v1_columns.json()["outputs"], expected, atol=1e-6)

    v2 = httpx.post(served.v2, json={"id": "t-1", **v2_body(rows, served.contract)}, timeout=30)
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert (body["id"], body["model_version"]) == ("t-1", newest(served.models))
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        served.contract.output,
        "FP32",
        [len(rows)],
    )
    np.testing.assert_allclose(output["data"], expected, atol=1e-6)

    # One-row requests at once, as many as the server admits: the batcher merges them, each
    # still gets its own score.
    at_once = served.config.serving.max_concurrency

    async def singles():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(client.post(served.v1, json={"instances": [r]}) for r in rows[:at_once])
            )

    answers = asyncio.run(singles())
    got = [a.json()["predictions"][0] for a in answers]
    np.testing.assert_allclose(got, expected[:at_once], atol=1e-6)

    logged = [r for r in read_log(str(served.log)) if r["id"] == rows[0]["impression_id"]]
    assert logged and logged[0]["version"] == newest(served.models)
    assert logged[0]["features"]["user_id"] == rows[0]["user_id"]
    assert logged[0]["score"] == pytest.approx(float(expected[0]), abs=1e-6)


def _bad_cases(row: dict, contract: Contract):
    def changed(**fields):
        return {"instances": [{**row, **fields}]}

    missing = {k: v for k, v in row.items() if k != "price"}
    v2 = v2_body([row], contract)
    v2_wrong_type = {
        "inputs": [
            {**t, "datatype": "BYTES", "data": ["x"]} if t["name"] == "hour" else t
            for t in v2["inputs"]
        ]
    }
    v2_wrong_shape = {
        "inputs": [{**t, "shape": [2]} if t["name"] == "rating" else t for t in v2["inputs"]]
    }
    return [
        ("v1", changed(hour="13"), 400, "'hour'"),
        ("v1", changed(price=-3.0), 400, "'price'"),
        ("v1", changed(device="phone"), 400, "'device'"),
        ("v1", changed(on_sale=7), 400, "'on_sale'"),
        ("v1", changed(rating=None), 400, "'rating'"),
        ("v1", {"instances": [missing]}, 400, "'price'"),
        ("v1", changed(prise=3.0), 400, "'prise'"),
        ("v1", {"instances": [row] * (contract.max_instances + 1)}, 413, "limit"),
        ("v1", {"instances": []}, 400, "no instances"),
        ("v1", {"rows": [row]}, 400, "instances"),
        ("v1", b"{not json", 400, "request format"),
        ("v1", {"inputs": {**{k: [v] for k, v in row.items()}, "hour": [1, 2]}}, 400, "lengths"),
        ("v2", v2_wrong_type, 400, "'hour'"),
        ("v2", v2_wrong_shape, 400, "'rating'"),
        ("v2", b'{"inputs": "nope"}', 422, "inputs"),
    ]


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_stays_up(served):
    for protocol, body, status, needle in _bad_cases(served.rows[0], served.contract):
        url = served.v1 if protocol == "v1" else served.v2
        if isinstance(body, bytes):
            response = httpx.post(
                url, content=body, headers={"content-type": "application/json"}, timeout=30
            )
        else:
            response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == status, (protocol, needle, response.text)
        assert needle in response.text, (protocol, needle, response.text)
    ok = httpx.post(served.v1, json={"instances": served.rows[:2]}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
    metrics = httpx.get(f"{served.url}/metrics", timeout=30).text
    assert 'shop_requests_total{model="shop-ranking",outcome="invalid",protocol="v1"}' in metrics
    assert 'shop_requests_total{model="shop-ranking",outcome="too_large",protocol="v1"}' in metrics
    assert "shop_request_latency_seconds_bucket" in metrics
    assert "shop_model_batch_instances_bucket" in metrics


def test_a_new_version_is_picked_up_under_load_without_a_failed_request(served):
    old = newest(served.models)
    new = str(int(old) + 1)
    bodies = [{"instances": [r]} for r in served.rows]
    results = []

    def load_until_switched():
        for _ in range(60):  # bounded: at most 60 rounds of 100 requests
            result = asyncio.run(run_load(served.v1, bodies, total=100, concurrency=8))
            results.append(result)
            if new in result.versions and len(results) >= 2 and results[-2].versions[-1] == new:
                return  # a whole round after the switch has been served

    loader = threading.Thread(target=load_until_switched)
    loader.start()
    # Copied in place while requests flow, file by file as Pusher copies it.
    shutil.copytree(served.models / old, served.models / new)
    loader.join(timeout=300)
    assert not loader.is_alive()
    statuses = [s for r in results for s in r.statuses]
    versions = [v for r in results for v in r.versions]
    errors = [e for r in results for e in r.errors]
    assert not errors and set(statuses) == {200}, (errors, set(statuses))
    assert versions[0] == old and versions[-1] == new
    switch = versions.index(new)
    assert set(versions[switch + 100 :]) <= {new}  # no flapping back once switched
    print(f"{len(statuses)} requests, all 200; switched {old} -> {new} after {switch}")


def test_ab_split_is_sticky_tagged_logged_and_reported(served, workspace, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    control = newest(served.models)
    candidate = str(int(control) + 10)
    shutil.copytree(served.models / control, models / control)
    shutil.copytree(served.models / control, models / candidate)
    config = config_for(workspace, "serving.ab_candidate_percent=30")
    log = tmp_path / "ab.jsonl"
    rows = span_instances(str(workspace / "data" / "span-2"), served.contract, 400)
    with running_server(config, str(models), tmp_path / "server.log", request_log=str(log)) as url:
        v1 = f"{url}/v1/models/{config.serving.model_name}:predict"
        for i in range(0, len(rows), 20):
            response = httpx.post(v1, json={"instances": rows[i : i + 20]}, timeout=30)
            assert response.status_code == 200, response.text
            assert set(response.headers["x-ab-variant"].split(",")) <= {ab.CONTROL, ab.CANDIDATE}
    records = read_log(str(log))
    assert len(records) == len(rows)
    for record in records:
        assert record["variant"] == ab.variant(record["features"]["user_id"], 30)
        assert record["version"] == (candidate if record["variant"] == ab.CANDIDATE else control)
    share = sum(r["variant"] == ab.CANDIDATE for r in records) / len(records)
    assert 0.15 < share < 0.45, share

    report_path = tmp_path / "report.json"
    argv = ["ab-report", "--set", f"data.root={workspace / 'data'}", "--span", "2"]
    assert shop_serve([*argv, "--log", str(log), "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    variants = report["variants"]
    assert variants["candidate"]["versions"] == [candidate]
    assert variants["control"]["instances"] + variants["candidate"]["instances"] == len(rows)
    assert variants["control"]["labelled"] == variants["control"]["instances"]
    assert 0.5 < variants["control"]["auc"] <= 1
    assert "auc_difference_95ci" in report


def test_latency_benchmark_smoke(served, workspace, tmp_path):
    """benchmarks/serving_latency.py on a tiny load, so the script cannot rot (no timing asserted)."""
    out = tmp_path / "serving.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.serving_latency", "--config", "local",
         "--model-dir", str(served.models), "--span-dir", str(workspace / "data" / "span-2"),
         "--requests", "30", "--rounds", "2", "--concurrency", "1", "4", "--overload", "24",
         "--floor-calls", "30", "--wide-rows", "8", "--wide-requests", "20",
         "--wide-concurrency", "2", "--wide-floor-calls", "20", "--json", str(out),
         "--plot", str(tmp_path / "latency.png")],
        check=True,
        cwd=REPO_ROOT,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result["figures"]) == {"off", "greedy", "wait-2ms"}
    assert all(set(levels) == {"1", "4"} for levels in result["figures"].values())
    assert result["in_process_floor"]["p50_ms"] > 0
    assert set(result["throughput_vs_off"]) == {"greedy", "wait-2ms"}
    assert set(result["admission"]) == {"unbounded", "limited", "limited-impatient"}
    assert 0 <= result["admission"]["limited"]["24"]["shed_share"] < 1
    assert result["admission"]["unbounded"]["24"]["shed_share"] == 0
    assert (tmp_path / "latency.png").stat().st_size > 10_000
    wide = result["wide"]  # 8-instance requests in each format, next to the in-process call
    assert wide["rows"] == 8 and wide["in_process_floor"]["rows_per_s"] > 0
    assert set(wide["figures"]) == {"v1 rows", "v1 columns", "v2 json", "v2 binary"}
    assert all(f["2"]["rows_per_s"] > 0 for f in wide["figures"].values())
