"""The ray_job module's log reading: progress, the job's own error and its metrics reach the play."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "modules"))
import ray_job


def test_summarize_logs_finds_last_progress_metrics_and_error() -> None:
    metrics = {"run_id": "r1", "holdout": {"xgboost": {"rmse": 1.5}}}
    logs = "\n".join(
        [
            "some ray noise",
            "[rayops] ingest: 52416 rows",
            "[rayops] train: round 10/200",
            f"RAYOPS_METRICS_JSON={json.dumps(metrics)}",
            "[rayops] error: target zone 4 is unknown: use 1, 2 or 3",
            "tail line",
        ]
    )
    out = ray_job.summarize_logs(logs, tail=2)
    assert out["progress"] == "[rayops] train: round 10/200"
    assert out["metrics"] == metrics
    assert out["error"] == "target zone 4 is unknown: use 1, 2 or 3"
    assert out["logs_tail"] == ["[rayops] error: target zone 4 is unknown: use 1, 2 or 3", "tail line"]


def test_summarize_logs_without_markers_reports_nothing_invented() -> None:
    out = ray_job.summarize_logs("a\nb\n", tail=10)
    assert out == {"logs_tail": ["a", "b"], "progress": ""}


def test_env_file_sets_variables_and_returns_only_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "ray-client.env"
    env.write_text('# comment\nRAY_AUTH_MODE=token\nRAYOPS_TEST_TOKEN_PATH="/etc/rayops/ray_auth_token"\n\n')
    # load_env_file writes os.environ: set then delete through monkeypatch, so that the teardown
    # removes what the call sets (RAY_AUTH_MODE=token must not reach the tests that run after this one).
    for key in ("RAY_AUTH_MODE", "RAYOPS_TEST_TOKEN_PATH"):
        monkeypatch.setenv(key, "unset-by-teardown")
        monkeypatch.delenv(key)
    keys = ray_job.load_env_file(str(env))
    assert keys == ["RAY_AUTH_MODE", "RAYOPS_TEST_TOKEN_PATH"]
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAYOPS_TEST_TOKEN_PATH"] == "/etc/rayops/ray_auth_token"
    assert ray_job.load_env_file(str(tmp_path / "missing.env")) == []
