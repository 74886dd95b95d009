"""The serving app in-process (plain FastAPI, the same object a Serve replica runs): routes, parity with
the offline evaluation, every bad input, batching, loading and rollback. ~20 s (the real dataset)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from moto_helpers import free_port
from serving_helpers import AUTH, MODELS, TOKEN, Trained, user_config

from rayops.serving.app import build_app
from rayops.serving.config import Replicas
from rayops.serving.deployment import index_api
from rayops.serving.model import ModelError, load, resolve
from rayops.serving.service import ModelService, Settings, token_digest
from rayops.workflow.features import LAGS, TIMESTAMP, feature_columns
from rayops.workflow.ingest import WEATHER, display_name
from rayops.workflow.s3 import S3Store


@pytest.fixture(scope="module")
def service(trained: Trained) -> ModelService:
    svc = ModelService(Settings(zone=1, max_rows=1000))
    asyncio.run(svc.reconfigure(user_config()))
    return svc


@pytest.fixture(scope="module")
def client(service: ModelService) -> Iterator[TestClient]:
    with TestClient(build_app(service)) as c:
        yield c


def kaggle(frame: pd.DataFrame, with_consumption: bool = True) -> list[dict[str, Any]]:
    """Rows as the dataset names them (the forecast route's input)."""
    columns = ["datetime", *WEATHER] + (["zone1"] if with_consumption else [])
    out = frame[columns].copy()
    out["datetime"] = out["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return [{display_name(k): v for k, v in row.items()} for row in out.to_dict("records")]


class Bodies:
    """Forecast bodies for any hour of ``raw``: the 168 hours before it with consumption, and its weather
    (the dataset's rows as the dataset names them, converted once)."""

    def __init__(self, raw: pd.DataFrame) -> None:
        self.stamps = raw["datetime"].to_numpy()
        self.readings = kaggle(raw)
        self.weather = kaggle(raw, with_consumption=False)

    def __call__(self, hour: pd.Timestamp) -> dict[str, Any]:
        start, at, end = np.searchsorted(
            self.stamps,
            [
                np.datetime64(hour - pd.Timedelta(hours=max(LAGS))),
                np.datetime64(hour),
                np.datetime64(hour + pd.Timedelta(hours=1)),
            ],
        )
        return {"readings": self.readings[start:at], "weather": self.weather[at:end]}


def forecast_body(raw: pd.DataFrame, hour: pd.Timestamp) -> dict[str, Any]:
    return Bodies(raw)(hour)


def rows_of(frame: pd.DataFrame) -> list[dict[str, float]]:
    return [
        dict(zip(feature_columns(), map(float, r), strict=True)) for r in frame[feature_columns()].to_numpy()
    ]


def test_predict_returns_the_offline_predictions_for_every_holdout_row(
    client: TestClient, trained: Trained
) -> None:
    holdout = trained.holdout
    got: list[float] = []
    for start in range(0, len(holdout), 1000):
        r = client.post(
            "/predict", json={"instances": rows_of(holdout.iloc[start : start + 1000])}, headers=AUTH
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == {"run_id": "run-b", "data_version": "data-of-run-b", "zone": 1}
        got += body["predictions"]
    assert len(got) == len(holdout) == 4 * 7 * 24
    np.testing.assert_allclose(got, trained.offline, rtol=1e-6)


def test_forecast_from_raw_readings_equals_the_offline_prediction_for_every_holdout_hour(
    client: TestClient, trained: Trained
) -> None:
    got = []
    bodies = Bodies(trained.raw)
    for hour in trained.holdout[TIMESTAMP]:
        r = client.post("/forecast", json=bodies(hour), headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["timestamp"] == hour.isoformat()
        got.append(r.json()["prediction"])
    np.testing.assert_allclose(got, trained.offline, rtol=1e-6)


def test_model_route_says_what_is_served(client: TestClient) -> None:
    r = client.get("/model", headers=AUTH)
    assert r.status_code == 200
    info = r.json()
    assert (info["run_id"], info["zone"], info["data_version"]) == ("run-b", 1, "data-of-run-b")
    assert info["features"] == feature_columns() and info["metrics"] == {"xgboost": {"rmse": 1.0}}
    assert info["loaded_at"] and info["promoted_at"] == "2026-12-01T00:00:01Z" and info["last_error"] is None


def test_openapi_page_is_there(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/forecast", "/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def _one_row(trained: Trained) -> dict[str, float]:
    return rows_of(trained.holdout.iloc[:1])[0]


def _bad_cases(trained: Trained) -> list[tuple[str, dict[str, Any], int, str]]:
    row = _one_row(trained)
    hour = trained.holdout[TIMESTAMP].iloc[0]
    good = forecast_body(trained.raw, hour)
    short = {"readings": good["readings"][-200:], "weather": good["weather"]}
    swapped = {
        "readings": [good["readings"][1], good["readings"][0], *good["readings"][2:]],
        "weather": good["weather"],
    }
    dup = {"readings": [good["readings"][0], *good["readings"]], "weather": good["weather"]}
    text_value = {**good, "weather": [{**good["weather"][0], "Temperature": "warm"}, *good["weather"][1:]]}
    return [
        (
            "not json",
            {"content": b"{instances: nope", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            "wrong content type",
            {"content": json.dumps({"instances": [row]}), "headers": {"Content-Type": "text/plain"}},
            415,
            "must be JSON",
        ),
        ("empty body", {"content": b"", "headers": {"Content-Type": "application/json"}}, 400, "empty"),
        ("a list body", {"json": [row]}, 400, "not an object"),
        (
            "unknown feature",
            {"json": {"instances": [{**row, "colour": 1.0}]}},
            422,
            "unknown feature 'colour'",
        ),
        (
            "missing feature",
            {"json": {"instances": [{k: v for k, v in row.items() if k != "temperature"}]}},
            422,
            "lacks the feature 'temperature'",
        ),
        (
            "a string for a number",
            {"json": {"instances": [{**row, "humidity": "high"}]}},
            422,
            "instances[0].humidity is 'high'",
        ),
        (
            "NaN",
            {
                "content": json.dumps({"instances": [{**row, "humidity": float("nan")}]}),
                "headers": {"Content-Type": "application/json"},
            },
            422,
            "NaN",
        ),
        (
            "Infinity",
            {
                "content": json.dumps({"instances": [{**row, "humidity": float("inf")}]}),
                "headers": {"Content-Type": "application/json"},
            },
            422,
            "Infinity",
        ),
        ("no rows", {"json": {"instances": []}}, 422, "empty"),
        ("too many rows", {"json": {"instances": [row] * 1001}}, 413, "more than 1000"),
        (
            "body too large",
            {
                "content": b"{" + b" " * (5 * 1024 * 1024) + b"}",
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "larger than",
        ),
        ("too little history", {"json": short, "path": "/forecast"}, 422, "too little history"),
        ("readings out of order", {"json": swapped, "path": "/forecast"}, 422, "in time order"),
        ("readings duplicated", {"json": dup, "path": "/forecast"}, 422, "repeats the time"),
        ("a word for a temperature", {"json": text_value, "path": "/forecast"}, 422, "Temperature is 'warm'"),
        (
            "forecast without weather",
            {"json": {"readings": good["readings"], "weather": []}, "path": "/forecast"},
            422,
            "weather is empty",
        ),
        ("unknown forecast field", {"json": {**good, "when": 1}, "path": "/forecast"}, 422, "when"),
    ]


def test_every_bad_input_is_a_4xx_with_one_sentence_and_the_replica_keeps_serving(
    client: TestClient, trained: Trained
) -> None:
    for name, request, status, words in _bad_cases(trained):
        path = request.pop("path", "/predict")
        headers = {**AUTH, **request.pop("headers", {})}
        r = client.post(path, headers=headers, **request)
        assert r.status_code == status, (name, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error"}, (name, body)
        sentence = body["error"]
        assert words in sentence and "\n" not in sentence and "Traceback" not in sentence, (name, sentence)
    r = client.post("/predict", json={"instances": [_one_row(trained)]}, headers=AUTH)
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "needs Authorization: Bearer"),
        ({"Authorization": "Bearer " + "0" * 64}, "wrong"),
        ({"Authorization": TOKEN}, "needs"),
    ],
    ids=["no token", "wrong token", "no scheme"],
)
def test_every_route_needs_the_token(
    client: TestClient, trained: Trained, headers: dict[str, str], words: str
) -> None:
    for method, path, body in (
        ("post", "/predict", {"instances": [_one_row(trained)]}),
        ("post", "/forecast", {}),
        ("get", "/model", None),
    ):
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert words in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"


def test_unknown_route_and_unserved_zone_are_json_404s() -> None:
    with TestClient(index_api([1])) as index:
        r = index.post("/zone3/predict", json={})
        assert (
            r.status_code == 404
            and "zone3 is not served" in r.json()["error"]
            and "/zone1" in r.json()["error"]
        )
        assert index.get("/").json() == {"zones": [{"zone": 1, "prefix": "/zone1"}]}


def test_concurrent_single_row_calls_share_one_predict(trained: Trained) -> None:
    """The deployment on a real local Ray Serve (~15 s): @serve.batch gives concurrent calls one predict."""
    import ray
    from ray import serve

    from rayops.serving.deployment import ZoneModel

    rows = trained.holdout[feature_columns()].to_numpy()[:64]
    settings = {"zone": 1, "max_batch_size": 32, "batch_wait_timeout_s": 0.05}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # Serve's proxy on a free loopback port: 8000 may be taken on the controller (a tunnel to a cluster).
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        # The replica's concurrency serve.yml deploys (rayops.serving.config.Replicas), not Serve's default
        # of 5, which would cap every batch at 5 rows whatever @serve.batch allows.
        deployment = ZoneModel.options(
            user_config=user_config(), max_ongoing_requests=Replicas().max_ongoing_requests
        )
        handle = serve.run(deployment.bind(settings), name="zone1")
        before = handle.stats.remote().result(timeout_s=60)
        responses = [handle.predict.remote([list(r)]) for r in rows]
        results = [r.result(timeout_s=60) for r in responses]
        after = handle.stats.remote().result(timeout_s=60)
    finally:
        serve.shutdown()
        ray.shutdown()
    calls, batches = after["calls"] - before["calls"], after["batches"] - before["batches"]
    # 64 calls at once, batches of up to 32 within 50 ms: at least 2 predicts and at most 12 (5 measured at
    # load 2); no batching would be 64, and Serve's default concurrency of 5 caps batches at 5 rows (>= 13).
    assert calls == 64 and 2 <= batches <= 12, (calls, batches)
    assert {r["run_id"] for r in results} == {"run-b"}
    np.testing.assert_allclose([r["predictions"][0] for r in results], trained.offline[:64], rtol=1e-6)


def test_health_fails_until_a_model_is_loaded_and_a_bad_model_never_replaces_a_good_one(
    trained: Trained,
) -> None:
    svc = ModelService(Settings(zone=1))
    with pytest.raises(RuntimeError, match="no model loaded"):
        svc.check_health()
    broken = {
        "model": resolve(S3Store(), MODELS, 1, "run-a").to_dict()
        | {
            "run_id": "run-broken",
            "model_uri": f"s3://{MODELS}/zone1/runs/run-broken/model.ubj",
            "model_version_id": None,
            "metadata_uri": f"s3://{MODELS}/zone1/runs/run-broken/metadata.json",
            "metadata_version_id": None,
        },
        "token_sha256": token_digest(TOKEN),
    }
    with pytest.raises(ModelError, match="is not an XGBoost model"):
        asyncio.run(svc.reconfigure(broken))  # nothing to fall back to: the replica is not healthy
    with pytest.raises(RuntimeError):
        svc.check_health()
    asyncio.run(svc.reconfigure(user_config("run-a")))  # a pinned older run (rollback)
    svc.check_health()
    assert svc.model is not None and svc.model.source.run_id == "run-a"
    asyncio.run(svc.reconfigure(broken))  # fails, logs, keeps run-a serving
    assert svc.model.source.run_id == "run-a" and "is not an XGBoost model" in (svc.last_error or "")
    asyncio.run(svc.reconfigure(user_config()))  # the promoted pointer: run-b
    assert svc.model.source.run_id == "run-b" and svc.last_error is None


def test_resolve_refuses_what_must_not_be_served(trained: Trained) -> None:
    store = S3Store()
    with pytest.raises(ModelError, match="was not promoted"):
        resolve(store, MODELS, 1, "run-failed")
    with pytest.raises(ModelError, match="has no run 'nope'"):
        resolve(store, MODELS, 1, "nope")
    with pytest.raises(ModelError, match=r"zone 2 has no promoted model .* run train.yml first"):
        resolve(store, MODELS, 2)
    with pytest.raises(ModelError, match="is not an XGBoost model"):
        load(store, resolve(store, MODELS, 1, "run-broken"))
