"""The notebook deployed to JupyterLab: a clean nbformat-4 file whose code cells run, in order,
against a local Ray and the moto S3 server (on the cluster they run against the real ones)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import workflow_synth as synth
from workflow_helpers import REPO, make_buckets

NOTEBOOK = REPO / "notebooks" / "workflow.ipynb"


def load() -> dict[str, Any]:
    notebook: dict[str, Any] = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return notebook


def code_cells() -> list[dict[str, Any]]:
    return [cell for cell in load()["cells"] if cell["cell_type"] == "code"]


def run_cell(cell: dict[str, Any], namespace: dict[str, Any]) -> None:
    exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}:{cell['id']}", "exec"), namespace)  # noqa: S102 (runs our own notebook)


def test_notebook_is_clean_nbformat_4() -> None:
    notebook = load()
    assert notebook["nbformat"] == 4
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(ids) == len(set(ids))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert len(code) >= 8
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None  # shipped without outputs
    text = "".join("".join(cell["source"]) for cell in notebook["cells"])
    assert "AWS_SECRET_ACCESS_KEY" not in text and "AWS_ACCESS_KEY_ID" not in text  # node credentials only


def test_notebook_runs_top_to_bottom(
    ray_local: Any, moto_endpoint: str, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buckets = make_buckets(s3)
    dataset = tmp_path / "powerconsumption.csv"
    dataset.write_bytes(synth.csv_bytes(synth.frame(days=35)))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("RAYOPS_BUCKETS", json.dumps(buckets.to_dict()))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("RAYOPS_DATASET", str(dataset))
    monkeypatch.setenv("RAYOPS_HOLDOUT_WEEKS", "1")
    monkeypatch.setenv("RAYOPS_NUM_BOOST_ROUND", "60")
    monkeypatch.setenv("RAYOPS_RUN_FULL_WORKFLOW", "0")  # the full run is the entrypoint's e2e test
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    for cell in code_cells():
        run_cell(cell, namespace)

    head = s3.head_object(Bucket=buckets.raw, Key=namespace["ingested"].uri.split("/", 3)[3])
    assert namespace["ingested"].data_version == head["VersionId"]
    results = namespace["results"]
    assert list(results.columns) == ["rmse", "mae", "mape", "r2"]
    assert len(results) == 4
    assert set(namespace["trained"].boosters) == {"holdout", "seed_protocol"}


def run_settings_cell(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the notebook's first code cell (the settings) and return its names."""
    monkeypatch.delenv("RAYOPS_DATASET", raising=False)
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    run_cell(code_cells()[0], namespace)
    return namespace


def test_notebook_reads_the_current_models_data_by_default(
    moto_endpoint: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    buckets = make_buckets(s3)
    monkeypatch.setenv("RAYOPS_BUCKETS", json.dumps(buckets.to_dict()))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("RAYOPS_TARGET_ZONE", "2")
    # No model yet: the UCI archive.
    assert run_settings_cell(monkeypatch)["DATASET"].startswith("https://archive.ics.uci.edu/")

    raw_uri = f"s3://{buckets.raw}/datasets/powerconsumption.csv"
    metadata = {"data": {"raw_uri": raw_uri, "data_version": "v1"}}
    s3.put_object(Bucket=buckets.models, Key="zone2/runs/r1/metadata.json", Body=json.dumps(metadata))
    current = {"run_id": "r1", "metadata_uri": f"s3://{buckets.models}/zone2/runs/r1/metadata.json"}
    s3.put_object(Bucket=buckets.models, Key="zone2/current.json", Body=json.dumps(current))
    assert run_settings_cell(monkeypatch)["DATASET"] == raw_uri

    monkeypatch.setenv("RAYOPS_TARGET_ZONE", "3")  # another zone's model is not this zone's data
    assert run_settings_cell(monkeypatch)["DATASET"].startswith("https://archive.ics.uci.edu/")
