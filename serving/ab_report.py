"""A/B report: the two variants' predictions and, once outcomes arrive, their real quality.

Reads the server's request log (one line per scored instance, tagged with variant and version)
and the outcomes by instance id (the simulator's `purchased` column, joined on impression_id).
Per variant: instances, users, version(s), mean score, and on the labelled share the purchase
rate, AUC, log loss and calibration (mean score / purchase rate), and NDCG@k of each request's
labelled rows ranked by the variant's scores (contract.ranking, grouped by the span's request_id;
a variant is assigned per user, so a request is scored by one variant). The AUC difference comes
with a seeded bootstrap 95% interval, because a few thousand impressions rarely settle an A/B
test. Pure numpy, so it runs in either environment.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from typing import Any

import numpy as np

from contract import REQUEST_ID
from contract.ranking import ndcg_at_k
from serving.request_log import read_log


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Rank AUC with ties averaged (the Mann-Whitney U statistic); None without both classes."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def read_outcomes(span_dir: str, id_field: str = "impression_id", label: str = "purchased") -> dict:
    """id -> 0/1 from every CSV of a span folder."""
    outcomes: dict[str, int] = {}
    files = sorted(glob.glob(os.path.join(span_dir, "*.csv")))
    if not files:
        raise FileNotFoundError(f"{span_dir}: no CSV files with outcomes")
    for path in files:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {id_field, label} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
            for row in reader:
                outcomes[row[id_field]] = int(row[label])
    return outcomes


def read_request_ids(span_dir: str, id_field: str = "impression_id") -> dict[str, str]:
    """id -> request_id from every CSV of a span folder; empty when the export has no requests."""
    requests: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(span_dir, "*.csv"))):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if REQUEST_ID not in (reader.fieldnames or []):
                return {}
            for row in reader:
                requests[row[id_field]] = row[REQUEST_ID]
    return requests


def quality(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    eps = 1e-7
    clipped = np.clip(p, eps, 1 - eps)
    rate = float(y.mean()) if len(y) else None
    return {
        "labelled": int(len(y)),
        "purchase_rate": rate,
        "auc": auc(y, p) if len(y) else None,
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
        if len(y)
        else None,
        "calibration": float(p.mean() / rate) if len(y) and rate else None,
    }


def _bootstrap_auc_diff(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], rounds: int, seed: int
) -> tuple[float, float] | None:
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        ia = rng.integers(0, len(a[0]), len(a[0]))
        ib = rng.integers(0, len(b[0]), len(b[0]))
        auc_a, auc_b = auc(a[0][ia], a[1][ia]), auc(b[0][ib], b[1][ib])
        if auc_a is not None and auc_b is not None:
            diffs.append(auc_b - auc_a)
    if not diffs:
        return None
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def build_report(
    log_path: str,
    outcomes: dict[str, int],
    rounds: int = 200,
    seed: int = 0,
    requests: dict[str, str] | None = None,
    ndcg_k: int = 10,
) -> dict[str, Any]:
    records = read_log(log_path)
    if not records:
        raise ValueError(f"{log_path}: no predictions logged")
    variants: dict[str, dict[str, Any]] = {}
    labelled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in sorted({r["variant"] or "all" for r in records}):
        rows = [r for r in records if (r["variant"] or "all") == name]
        scores = np.array([r["score"] for r in rows], dtype=float)
        known = [(outcomes[r["id"]], r["score"], r["id"]) for r in rows if r.get("id") in outcomes]
        y = np.array([k[0] for k in known], dtype=float)
        p = np.array([k[1] for k in known], dtype=float)
        labelled[name] = (y, p)
        grouped = [(k[0], k[1], requests[k[2]]) for k in known if requests and k[2] in requests]
        ranking = ndcg_at_k(
            np.array([g[1] for g in grouped]),
            np.array([g[0] for g in grouped]),
            np.array([g[2] for g in grouped]),
            ndcg_k,
        )
        variants[name] = {
            "versions": sorted({r["version"] for r in rows}, key=int),
            "instances": len(rows),
            "users": len({r["features"].get("user_id") for r in rows}),
            "mean_score": float(scores.mean()),
            **quality(y, p),
            "ndcg": None if np.isnan(ranking.ndcg) else ranking.ndcg,
            "ndcg_requests": ranking.requests,
        }
    report: dict[str, Any] = {"log": log_path, "ndcg_k": ndcg_k, "variants": variants}
    if {"control", "candidate"} <= set(variants):
        a, b = variants["control"], variants["candidate"]
        if a["auc"] is not None and b["auc"] is not None:
            report["auc_difference"] = b["auc"] - a["auc"]
            report["auc_difference_95ci"] = _bootstrap_auc_diff(
                labelled["control"], labelled["candidate"], rounds, seed
            )
    return report


def render(report: dict[str, Any]) -> str:
    cols = ["versions", "instances", "users", "mean_score", "labelled", "purchase_rate", "auc",
            "log_loss", "calibration", "ndcg", "ndcg_requests"]  # fmt: skip
    lines = ["variant    " + " ".join(f"{c:>13}" for c in cols)]
    for name, v in report["variants"].items():
        cells = []
        for c in cols:
            value = v.get(c)
            if isinstance(value, float):
                cells.append(f"{value:>13.4f}")
            elif isinstance(value, list):
                cells.append(f"{','.join(value):>13}")
            else:
                cells.append(f"{'-' if value is None else value:>13}")
        lines.append(f"{name:<10} " + " ".join(cells))
    if "auc_difference" in report:
        ci = report.get("auc_difference_95ci")
        ci_text = f" (95% bootstrap interval {ci[0]:+.4f} .. {ci[1]:+.4f})" if ci else ""
        lines.append(f"AUC candidate - control: {report['auc_difference']:+.4f}{ci_text}")
    lines.append(f"ndcg: NDCG@{report.get('ndcg_k', 10)} per request of the labelled rows")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
