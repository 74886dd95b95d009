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

from rayops.serving.service import Settings
from rayops.workflow.evaluate import time_split
from rayops.workflow.features import TARGET

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]

MONITORING = yaml.safe_load((REPO / "roles" / "monitoring" / "defaults" / "main.yml").read_text())
THRESHOLD = float(MONITORING["monitoring_alert_drift_psi"])
CALLS = 40  # rows per phase: CALLS * ROWS, more than a replica's window (WINDOW, the default quality_window)
ROWS = 100
WINDOW = Settings(zone=1).quality_window  # serve.yml does not set it


def _served_run(
    ray_cluster: RayCluster, serve_api: ServeApi
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The run zone 1 serves now: its metadata, and its training and holdout rows (read back from the features
    bucket, split as the run split them)."""
    status, info = serve_api.call("/zone1/model")
    assert status == 200, info
    s3 = ray_cluster.cloud.s3_client()

    def get(uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
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
    train, holdout = time_split(frame, int(metadata["splits"]["holdout"]["weeks"]))
    return metadata, train, holdout


def _instances(part: pd.DataFrame, features: list[str]) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.items()} for r in part[features].to_dict("records")]


def _post_rows(serve_api: ServeApi, frame: pd.DataFrame, features: list[str]) -> None:
    for start in range(0, CALLS * ROWS, ROWS):
        part = frame.iloc[start % len(frame) : start % len(frame) + ROWS]
        status, reply = serve_api.call("/zone1/predict", {"instances": _instances(part, features)})
        assert status == 200, reply


def _until(check: Callable[[], tuple[bool, Any]], what: str, deadline_s: float = 150) -> Any:
    """Poll ``check`` (-> (done, detail)) until done; the last detail is in the failure's message."""
    start = time.monotonic()
    while True:
        done, detail = check()
        if done:
            print(f"\n{what}: {time.monotonic() - start:.0f} s")
            return detail
        assert time.monotonic() - start < deadline_s, f"{what}: not within {deadline_s:.0f} s; last: {detail}"
        time.sleep(3)


def _by_replica(port: int, expr: str) -> dict[str, float]:
    return {r["metric"]["replica"]: float(r["value"][1]) for r in _query(port, expr)}


def _fed(port: int, run_id: str, before: dict[str, float], rows: int) -> list[str]:
    """The replicas whose window the last ``rows`` rows turned over (Serve's proxy picks the replicas, and
    may prefer the one on its own node): once Prometheus has counted all of them."""
    counted = f'ray_rayops_predictions_total{{application="zone1",run_id="{run_id}"}}'

    def check() -> tuple[bool, Any]:
        now = _by_replica(port, counted)
        grown = {r: now[r] - before.get(r, 0.0) for r in now}
        return sum(grown.values()) >= rows, grown

    grown = _until(check, f"{rows} rows counted in Prometheus")
    fed = [r for r, n in grown.items() if n >= WINDOW]
    assert fed, grown
    return fed


def test_drift_scores_stay_low_for_training_like_rows_and_rise_for_warmer_ones(
    ray_cluster: RayCluster, serve_api: ServeApi, tunnel: dict[str, int]
) -> None:
    port = tunnel["prometheus"]
    metadata, train, _ = _served_run(ray_cluster, serve_api)
    run_id, features = metadata["run_id"], metadata["features"]
    sample = train.sample(n=CALLS * ROWS, random_state=0, replace=len(train) < CALLS * ROWS)
    where = f'application="zone1",run_id="{run_id}"'
    psi = f'ray_rayops_feature_drift_psi{{{where},feature="temperature"}}'
    counted = f"ray_rayops_predictions_total{{{where}}}"

    before = _by_replica(port, counted)
    _post_rows(serve_api, sample, features)
    fed = _fed(port, run_id, before, CALLS * ROWS)

    def calm() -> tuple[bool, Any]:
        values = _by_replica(port, psi)
        return all(r in values and values[r] < 0.1 for r in fed), values

    low = _until(calm, f"temperature PSI below 0.1 in Prometheus for the replicas fed ({len(fed)})")
    everything = _by_replica(port, f"max by (replica) (ray_rayops_feature_drift_psi{{{where}}})")
    assert all(everything[r] < 0.1 for r in fed), everything
    predictions = _by_replica(port, f"ray_rayops_prediction_drift_psi{{{where}}}")
    assert all(predictions[r] < 0.1 for r in fed), predictions

    warm = sample.copy()
    for column in [c for c in features if c.startswith("temperature")]:
        warm[column] = warm[column] + 15.0
    before = _by_replica(port, counted)
    _post_rows(serve_api, warm, features)
    fed = _fed(port, run_id, before, CALLS * ROWS)

    def drifted() -> tuple[bool, Any]:
        values = _by_replica(port, psi)
        return all(r in values and values[r] > THRESHOLD for r in fed), values

    high = _until(drifted, f"temperature PSI above {THRESHOLD} in Prometheus for the replicas fed")
    print(f"temperature PSI per replica: {low} -> {high}")
    humidity = _by_replica(port, psi.replace('feature="temperature"', 'feature="humidity"'))
    assert all(humidity[r] < 0.1 for r in fed), humidity

    def alert() -> tuple[bool, Any]:
        wanted = {"feature": "temperature", "run_id": run_id}
        found = [a for a in _query_alerts(port) if wanted.items() <= a["labels"].items()]
        return bool(found), found

    pending = _until(alert, "ModelDrift pending or firing in Prometheus")
    assert pending[0]["state"] in ("pending", "firing"), pending
    assert _query(port, f"ray_rayops_predict_latency_ms_bucket{{{where}}}")


def _query_alerts(port: int) -> list[dict[str, Any]]:
    from test_monitoring import _get

    alerts: list[dict[str, Any]] = _get(f"http://127.0.0.1:{port}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == "ModelDrift"]


def test_actuals_of_the_holdout_give_its_offline_error_in_prometheus(
    ray_cluster: RayCluster, serve_api: ServeApi, tunnel: dict[str, int]
) -> None:
    port = tunnel["prometheus"]
    metadata, _, holdout = _served_run(ray_cluster, serve_api)
    run_id, features = metadata["run_id"], metadata["features"]
    offline = metadata["metrics"]["holdout"]["xgboost"]
    for start in range(0, len(holdout), 96):
        part = holdout.iloc[start : start + 96]
        body = {
            "instances": _instances(part, features),
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
        return out["actuals"] == len(holdout), out

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
