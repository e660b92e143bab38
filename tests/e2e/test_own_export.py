"""A shop's own export, written here without the simulator, runs the whole pipeline.

The data contract (contract/) is what the pipeline needs, not the simulator: this test writes a
daily span in the export's layout from the contract's column list and vocabularies with numpy
alone, with a purchase rule of its own, and the run validates, trains, blesses and pushes (one
span: the drift check against a previous span is the simulator-based tests' subject). The summary
has no ceiling to show (no data source registered under shop_ranking.ceilings knows this data),
and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from e2e_data import config_for

import contract
from pipelines.local_runner import run_local
from pipelines.summary import render

ROWS = 3000


def write_export(root: Path, span: int, rows: int, seed: int) -> None:
    """One span folder of the shop's CSV export (contract.COLUMNS, in that order)."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, len(contract.CATEGORIES), rows)
    price = np.round(rng.lognormal(3.5, 0.8, rows), 2)
    usual = np.round(price * rng.lognormal(0.0, 0.3, rows), 2)
    affinity = np.round(rng.beta(2.0, 5.0, rows), 4)
    position = rng.integers(contract.POSITIONS[0], contract.POSITIONS[1] + 1, rows)
    # The shop's own rule: affinity and a good price sell, low positions are seen less.
    logit = -2.6 + 4.0 * affinity - 0.9 * np.log(price / usual) - 0.08 * position
    frame = pd.DataFrame(
        {
            contract.EXAMPLE_ID: [f"own-{span}-{i}" for i in range(rows)],
            contract.REQUEST_ID: [f"own-{span}-r{i // 8}" for i in range(rows)],  # pages of 8
            "user_id": [f"u{u}" for u in rng.integers(0, 400, rows)],
            "product_id": [f"p{p}" for p in rng.integers(0, 300, rows)],
            "category": np.asarray(contract.CATEGORIES)[category],
            "brand": [
                f"{contract.CATEGORIES[c]}_brand_{b}"
                for c, b in zip(
                    category, rng.integers(0, contract.BRANDS_PER_CATEGORY, rows), strict=True
                )
            ],
            "price": price,
            "on_sale": rng.integers(0, 2, rows),
            "rating": np.round(rng.uniform(*contract.RATING, rows), 1),
            "user_avg_price": usual,
            "user_category_affinity": affinity,
            "days_since_last_visit": rng.geometric(0.2, rows) - 1,
            "device": rng.choice(contract.DEVICES, rows),
            "hour": rng.integers(contract.HOURS[0], contract.HOURS[1] + 1, rows),
            "referrer": rng.choice(contract.REFERRERS, rows),
            "country": rng.choice(contract.COUNTRIES, rows),
            "position": position,
            contract.LABEL: (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int),
        },
        columns=list(contract.COLUMNS),
    )
    (root / f"span-{span}").mkdir(parents=True)
    frame.to_csv(root / f"span-{span}" / "export.csv", index=False)


def test_an_export_written_without_the_simulator_runs_end_to_end(tmp_path):
    write_export(tmp_path / "data", 1, ROWS, seed=1)
    assert not (tmp_path / "data" / "manifest.json").exists()  # nothing of the simulator's
    config = config_for(tmp_path, "evaluation.min_auc=0.55")
    summary, _ = run_local(config)
    assert summary.span == 1
    assert set(summary.stages.values()) == {"COMPLETE"}, summary.stages
    assert summary.blessed and summary.pushed, summary.metrics
    assert summary.bayes_auc is None and summary.auc_gap is None
    assert "(no simulator manifest: ceiling unknown)" in render(summary)
