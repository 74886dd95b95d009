"""MLflow on the session cluster (roles/mlflow, rayops/workflow/tracking.py), after train.yml's first run.

Everything is read the way a user reads it: MLflow's REST API and Python client through an SSH tunnel to
the head's loopback (with no S3 settings on the controller: the server proxies the artifacts), the
buckets through the cloud's S3 endpoint, the units and sockets over SSH.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xgboost
from cluster_helpers import DATASET, RayCluster, wait_for_text

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]
PORT = 5000  # rayops_mlflow_port
MODEL = "rayops-zone1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_url(ray_cluster: RayCluster) -> Iterator[str]:
    """``ssh -L <free>:127.0.0.1:5000`` to the head, as the tunnel does; MLflow's base URL on this side."""
    local = _free_port()
    argv = ray_cluster.cloud.ssh_command(ray_cluster.cloud.machine(ray_cluster.head))
    argv[1:1] = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:{PORT}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{local}"
    try:
        deadline = time.monotonic() + 30
        while not _healthy(url):
            assert proc.poll() is None, f"the tunnel exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "MLflow did not answer through the tunnel within 30 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as answer:  # noqa: S310  (our tunnel)
            return bool(answer.status == 200)
    except OSError:
        return False


def api(url: str, endpoint: str, body: dict[str, Any] | None = None, **query: str) -> Any:
    """One MLflow REST call (GET with ``query``, or POST ``body``)."""
    full = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310  (http through our tunnel)
        return json.load(answer)


def run_of(url: str, mlflow_run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = api(url, "runs/get", run_id=mlflow_run_id)["run"]
    return run


def kv(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in items}


def s3_json(ray_cluster: RayCluster, uri: str) -> Any:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return json.loads(ray_cluster.cloud.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())


def test_the_first_run_is_in_mlflow_with_its_metrics_and_params(
    ray_cluster: RayCluster, mlflow_url: str, first_run: dict[str, Any]
) -> None:
    record = first_run["tracking"]
    assert record["tracked"] is True, record
    # the REST API finds it by rayops' run id (a tag), exactly once, in experiment rayops-zone1
    experiment = api(mlflow_url, "experiments/get-by-name", experiment_name="rayops-zone1")["experiment"]
    found = api(
        mlflow_url,
        "runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": "tags.`rayops.run_id` = 'e2e-first'"},
    )["runs"]
    assert [r["info"]["run_id"] for r in found] == [record["mlflow_run_id"]]
    run = run_of(mlflow_url, record["mlflow_run_id"])
    assert run["info"]["status"] == "FINISHED"
    metrics = kv(run["data"]["metrics"])
    expected = {
        f"{protocol}/{model}/{name}": value
        for protocol in ("holdout", "seed_protocol")
        for model in ("xgboost", "baseline")
        for name, value in first_run[protocol][model].items()
    }
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    params = kv(run["data"]["params"])
    for name, value in first_run["params"].items():
        assert params[name] == str(value), name
    tags = kv(run["data"]["tags"])
    assert tags["rayops.run_id"] == "e2e-first" and tags["rayops.promoted"] == "true"
    assert tags["rayops.data_version"] == first_run["data_version"]
    assert tags["rayops.data_sha256"] == first_run["data_sha256"]
    assert tags["rayops.git_sha"] == first_run["git_sha"]
    assert tags["rayops.package.ray"] == "2.60.0"
    # the other direction: the model's metadata.json names the MLflow run
    assert s3_json(ray_cluster, first_run["metadata_uri"])["tracking"] == record
    # the play's summary says it too
    assert (
        f"mlflow: run {record['mlflow_run_id']}, {MODEL} version {record['model_version']} (champion)"
        in " ".join(first_run["_play_output"].split())
    )


def test_the_artifacts_sit_in_the_models_bucket_behind_the_server(
    ray_cluster: RayCluster, mlflow_url: str, first_run: dict[str, Any]
) -> None:
    run_id = first_run["tracking"]["mlflow_run_id"]
    listed = api(mlflow_url, "artifacts/list", run_id=run_id, path="report")
    assert {f["path"] for f in listed["files"]} == {
        "report/report.md",
        "report/pred_vs_actual.png",
        "report/residuals.png",
        "report/feature_importance.png",
    }
    models = ray_cluster.cloud.spec.buckets()["models"]
    keys = [
        o["Key"]
        for page in ray_cluster.cloud.s3_client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=models, Prefix="mlflow/")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith(f"{run_id}/artifacts/report/report.md") for k in keys), keys[:20]
    assert any(k.endswith("/MLmodel") for k in keys), keys[:20]


def test_the_registered_model_predicts_like_model_ubj(
    ray_cluster: RayCluster, mlflow_url: str, first_run: dict[str, Any], tmp_path: Path
) -> None:
    """Loaded with mlflow.xgboost on the controller through the tunnel, without any S3 setting."""
    version = first_run["tracking"]["model_version"]
    script = (
        "import sys, mlflow.xgboost, numpy as np\n"
        f"mlflow.set_tracking_uri({mlflow_url!r})\n"
        f"model = mlflow.xgboost.load_model('models:/{MODEL}/{version}')\n"
        "x = np.random.default_rng(1).normal(size=(200, model.num_features())) * 1000\n"
        "np.save(sys.argv[1], x)\n"
        "np.save(sys.argv[2], model.inplace_predict(x))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env |= {"AWS_EC2_METADATA_DISABLED": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import numpy as np

    bucket, _, key = first_run["model_uri"].removeprefix("s3://").partition("/")
    booster = xgboost.Booster()
    booster.load_model(
        bytearray(ray_cluster.cloud.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    )
    x = np.load(tmp_path / "x.npy")
    assert np.array_equal(np.load(tmp_path / "p.npy"), booster.inplace_predict(x))


def champion(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = api(url, "registered-models/alias", name=MODEL, alias="champion")[
        "model_version"
    ]
    return answer


def test_the_champion_alias_and_current_json_agree(
    ray_cluster: RayCluster, mlflow_url: str, first_run: dict[str, Any], runs_dir: Path
) -> None:
    """Whichever run of the session promoted last (first_run, or a later one when the whole suite runs): the
    champion is that run's own model version, as train.yml recorded it on the controller."""
    current = s3_json(ray_cluster, first_run["current_uri"])
    best = champion(mlflow_url)
    tags = {t["key"]: t["value"] for t in best.get("tags", [])}
    assert tags["rayops.run_id"] == current["run_id"]
    promoting = json.loads((runs_dir / current["run_id"] / "metrics.json").read_text())
    assert promoting["promoted"] is True, current
    assert (best["version"], best["run_id"]) == (
        promoting["tracking"]["model_version"],
        promoting["tracking"]["mlflow_run_id"],
    )


def test_the_mlflow_ui_shows_the_run_its_metrics_plots_and_the_champion(
    mlflow_url: str, first_run: dict[str, Any], browser: Any
) -> None:
    """What a person sees through the tunnel in Chromium: the run's page with its metrics, the report's plot
    in the artifact view, and the registered model with its champion alias."""
    record = first_run["tracking"]
    run_page = f"{mlflow_url}/#/experiments/{record['experiment_id']}/runs/{record['mlflow_run_id']}"
    browser.get(run_page)
    took = wait_for_text(
        browser, "mlflow-run", lambda text: "e2e-first" in text and "holdout/xgboost/rmse" in text, 90
    )
    browser.get(f"{run_page}/artifacts/report/pred_vs_actual.png")
    took += wait_for_text(browser, "mlflow-artifacts", lambda text: "pred_vs_actual.png" in text, 60)
    # The plot itself, loaded and drawn (MLflow shows it from a blob: URL; our plots are 1,000+ px wide).
    drawn = "return Array.from(document.images).filter(i => i.complete && i.naturalWidth >= 400).length"
    assert browser.execute_script(drawn) >= 1, "the plot is not shown as an image"
    browser.get(f"{mlflow_url}/#/models/{MODEL}")
    version = champion(mlflow_url)["version"]
    took += wait_for_text(
        browser, "mlflow-model", lambda text: f"Version {version}" in text and "champion" in text, 60
    )
    print(f"MLflow UI: run, metrics, plot and {MODEL} version {version} @champion shown in {took:.1f} s")


def test_a_run_that_is_not_promoted_is_logged_and_moves_nothing(
    ray_cluster: RayCluster, mlflow_url: str, first_run: dict[str, Any], runs_dir: Path
) -> None:
    before = champion(mlflow_url)
    current_before = s3_json(ray_cluster, first_run["current_uri"])
    proc = ray_cluster.playbook(
        "train.yml",
        "-e",
        f"dataset={DATASET}",
        "-e",
        "train_run_id=e2e-mlflow-low",
        "-e",
        json.dumps({"train_params": {"max_rmse": 1.0, "num_boost_round": 50}}),
    )
    assert proc.returncode != 0 and "was not promoted" in proc.stdout, proc.stdout[-3000:]
    metrics = json.loads((runs_dir / "e2e-mlflow-low" / "metrics.json").read_text())
    assert metrics["promoted"] is False
    record = metrics["tracking"]
    assert record["tracked"] is True and record["alias"] is None
    run = run_of(mlflow_url, record["mlflow_run_id"])
    tags, params = kv(run["data"]["tags"]), kv(run["data"]["params"])
    assert tags["rayops.run_id"] == "e2e-mlflow-low" and tags["rayops.promoted"] == "false"
    assert (params["max_rmse"], params["num_boost_round"]) == ("1.0", "50")
    version = api(mlflow_url, "model-versions/get", name=MODEL, version=record["model_version"])[
        "model_version"
    ]
    assert version["run_id"] == record["mlflow_run_id"]
    assert champion(mlflow_url)["version"] == before["version"]
    assert s3_json(ray_cluster, first_run["current_uri"]) == current_before


def test_the_database_is_backed_up_to_the_results_bucket(
    ray_cluster: RayCluster, first_run: dict[str, Any], tmp_path: Path
) -> None:
    """After each run (train.yml starts the backup unit): a SQLite copy that holds the run."""
    results = ray_cluster.cloud.spec.buckets()["results"]
    copy = tmp_path / "mlflow.db"
    ray_cluster.cloud.s3_client().download_file(results, "mlflow/mlflow.db", str(copy))
    with sqlite3.connect(copy) as db:
        ids = {row[0] for row in db.execute("select run_uuid from runs")}
    assert first_run["tracking"]["mlflow_run_id"] in ids
    assert "MLflow database backed up to s3://" in first_run["_play_output"]


def test_the_server_runs_as_its_own_user_on_loopback_only(ray_cluster: RayCluster) -> None:
    head = ray_cluster.cloud.machine(ray_cluster.head)
    shown = ray_cluster.ssh(
        ray_cluster.head,
        "systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p ActiveState mlflow; "
        "ss -Hltn 'sport = :5000' | awk '{print $4}'; "
        "stat -c '%U %a' /var/lib/mlflow /var/lib/mlflow/mlflow.db; "
        "sudo -u ray cat /var/lib/mlflow/mlflow.db >/dev/null 2>&1 && echo ray-reads-db || echo ray-denied",
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.split("\n")
    assert {"User=mlflow", "NoNewPrivileges=yes", "ProtectSystem=strict", "ActiveState=active"} <= set(lines)
    assert "127.0.0.1:5000" in lines and not [
        x for x in lines if x.endswith(":5000") and x != "127.0.0.1:5000"
    ]
    assert "mlflow 750" in lines and "ray-denied" in lines
    # from every worker: nothing answers on the head's port 5000 (loopback only there)
    for worker in ray_cluster.workers:
        probe = ray_cluster.ssh(
            worker, f"timeout 5 bash -c '(exec 3<>/dev/tcp/{head.ip}/{PORT})' && echo open || echo closed"
        )
        assert probe.stdout.strip() == "closed", (worker, probe.stdout, probe.stderr)


def test_train_yml_succeeds_with_mlflow_stopped(
    ray_cluster: RayCluster, mlflow_url: str, runs_dir: Path
) -> None:
    """Zone 2, so the promotion this run makes moves no pointer the other tests read."""
    stop = ray_cluster.ssh(ray_cluster.head, "systemctl stop mlflow")
    assert stop.returncode == 0, stop.stderr
    try:
        proc = ray_cluster.playbook(
            "train.yml",
            "-e",
            f"dataset={DATASET}",
            "-e",
            "train_run_id=e2e-mlflow-down",
            "-e",
            "target_zone=2",
        )
        assert proc.returncode == 0, proc.stdout[-4000:]
        metrics = json.loads((runs_dir / "e2e-mlflow-down" / "metrics.json").read_text())
        assert metrics["promoted"] is True
        record = metrics["tracking"]
        assert record["tracked"] is False
        assert record["reason"].startswith("the MLflow server at http://127.0.0.1:5000 does not answer (")
        warning = (
            f"tracking: this run is not tracked in MLflow: {record['reason']}; "
            "training, evaluation and promotion go on as usual"
        )
        assert proc.stdout.count(warning) == 1, proc.stdout[-4000:]
        assert f"mlflow: not tracked ({record['reason']})" in " ".join(proc.stdout.split())
    finally:
        start = ray_cluster.ssh(
            ray_cluster.head, "systemctl start mlflow || journalctl -u mlflow -n 60 --no-pager"
        )
        assert "Job for mlflow.service failed" not in start.stderr, start.stdout + start.stderr
    deadline = time.monotonic() + 120
    while not _healthy(mlflow_url):
        assert time.monotonic() < deadline, "MLflow did not come back within 120 s"
        time.sleep(1)
