"""The notebook's last cell (RUN_FULL_WORKFLOW) runs the whole workflow: artifacts, promotion, current.json.

Every code cell, in order, with RAYOPS_RUN_FULL_WORKFLOW=1, against a local Ray and the moto S3 server, on
small synthetic data (test_notebook.py runs the cells with the full run off). ~30 s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import workflow_synth as synth
from workflow_helpers import REPO, make_buckets

NOTEBOOK = REPO / "notebooks" / "workflow.ipynb"


def test_full_workflow_cell_promotes_and_moves_current(
    ray_local: Any,
    moto_endpoint: str,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    buckets = make_buckets(s3)
    dataset = tmp_path / "powerconsumption.csv"
    dataset.write_bytes(synth.csv_bytes(synth.frame(days=35)))
    for name, value in {
        "MPLBACKEND": "Agg",
        "RAYOPS_BUCKETS": json.dumps(buckets.to_dict()),
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "RAYOPS_DATASET": str(dataset),
        "RAYOPS_HOLDOUT_WEEKS": "1",
        "RAYOPS_NUM_BOOST_ROUND": "60",
        "RAYOPS_RUN_FULL_WORKFLOW": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    for cell in cells:
        source = compile("".join(cell["source"]), f"{NOTEBOOK.name}:{cell['id']}", "exec")
        exec(source, namespace)  # noqa: S102  (runs our own notebook)

    metrics = namespace["metrics"]
    assert metrics["promoted"] is True, metrics.get("promotion")
    current = json.loads(s3.get_object(Bucket=buckets.models, Key="zone1/current.json")["Body"].read())
    assert current["model_uri"] == metrics["model_uri"] and current["run_id"] == metrics["run_id"]
    bucket, _, key = metrics["model_uri"].removeprefix("s3://").partition("/")
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    printed = capsys.readouterr().out
    assert f"current model: {metrics['model_uri']}" in printed
    assert '"promoted": true' in printed
