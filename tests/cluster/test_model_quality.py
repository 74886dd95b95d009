"""The served model's quality on the live cluster (issue 13, item 4): drift and live error in Prometheus.

Through serve.yml's and site.yml's printed tunnels, as a user: rows like the training rows keep every drift
score low; the same rows 15 °C warmer raise the temperature's above the ModelDrift alert's threshold, and the
alert's rule goes pending in Prometheus; the holdout's true consumption posted to /actuals makes the error
Prometheus computes from the replicas' counters equal the run's offline holdout MAE and RMSE (1e-6).
Runs after test_serve (the model it serves) and before test_monitoring (whose dashboard test needs these
series). ~2 min: each phase waits for the replicas' export (5 s), Ray's metrics report and a scrape.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from cluster_helpers import REPO, RayCluster, ServeApi
from test_monitoring import _query

from rayops.workflow.evaluate import time_split
from rayops.workflow.features import TARGET

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]

MONITORING = yaml.safe_load((REPO / "roles" / "monitoring" / "defaults" / "main.yml").read_text())
THRESHOLD = float(MONITORING["monitoring_alert_drift_psi"])
CALLS = 40  # per phase: ~20 calls per replica of the two, so each replica's window (1000 rows) turns over
ROWS = 100


def _served_run(ray_cluster: RayCluster, serve_api: ServeApi) -> tuple[dict[str, Any], pd.DataFrame]:
    """The run zone 1 serves now, its metadata, and its feature rows (read back from the features bucket)."""
    status, info = serve_api.call("/zone1/model")
    assert status == 200, info
    s3 = ray_cluster.cloud.s3_client()

    def get(uri: str, version: str | None = None) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        args = {"Bucket": bucket, "Key": key} | ({"VersionId": version} if version else {})
        body: bytes = s3.get_object(**args)["Body"].read()
        return body

    bucket, _, key = info["model_uri"].removeprefix("s3://").partition("/")
    metadata = json.loads(get(f"s3://{bucket}/{key.rsplit('/', 1)[0]}/metadata.json"))
    assert metadata["run_id"] == info["run_id"] and metadata.get("drift"), sorted(metadata)
    fbucket, _, prefix = metadata["data"]["features_uri"].removeprefix("s3://").partition("/")
    parts = s3.list_objects_v2(Bucket=fbucket, Prefix=prefix.rstrip("/") + "/")["Contents"]
    tables = [
        pq.read_table(io.BytesIO(get(f"s3://{fbucket}/{p['Key']}")))
        for p in parts
        if p["Key"].endswith(".parquet")
    ]
    frame = pd.concat([t.to_pandas() for t in tables]).sort_values("timestamp").reset_index(drop=True)
    return metadata, frame


def _post_rows(serve_api: ServeApi, frame: pd.DataFrame, features: list[str]) -> None:
    for start in range(0, CALLS * ROWS, ROWS):
        part = frame.iloc[start % len(frame) : start % len(frame) + ROWS]
        rows = [{k: float(v) for k, v in r.items()} for r in part[features].to_dict("records")]
        status, reply = serve_api.call("/zone1/predict", {"instances": rows})
        assert status == 200, reply


def _until(check: Callable[[], Any], what: str, deadline_s: float = 120) -> Any:
    start = time.monotonic()
    while True:
        result = check()
        if result:
            print(f"\n{what}: {time.monotonic() - start:.0f} s")
            return result
        assert time.monotonic() - start < deadline_s, f"{what}: not within {deadline_s:.0f} s"
        time.sleep(3)


def test_drift_scores_stay_low_for_training_like_rows_and_rise_for_warmer_ones(
    ray_cluster: RayCluster, serve_api: ServeApi, tunnel: dict[str, int]
) -> None:
    port = tunnel["prometheus"]
    metadata, frame = _served_run(ray_cluster, serve_api)
    run_id, features = metadata["run_id"], metadata["features"]
    train, _ = time_split(frame, int(metadata["splits"]["holdout"]["weeks"]))
    sample = train.sample(n=CALLS * ROWS, random_state=0, replace=len(train) < CALLS * ROWS)
    psi = f'ray_rayops_feature_drift_psi{{application="zone1",run_id="{run_id}",feature="temperature"}}'

    _post_rows(serve_api, sample, features)

    def calm() -> list[float]:
        values = [float(r["value"][1]) for r in _query(port, psi)]
        return values if len(values) == 2 and max(values) < 0.1 else []

    low = _until(calm, "both replicas' temperature PSI below 0.1 in Prometheus")
    others = _query(port, f'max(ray_rayops_feature_drift_psi{{application="zone1",run_id="{run_id}"}})')
    assert float(others[0]["value"][1]) < 0.1, others
    assert _query(port, f'ray_rayops_prediction_drift_psi{{application="zone1",run_id="{run_id}"}} < 0.1')

    warm = sample.copy()
    for column in [c for c in features if c.startswith("temperature")]:
        warm[column] = warm[column] + 15.0
    _post_rows(serve_api, warm, features)

    def drifted() -> list[float]:
        values = [float(r["value"][1]) for r in _query(port, psi)]
        return values if len(values) == 2 and min(values) > THRESHOLD else []

    high = _until(drifted, f"both replicas' temperature PSI above {THRESHOLD} in Prometheus")
    print(f"temperature PSI per replica: {low} -> {high}")
    humidity = _query(port, psi.replace('feature="temperature"', 'feature="humidity"'))
    assert max(float(r["value"][1]) for r in humidity) < 0.1, humidity

    def alert() -> list[dict[str, Any]]:
        rules = _query_alerts(port)
        return [
            a
            for a in rules
            if a["labels"].get("feature") == "temperature" and a["labels"]["run_id"] == run_id
        ]

    pending = _until(alert, "ModelDrift pending or firing in Prometheus")
    assert pending[0]["state"] in ("pending", "firing"), pending
    # Every row predicted for a client is counted for the run that predicted it.
    counted = _query(port, f'sum(ray_rayops_predictions_total{{application="zone1",run_id="{run_id}"}})')
    assert float(counted[0]["value"][1]) >= 2 * CALLS * ROWS, counted
    assert _query(port, f'ray_rayops_predict_latency_ms_bucket{{application="zone1",run_id="{run_id}"}}')


def _query_alerts(port: int) -> list[dict[str, Any]]:
    from test_monitoring import _get

    alerts: list[dict[str, Any]] = _get(f"http://127.0.0.1:{port}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == "ModelDrift"]


def test_actuals_of_the_holdout_give_its_offline_error_in_prometheus(
    ray_cluster: RayCluster, serve_api: ServeApi, tunnel: dict[str, int]
) -> None:
    port = tunnel["prometheus"]
    metadata, frame = _served_run(ray_cluster, serve_api)
    run_id, features = metadata["run_id"], metadata["features"]
    _, holdout = time_split(frame, int(metadata["splits"]["holdout"]["weeks"]))
    offline = metadata["metrics"]["holdout"]["xgboost"]
    for start in range(0, len(holdout), 96):
        part = holdout.iloc[start : start + 96]
        body = {
            "instances": [{k: float(v) for k, v in r.items()} for r in part[features].to_dict("records")],
            "actuals": part[TARGET].astype(float).tolist(),
        }
        status, reply = serve_api.call("/zone1/actuals", body)
        assert status == 200, reply
        assert reply["count"] == len(part) and reply["model"]["run_id"] == run_id

    where = f'{{application="zone1",run_id="{run_id}"}}'

    def totals() -> dict[str, float]:
        out = {}
        for name in ("actuals", "live_abs_error", "live_squared_error"):
            result = _query(port, f"sum(ray_rayops_{name}_total{where})")
            out[name] = float(result[0]["value"][1]) if result else 0.0
        return out if out["actuals"] == len(holdout) else {}

    seen = _until(totals, f"all {len(holdout)} actuals counted in Prometheus")
    mae = seen["live_abs_error"] / seen["actuals"]
    rmse = (seen["live_squared_error"] / seen["actuals"]) ** 0.5
    print(
        f"live MAE {mae:.6f} (offline {offline['mae']:.6f}), RMSE {rmse:.6f} (offline {offline['rmse']:.6f})"
    )
    assert mae == pytest.approx(offline["mae"], abs=1e-6)
    assert rmse == pytest.approx(offline["rmse"], abs=1e-6)
    # Each replica's rolling gauges are there too (what the ModelLiveMae/Rmse alerts read).
    gauges = _query(port, f"ray_rayops_live_mae{where}")
    assert gauges and all(0 < float(g["value"][1]) < 3 * offline["mae"] for g in gauges), gauges
