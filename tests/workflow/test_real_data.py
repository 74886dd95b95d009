"""The one full-dataset run: the seed lab's CSV through `python -m rayops.workflow run` with the
default settings, on a local Ray and the moto S3 server. Marked slow (about 2 minutes here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import data_args, make_buckets, metrics_line, run_cli

from rayops.workflow.config import SEED_REFERENCE

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "powerconsumption.csv"


@pytest.mark.slow
def test_full_dataset_beats_the_seed(moto_endpoint: str, s3: Any, tmp_path: Path) -> None:
    if not SHARED_DATA.is_file():
        pytest.fail(f"{SHARED_DATA} is missing: this test needs the seed lab's dataset (CI provides it)")
    buckets = make_buckets(s3)
    output = tmp_path / "metrics.json"
    proc = run_cli(
        *data_args(SHARED_DATA, buckets.to_dict(), moto_endpoint),
        "--run-id",
        "full-data",
        "--local-cpus",
        "2",
        "--output-metrics",
        str(output),
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    m = metrics_line(proc.stdout)
    print(json.dumps({k: m[k] for k in ("holdout", "seed_protocol", "splits", "timings_s")}, indent=2))
    assert m["promoted"] is True
    assert m["splits"]["holdout"]["test_rows"] == 4 * 168
    assert (
        m["splits"]["seed_protocol"]["test_rows"] + m["splits"]["seed_protocol"]["train_rows"] == 8736 - 168
    )
    seed = m["seed_protocol"]["xgboost"]
    assert seed["rmse"] < SEED_REFERENCE["rmse"] == 8029.0
    assert seed["mae"] < SEED_REFERENCE["mae"]
    assert m["holdout"]["xgboost"]["rmse"] < m["holdout"]["baseline"]["rmse"]
    assert m["seed_protocol"]["xgboost"]["rmse"] < m["seed_protocol"]["baseline"]["rmse"]
    assert json.loads(output.read_text()) == m
