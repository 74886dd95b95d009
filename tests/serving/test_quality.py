"""The model's quality in live use (issue 13, item 4), in-process: drift scores against the training
distribution saved with the model, and the error on posted actuals. The same app a Serve replica runs; the
exporter's metrics on a live Prometheus are tests/cluster/test_monitoring.py's. ~10 s."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from serving_helpers import AUTH, TOKEN, Trained, user_config

from rayops.ansible_env import REPO
from rayops.serving.app import build_app
from rayops.serving.quality import QualityMonitor
from rayops.serving.service import ModelService, Settings
from rayops.workflow import drift
from rayops.workflow.evaluate import regression_metrics
from rayops.workflow.features import TARGET, feature_columns

MONITORING = yaml.safe_load((REPO / "roles" / "monitoring" / "defaults" / "main.yml").read_text())
THRESHOLD = float(MONITORING["monitoring_alert_drift_psi"])  # the ModelDrift alert's default
NAMES = feature_columns()


def instances(frame: pd.DataFrame) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in frame[NAMES].to_dict("records")]


def shifted(frame: pd.DataFrame, degrees: float) -> pd.DataFrame:
    out = frame.copy()
    for column in [c for c in NAMES if c.startswith("temperature")]:  # the reading and its lags
        out[column] = out[column] + degrees
    return out


@pytest.fixture
def fresh(trained: Trained) -> Iterator[tuple[ModelService, TestClient]]:
    """A service of its own (the quality windows start empty), serving run-b (which has a drift reference)."""
    service = ModelService(Settings(zone=1, quality_window=500, drift_min_rows=200))
    asyncio.run(service.reconfigure(user_config()))
    with TestClient(build_app(service)) as client:
        yield service, client


def quality(client: TestClient) -> dict[str, Any]:
    reply = client.get("/model", headers=AUTH)
    assert reply.status_code == 200, reply.text
    out: dict[str, Any] = reply.json()["quality"]
    return out


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    values = np.random.default_rng(0).normal(size=10_000)
    edges = drift.bin_edges(values)
    assert len(edges) == drift.BINS - 1
    same = drift.shares(values, edges)
    assert drift.psi(same, same) == 0.0
    assert same == pytest.approx(np.full(drift.BINS, 1 / drift.BINS), abs=1e-3)
    scores = [drift.psi(drift.shares(values + s, edges), same) for s in (0.1, 0.5, 2.0)]
    assert scores == sorted(scores) and scores[0] > 0
    # A column of two values gets its two values as edges: below both (never seen), each value's own bin.
    two = np.array([0.0, 1.0] * 50)
    assert drift.bin_edges(two).tolist() == [0.0, 1.0]
    assert drift.shares(two, drift.bin_edges(two)).tolist() == [0.0, 0.5, 0.5]


def test_drift_stays_low_for_training_like_inputs_and_rises_for_shifted_temperatures(
    fresh: tuple[ModelService, TestClient], trained: Trained
) -> None:
    _, client = fresh
    sample = trained.train.sample(n=500, random_state=0)
    assert client.post("/predict", json={"instances": instances(sample.head(150))}, headers=AUTH).is_success
    waiting = quality(client)["drift"]
    assert waiting["state"] == "waiting for 200 rows" and "feature_psi" not in waiting
    assert client.post("/predict", json={"instances": instances(sample.iloc[150:])}, headers=AUTH).is_success
    calm = quality(client)["drift"]
    assert calm["state"] == "scored" and calm["rows"] == 500
    assert set(calm["feature_psi"]) == set(drift.monitored_features())
    assert max(calm["feature_psi"].values()) < 0.1, calm["feature_psi"]
    assert calm["prediction_psi"] < 0.1

    # The same rows 15 °C warmer replace the window (500 rows): temperature drifts, humidity does not.
    hot = shifted(sample, 15.0)
    assert client.post("/predict", json={"instances": instances(hot)}, headers=AUTH).is_success
    scores = quality(client)["drift"]["feature_psi"]
    print(f"\nPSI temperature: {calm['feature_psi']['temperature']:.3f} -> {scores['temperature']:.3f}")
    assert scores["temperature"] > THRESHOLD and scores["temperature_lag24"] > THRESHOLD
    assert scores["humidity"] < 0.1
    assert quality(client)["totals"]["predictions"] == 1000


def test_actuals_give_the_offline_error_of_those_rows_and_a_rolling_window(
    fresh: tuple[ModelService, TestClient], trained: Trained
) -> None:
    _, client = fresh
    holdout = trained.holdout
    offline = regression_metrics(holdout[TARGET].to_numpy(), trained.offline)
    first, second = holdout.iloc[:300], holdout.iloc[300:]
    replies = [
        client.post(
            "/actuals",
            json={"instances": instances(part), "actuals": part[TARGET].astype(float).tolist()},
            headers=AUTH,
        )
        for part in (first, second)
    ]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    one = replies[0].json()
    assert one["count"] == 300 and one["model"]["run_id"] == "run-b"
    part = regression_metrics(first[TARGET].to_numpy(), trained.offline[:300])
    assert one["mae"] == pytest.approx(part["mae"], abs=1e-6)
    assert one["rmse"] == pytest.approx(part["rmse"], abs=1e-6)
    # The window holds the last 500 errors; the totals hold all 672, which give the offline MAE exactly.
    live = replies[1].json()["live_error"]
    assert live["count"] == 500
    last = regression_metrics(holdout[TARGET].to_numpy()[-500:], trained.offline[-500:])
    assert live["mae"] == pytest.approx(last["mae"], abs=1e-6)
    assert live["rmse"] == pytest.approx(last["rmse"], abs=1e-6)
    totals = quality(client)["totals"]
    assert totals["actuals"] == len(holdout)
    assert totals["abs_error"] / totals["actuals"] == pytest.approx(offline["mae"], abs=1e-6)
    assert np.sqrt(totals["squared_error"] / totals["actuals"]) == pytest.approx(offline["rmse"], abs=1e-6)
    # Actuals are not live traffic: they move neither the drift window nor the predictions count.
    assert totals["predictions"] == 0 and quality(client)["drift"]["rows"] == 0


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        (
            {"instances": [{}], "actuals": [1.0, 2.0]},
            "2 actuals for 1 instances: send one observed value per row",
        ),
        ({"instances": [{}]}, "actuals is missing (see GET /docs)"),
        ({"instances": [{}], "actuals": ["x"]}, "actuals[0] is 'x': it must be a finite number"),
        ({"instances": [{}], "actuals": []}, "actuals is empty: send at least one row"),
    ],
)
def test_bad_actuals_are_refused_with_one_sentence(
    fresh: tuple[ModelService, TestClient], body: dict[str, Any], sentence: str
) -> None:
    _, client = fresh
    reply = client.post("/actuals", json=body, headers=AUTH)
    assert reply.status_code == 422 and reply.json() == {"error": sentence}
    assert quality(client)["totals"]["actuals"] == 0


def test_actuals_need_the_token(fresh: tuple[ModelService, TestClient], trained: Trained) -> None:
    _, client = fresh
    body = {"instances": instances(trained.holdout.head(1)), "actuals": [1.0]}
    assert client.post("/actuals", json=body).status_code == 401
    wrong = {"Authorization": f"Bearer {TOKEN[:-1]}x"}
    assert client.post("/actuals", json=body, headers=wrong).status_code == 401


def test_a_model_without_a_reference_is_served_unscored_and_a_new_model_starts_a_new_window(
    fresh: tuple[ModelService, TestClient], trained: Trained
) -> None:
    service, client = fresh
    rows = instances(trained.train.sample(n=250, random_state=1))
    assert client.post("/predict", json={"instances": rows}, headers=AUTH).is_success
    before = service.quality
    assert before is not None and quality(client)["drift"]["state"] == "scored"

    asyncio.run(service.reconfigure(user_config("run-a")))  # trained before the reference existed
    described = client.get("/model", headers=AUTH).json()
    assert described["run_id"] == "run-a" and described["drift_reference"] is None
    assert described["drift_problem"] == (
        "run 'run-a' has no drift reference in its metadata (an older rayops trained it): "
        "no drift scores until a model trained with this version is promoted"
    )
    assert service.quality is not before and service.monitor_of(service.model) is service.quality  # type: ignore[arg-type]
    assert client.post("/predict", json={"instances": rows}, headers=AUTH).is_success
    now = quality(client)
    assert now["drift"]["state"] == "no reference" and now["totals"]["predictions"] == 250
    # Live error needs no reference.
    body = {"instances": rows[:3], "actuals": [1000.0, 2000.0, 3000.0]}
    assert client.post("/actuals", json=body, headers=AUTH).json()["live_error"]["count"] == 3


def test_the_ring_keeps_the_last_rows_in_any_split() -> None:
    monitor = QualityMonitor(None, window=5, min_rows=1)
    stream = np.arange(12, dtype="float64")
    for part in (stream[:3], stream[3:4], stream[4:11], stream[11:]):
        monitor.observe_actuals(part, np.zeros(len(part)))
    live = monitor.snapshot()["live_error"]
    assert live["count"] == 5 and live["mae"] == pytest.approx(np.mean(stream[-5:]))
    assert monitor.snapshot()["totals"]["abs_error"] == stream.sum()


def test_settings_refuse_a_window_smaller_than_the_drift_minimum() -> None:
    expected = "drift_min_rows must be between 1 and quality_window (100), got 200"
    with pytest.raises(ValueError, match=re.escape(expected)):
        Settings.from_args({"zone": 1, "quality_window": 100, "drift_min_rows": 200})
