"""Executes the notebooks with papermill (documentation that is also a test) and renders HTML.

`python -m pipelines.docs` runs them with their own defaults (the full experience) and writes HTML
to outputs/docs/; the test tier (tests/notebooks) calls `execute()` with `ci_parameters()` (small
data, a few minutes) and keeps the executed copies under outputs/notebooks/executed/, which the
docs site renders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "shop-ranking"  # registered into the venv by `make env`
TIMEOUT_S = 900  # per cell


def notebooks() -> list[Path]:
    """Numbered notebooks in reading order (02 runs the pipeline that 03-08 then read back)."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def ci_parameters(work_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Small-data parameters per notebook. 02 runs the pipeline once; 03-08 get the same
    pipeline parameters and read that run back from ML Metadata (its metrics, Transform output
    and pushed model) instead of running it again."""
    work = Path(work_dir)
    pipeline = {
        "rows": 4000,
        "train_steps": 60,  # ~2 epochs of 3,200 rows: more overfits the hashed ids
        "batch_size": 128,
        "min_auc": 0.6,
        "min_ndcg": 0.5,  # ~50 eval pages with a purchase: NDCG@10 moves by ~0.04
        "min_slice_auc": None,  # ~100-row device slices: too noisy for a bar
        "output_root": str(work / "pipeline"),
        "data_root": str(work / "pipeline_data"),
    }
    return {
        # 600 pages a span: drift shows on device and referrer above the pages' own noise
        "01_data": {"rows": 6000, "data_root": str(work / "01_data")},
        "02_pipeline": pipeline,
        # ~50 eval pages with a purchase: NDCG@10's gap moves by several hundredths
        "03_training_and_evaluation": {**pipeline, "max_gap": 0.06, "max_ndcg_gap": 0.12},
        "04_tuning_with_katib": {
            **pipeline,
            "tuning_trials": 2,
            "tuning_parallel": 2,
            "tuning_train_steps": 40,
        },
        "05_kubeflow": {"output_root": pipeline["output_root"]},  # compiles only
        "06_serving_and_ab": {**pipeline, "traffic_rows": 2000},
        "07_monitoring_and_retraining": {
            **pipeline,
            # 4,000-row windows (400 pages) of 02's shop: a page's context is one draw
            "traffic_rows": 8000,
            # the small run's model (eval AUC ~0.73) gets quality limits to match min_auc's
            "min_live_auc": 0.6,
            "max_calibration_error": 0.5,
            "retrain": "off",  # the trigger confirms and alerts; the e2e tier runs a retrain
        },
        # 300 pages a day of 02's shop (100 products): every judged request's pool is the catalog
        "08_recommendations": {
            **pipeline,
            "day_rows": 3000,
            "judged_users": 40,
            "max_ndcg_gap": 0.12,  # as 03's: ~50 eval pages
        },
    }


def execute(notebook: Path, out_dir: str | Path, parameters: dict[str, Any] | None = None) -> Path:
    """Runs `notebook` on the project's kernel from the repo root; the executed copy is kept, with
    the failing cell's traceback in it when a cell fails (papermill raises naming that cell)."""
    import papermill

    out = Path(out_dir) / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook),
        str(out),
        parameters=parameters or {},
        kernel_name=KERNEL_NAME,
        cwd=str(REPO_ROOT),
        execution_timeout=TIMEOUT_S,
        progress_bar=False,
        log_output=False,
    )
    return out


def render_html(executed: Path, html_dir: str | Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    target = Path(html_dir) / executed.with_suffix(".html").name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO_ROOT / "outputs" / "docs"))
    parser.add_argument(
        "--ci", action="store_true", help="small-data parameters (minutes, not tens)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    parameters = ci_parameters(out / "work") if args.ci else {}
    for notebook in notebooks():
        print(f"executing {notebook.name} ...", flush=True)
        executed = execute(notebook, out / "executed", parameters.get(notebook.stem))
        print(f"  -> {render_html(executed, out / 'html')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
