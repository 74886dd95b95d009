"""Experiment tracking (rayops/workflow/tracking.py) against a real MLflow tracking server.

The server is the one the head runs: ``mlflow server`` from the same lock (requirements-mlflow.txt +
constraints-mlflow.txt, installed with uv into .rayops/mlflow-server/<hash>/ once, ~7 s with uv's cache
warm), on loopback, a SQLite backend in tmp_path and its artifacts proxied into the moto S3 bucket
(``--artifacts-destination s3://<models>/mlflow``). The workflow runs through its real entrypoint
(``python -m rayops.workflow run --tracking-uri ...``) and the client reads back through MLflow's own API.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import workflow_synth as synth
import xgboost
from moto_helpers import free_port
from workflow_helpers import TEST_ENV, data_args, make_buckets, metrics_line, run_cli

from rayops.ansible_env import BIN, REPO
from rayops.workflow import tracking
from rayops.workflow.config import Buckets

SMALL = ["--holdout-weeks", "1", "--num-boost-round", "40", "--eta", "0.2", "--report-every", "20"]
GIT_SHA = "89abcdef0123456789abcdef0123456789abcdef"
LOCK = [REPO / "requirements-mlflow.txt", REPO / "constraints-mlflow.txt"]


def server_venv() -> Path:
    """The MLflow server's venv on the controller, once per lock (the head's pins, installed with uv)."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in LOCK) + sys.version.encode()).hexdigest()[:12]
    venv = REPO / ".rayops" / "mlflow-server" / digest
    if (venv / ".complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    env = {**os.environ, "UV_NATIVE_TLS": "true", "UV_PYTHON_DOWNLOADS": "never"}
    for argv in (
        [str(BIN / "uv"), "venv", "--quiet", "--python", sys.executable, str(venv)],
        [
            str(BIN / "uv"),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "--constraint",
            str(LOCK[1]),
            "--requirement",
            str(LOCK[0]),
        ],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)
        assert proc.returncode == 0, f"{' '.join(argv[:3])} failed: {proc.stderr[-2000:]}"
    (venv / ".complete").write_text("\n".join(p.name for p in LOCK) + "\n")
    return venv


@dataclass
class Server:
    uri: str
    buckets: Buckets
    moto: str
    db: Path


@pytest.fixture(scope="module")
def mlflow_server(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    buckets = make_buckets(s3)
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    db = folder / "mlflow.db"
    env = {
        **os.environ,
        **TEST_ENV,
        "MLFLOW_S3_ENDPOINT_URL": moto_endpoint,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # as roles/mlflow runs it
    }
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(server_venv() / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            f"s3://{buckets.models}/mlflow",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--allowed-hosts",
            "127.0.0.1:*,localhost:*",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # its first start migrates the database: ~45 s at a load of 12 here
    while tracking.server_answers(uri, timeout=2) is not None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(
                "mlflow server did not start: " + (folder / "server.log").read_text()[-3000:]
            )
        time.sleep(0.5)
    yield Server(uri, buckets, moto_endpoint, db)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@dataclass
class Tracked:
    metrics: dict[str, Any]
    stdout: str
    dataset: Path


def _train(
    server: Server,
    dataset: Path,
    run_id: str,
    *extra: str,
    program: tuple[str, ...] = ("-m", "rayops.workflow"),
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *data_args(dataset, server.buckets, server.moto),
        "--run-id",
        run_id,
        "--git-sha",
        GIT_SHA,
        "--tracking-uri",
        server.uri,
        *SMALL,
        *extra,
        program=program,
    )


@pytest.fixture(scope="module")
def promoted(mlflow_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    dataset = tmp_path_factory.mktemp("data") / "powerconsumption.csv"
    dataset.write_bytes(synth.csv_bytes(synth.frame(days=35)))
    proc = _train(mlflow_server, dataset, "tracked-1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return Tracked(metrics_line(proc.stdout), proc.stdout, dataset)


def client(server: Server) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(server.uri)


def test_a_promoted_run_is_logged_with_everything(mlflow_server: Server, promoted: Tracked) -> None:
    m, record = promoted.metrics, promoted.metrics["tracking"]
    assert record["tracked"] is True, record
    assert (record["registered_model"], record["alias"]) == ("rayops-zone1", "champion")
    run = client(mlflow_server).get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked-1"
    assert run.info.experiment_id == record["experiment_id"]
    # metrics: both protocols, both models, every score, equal to metrics.json
    expected = {
        f"{p}/{model}/{k}": v
        for p in ("holdout", "seed_protocol")
        for model in m[p]
        for k, v in m[p][model].items()
    }
    assert set(run.data.metrics) == set(expected) and len(expected) == 16
    for name, value in expected.items():
        assert run.data.metrics[name] == pytest.approx(value, abs=1e-9), name
    # params: the booster's exactly as metrics.json has them, plus the splits and thresholds
    for name, value in m["params"].items():
        assert run.data.params[name] == str(value), name
    assert run.data.params["num_boost_round"] == "40"
    assert run.data.params["holdout_weeks"] == "1" and run.data.params["min_r2"] == "0.9"
    assert run.data.params["max_rmse"] == "none"
    # lineage tags: rayops' run id (metrics.json's tracking record is the other direction), data, code
    tags = run.data.tags
    assert tags["rayops.run_id"] == "tracked-1"
    assert tags["rayops.data_version"] == m["data_version"] and tags["rayops.data_sha256"] == m["data_sha256"]
    assert tags["rayops.git_sha"] == GIT_SHA == tags["mlflow.source.git.commit"]
    assert tags["rayops.package.xgboost-cpu"] == xgboost.__version__
    assert tags["rayops.promoted"] == "true" and tags["rayops.model_uri"] == m["model_uri"]
    # artifacts: manifest, report and its three plots, package versions
    artifacts = {f.path for f in client(mlflow_server).list_artifacts(run.info.run_id)}
    assert {"features", "report", "package_versions.json"} <= artifacts
    report = {f.path for f in client(mlflow_server).list_artifacts(run.info.run_id, "report")}
    assert report == {
        f"report/{n}" for n in ("report.md", "pred_vs_actual.png", "residuals.png", "feature_importance.png")
    }
    assert "tracking: MLflow run " in promoted.stdout and "WARNING" not in promoted.stdout


def test_artifacts_go_through_the_server_into_the_models_bucket(
    mlflow_server: Server, promoted: Tracked
) -> None:
    s3 = boto3.client("s3", endpoint_url=mlflow_server.moto, region_name="us-east-1")
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=mlflow_server.buckets.models, Prefix="mlflow/")["Contents"]
    ]
    assert any(k.endswith("report/report.md") for k in keys), keys
    assert any(k.endswith("MLmodel") for k in keys), keys


def test_metadata_json_names_the_mlflow_run(mlflow_server: Server, promoted: Tracked) -> None:
    s3 = boto3.client("s3", endpoint_url=mlflow_server.moto, region_name="us-east-1")
    body = s3.get_object(Bucket=mlflow_server.buckets.models, Key="zone1/runs/tracked-1/metadata.json")[
        "Body"
    ]
    import json

    metadata = json.loads(body.read())
    assert metadata["tracking"] == promoted.metrics["tracking"]
    assert metadata["tracking"]["mlflow_run_id"]


def test_the_registered_model_predicts_like_model_ubj(mlflow_server: Server, promoted: Tracked) -> None:
    """Loaded through the server with no S3 settings at all (the proxy serves the artifacts)."""
    m = promoted.metrics
    s3 = boto3.client("s3", endpoint_url=mlflow_server.moto, region_name="us-east-1")
    bucket, _, key = m["model_uri"].removeprefix("s3://").partition("/")
    script = (
        "import sys, mlflow.xgboost, numpy as np, xgboost\n"
        f"mlflow.set_tracking_uri({mlflow_server.uri!r})\n"
        "model = mlflow.xgboost.load_model('models:/rayops-zone1@champion')\n"
        "x = np.random.default_rng(0).normal(size=(50, model.num_features()))\n"
        "np.save(sys.argv[1], model.inplace_predict(x))\n"
        "np.save(sys.argv[2], x)\n"
    )
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"tracked-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    proc = subprocess.run(
        [sys.executable, "-c", script, f"{out}-p.npy", f"{out}-x.npy"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import numpy as np

    booster = xgboost.Booster()
    booster.load_model(bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    x = np.load(f"{out}-x.npy")
    assert np.array_equal(np.load(f"{out}-p.npy"), booster.inplace_predict(x))
    version = client(mlflow_server).get_model_version_by_alias("rayops-zone1", "champion")
    assert (
        version.run_id == m["tracking"]["mlflow_run_id"] and version.version == m["tracking"]["model_version"]
    )


def test_a_run_that_is_not_promoted_is_logged_and_leaves_the_champion(
    mlflow_server: Server, promoted: Tracked
) -> None:
    proc = _train(mlflow_server, promoted.dataset, "tracked-2", "--max-rmse", "0.001")
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
    record = metrics_line(proc.stdout)["tracking"]
    assert record["tracked"] is True and record["alias"] is None
    mlf = client(mlflow_server)
    run = mlf.get_run(record["mlflow_run_id"])
    assert run.data.tags["rayops.promoted"] == "false" and run.data.params["max_rmse"] == "0.001"
    assert int(record["model_version"]) == int(promoted.metrics["tracking"]["model_version"]) + 1
    champion = mlf.get_model_version_by_alias("rayops-zone1", "champion")
    assert champion.version == promoted.metrics["tracking"]["model_version"]
    assert mlf.get_model_version("rayops-zone1", record["model_version"]).tags["rayops.promoted"] == "false"


# The workflow's own entrypoint, another run's promotion injected right before this run's own: the pointer
# changes between this run's start and its conditional write, as when two runs of one zone overlap.
RACED = """
import sys
from rayops.workflow import cli, promotion

real = promotion.promote

def promote_after_another_run(store, layout, live, pointer, pins):
    other = store.get_json(layout.buckets.models, layout.current_key)
    store.put_json(layout.buckets.models, layout.current_key, {**other, "rewritten_by": "another run"})
    return real(store, layout, live, pointer, pins)

promotion.promote = promote_after_another_run
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_run_that_loses_the_promotion_race_never_moves_the_champion(
    mlflow_server: Server, promoted: Tracked
) -> None:
    champion_before = client(mlflow_server).get_model_version_by_alias("rayops-zone1", "champion").version
    proc = _train(mlflow_server, promoted.dataset, "tracked-race", program=("-c", RACED))
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
    metrics = metrics_line(proc.stdout)
    assert metrics["promoted"] is False and "while this run was training" in metrics["promotion"]["decision"]
    record = metrics["tracking"]
    assert record["tracked"] is True and record["alias"] is None
    mlf = client(mlflow_server)
    assert mlf.get_model_version_by_alias("rayops-zone1", "champion").version == champion_before
    assert mlf.get_model_version("rayops-zone1", record["model_version"]).tags["rayops.promoted"] == "false"
    assert mlf.get_run(record["mlflow_run_id"]).data.tags["rayops.promoted"] == "false"
    s3 = boto3.client("s3", endpoint_url=mlflow_server.moto, region_name="us-east-1")
    meta = s3.get_object(Bucket=mlflow_server.buckets.models, Key="zone1/runs/tracked-race/metadata.json")
    assert json.loads(meta["Body"].read())["tracking"]["alias"] is None


def test_a_down_server_costs_one_warning_and_nothing_else(mlflow_server: Server, promoted: Tracked) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(
        *data_args(promoted.dataset, mlflow_server.buckets, mlflow_server.moto),
        "--run-id",
        "untracked-1",
        "--tracking-uri",
        down,
        *SMALL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    m = metrics_line(proc.stdout)
    assert m["promoted"] is True
    assert m["tracking"] == {
        "tracked": False,
        "tracking_uri": down,
        "reason": m["tracking"]["reason"],
    }
    assert m["tracking"]["reason"].startswith(f"the MLflow server at {down} does not answer (")
    warnings = [line for line in proc.stdout.splitlines() if "not tracked in MLflow" in line]
    assert warnings == [
        f"[rayops] tracking: this run is not tracked in MLflow: {m['tracking']['reason']}; "
        "training, evaluation and promotion go on as usual"
    ]


def test_without_the_mlflow_client_the_run_is_not_tracked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The py39 profile's venv has no mlflow: the same degradation as a down server."""
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    record = tracking.track(
        tracking_uri="http://127.0.0.1:5000",
        metrics={},
        metadata={},
        manifest={},
        booster=None,
        sample=None,
        images={},
        report="",
    )
    assert record == {
        "tracked": False,
        "tracking_uri": "http://127.0.0.1:5000",
        "reason": "the mlflow client is not installed in the job's Python",
    }


def test_no_uri_means_off_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    record = tracking.track(
        tracking_uri=None,
        metrics={},
        metadata={},
        manifest={},
        booster=None,
        sample=None,
        images={},
        report="",
    )
    assert record["tracked"] is False and record["tracking_uri"] is None
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_bad_tracking_uri_is_one_sentence(tmp_path: Path) -> None:
    proc = run_cli(
        "--buckets",
        '{"raw":"rr-1","features":"ff-1","models":"mm-1","results":"oo-1"}',
        "--tracking-uri",
        "ftp://head:5000/x",
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "[rayops] error: --tracking-uri 'ftp://head:5000/x' is not an MLflow server URL: pass "
        "http(s)://host[:port] without a path or credentials, or leave it out to run untracked"
    )


def test_health_probe_names_the_failure() -> None:
    reason = tracking.server_answers(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert reason is not None and "Connection refused" in reason


def test_server_refuses_a_host_header_beyond_loopback(mlflow_server: Server) -> None:
    """--allowed-hosts: a request naming another host (DNS rebinding) is refused; loopback names pass
    (MLflow exempts only /health and /version from the check)."""
    for host, ok in (
        ("127.0.0.1:5000", True),
        ("localhost:1234", True),
        ("10.213.181.10:5000", False),
        ("evil.example:5000", False),
    ):
        request = urllib.request.Request(  # noqa: S310  (loopback test server)
            f"{mlflow_server.uri}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310  (loopback test server)
                status = answer.status
        except urllib.error.HTTPError as err:
            status = err.code
        assert (status == 200) is ok, (host, status)
