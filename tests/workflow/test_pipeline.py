"""End to end, through the real entrypoint: `python -m rayops.workflow run` in a subprocess, on a
local Ray it starts itself, against the moto S3 server on loopback, with small synthetic data.

One good run is shared by the tests below; a second run on the same data must give the same
metrics; a run that misses a threshold and a run on bad data must leave the promoted model and
the last good data version where they were.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import workflow_synth as synth
import xgboost
from moto_helpers import free_port
from workflow_helpers import data_args, make_buckets, metrics_line, run_cli

from rayops.workflow import drift, evaluate, features, pipeline
from rayops.workflow.cli import METRICS_PREFIX
from rayops.workflow.config import Buckets

GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
SMALL = [
    "--holdout-weeks",
    "1",
    "--num-boost-round",
    "60",
    "--eta",
    "0.2",
    "--report-every",
    "20",
    "--local-cpus",
    "2",
]


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("[rayops] error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0][len("[rayops] error: ") :]


def get_json(s3: Any, bucket: str, key: str, **extra: Any) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    metrics: dict[str, Any]
    buckets: Buckets
    dataset: Path
    output: Path
    endpoint: str


@pytest.fixture(scope="module")
def good_run(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    buckets = make_buckets(s3)
    folder = tmp_path_factory.mktemp("good")
    dataset = folder / "powerconsumption.csv"
    dataset.write_bytes(synth.csv_bytes(synth.frame(days=35)))
    output = folder / "out" / "metrics.json"
    proc = run_cli(
        *data_args(dataset, buckets.to_dict(), moto_endpoint),
        "--run-id",
        "good-1",
        "--git-sha",
        GIT_SHA,
        "--output-metrics",
        str(output),
        *SMALL,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return Run(proc, metrics_line(proc.stdout), buckets, dataset, output, moto_endpoint)


def rerun(
    good_run: Run, run_id: str, *extra: str, program: tuple[str, ...] = ("-m", "rayops.workflow")
) -> subprocess.CompletedProcess[str]:
    """The good run's data and buckets again, as run ``run_id``, with ``extra`` options."""
    return run_cli(
        *data_args(good_run.dataset, good_run.buckets.to_dict(), good_run.endpoint),
        "--run-id",
        run_id,
        *SMALL,
        *extra,
        program=program,
    )


def test_progress_lines_and_metrics_object(good_run: Run, s3: Any) -> None:
    out = good_run.proc.stdout
    # each stage's start and end once, in order, with its seconds; boosting every --report-every
    # rounds (60 rounds, every 20: rounds 20 and 40 of both protocols); the decision; no empty line
    stages = [line for line in out.splitlines() if line.startswith("[rayops] stage ")]
    assert [line.split(":")[0] for line in stages] == [
        f"[rayops] stage {n}/5 {name}" for n, name in enumerate(pipeline.STAGES, 1) for _ in (0, 1)
    ]
    assert all(re.search(r": (started|done in \d+\.\d s)$", line) for line in stages), stages
    rounds = re.findall(r"^\[rayops\] train: round (\d+)/60 (\w+)/train-rmse=", out, re.MULTILINE)
    assert rounds == [("20", "holdout"), ("40", "holdout"), ("20", "seed_protocol"), ("40", "seed_protocol")]
    assert "[rayops] evaluate: promote\n" in out
    assert "\n\n" not in out.strip()
    m = good_run.metrics
    # a small table: pandas features on the driver and one training process, each choice logged and recorded
    assert "[rayops] features: 5,040 raw rows <= 1,000,000: pandas on the driver" in out
    assert "[rayops] train: one process with " in out
    assert m["features_execution"]["executor"] == "pandas"
    assert m["features_execution"]["requested"] == "auto"
    assert m["features_execution"]["reason"] in out
    assert {
        k: m["training"][k] for k in ("mode", "requested_workers", "num_workers", "placement_strategy")
    } == {
        "mode": "local",
        "requested_workers": "auto",
        "num_workers": 0,
        "placement_strategy": None,
    }
    assert m["training"]["reason"] in out
    # ... so the run never needed the cluster: no local Ray was started for it
    assert "[rayops] ray: nothing in this run needed the cluster" in out
    assert "starting a local Ray" not in out
    b = good_run.buckets
    for key in ("run_id", "data_version", "target", "holdout", "seed_protocol", "promoted", "model_uri"):
        assert key in m
    assert m["run_id"] == "good-1"
    assert m["target"] == "zone1"
    assert m["promoted"] is True
    assert m["model_uri"] == f"s3://{b.models}/zone1/runs/good-1/model.ubj"
    for protocol in ("holdout", "seed_protocol"):
        assert set(m[protocol]) == {"xgboost", "baseline"}
        for model in ("xgboost", "baseline"):
            assert set(m[protocol][model]) == {"rmse", "mae", "mape", "r2"}
            assert all(isinstance(v, float) for v in m[protocol][model].values())
    assert m["holdout"]["xgboost"]["rmse"] < m["holdout"]["baseline"]["rmse"]
    assert m["splits"]["holdout"]["test_rows"] == 168
    # the same object in three places: job log line, --output-metrics, results bucket
    assert json.loads(good_run.output.read_text()) == m
    assert get_json(s3, b.results, "runs/good-1/metrics.json") == m


def test_artifacts_carry_lineage_and_reproduce_the_metrics(good_run: Run, s3: Any) -> None:
    b, m = good_run.buckets, good_run.metrics
    raw_head = s3.head_object(Bucket=b.raw, Key=f"datasets/sha256/{m['data_sha256']}.csv")
    assert raw_head["VersionId"] == m["data_version"]

    manifest = get_json(s3, b.features, "zone1/runs/good-1/manifest.json")
    assert manifest["source"]["version_id"] == m["data_version"]
    assert manifest["features"] == features.feature_columns()
    assert get_json(s3, b.features, "zone1/newest-features-manifest.json") == manifest

    metadata = get_json(s3, b.models, "zone1/runs/good-1/metadata.json")
    assert metadata["data"]["version_id"] == m["data_version"]
    assert metadata["data"]["features_manifest_uri"] == m["features_manifest_uri"]
    assert metadata["features"] == manifest["features"]
    assert metadata["git_sha"] == GIT_SHA
    assert {"ray", "xgboost-cpu", "scikit-learn", "pandas", "pyarrow", "python"} <= set(
        metadata["package_versions"]
    )
    assert metadata["params"]["num_boost_round"] == 60
    assert metadata["metrics"] == {"holdout": m["holdout"], "seed_protocol": m["seed_protocol"]}

    current = get_json(s3, b.models, "zone1/current.json")
    assert current["run_id"] == "good-1"
    assert current["model_uri"] == m["model_uri"]

    booster = xgboost.Booster()
    booster.load_model(
        bytearray(s3.get_object(Bucket=b.models, Key="zone1/runs/good-1/model.ubj")["Body"].read())
    )
    assert booster.feature_names == manifest["features"]
    assert booster.num_boosted_rounds() == 60

    # Read the features back from the bucket, redo the holdout split, predict with the stored model:
    # the recorded holdout metrics must come out again.
    parts = s3.list_objects_v2(Bucket=b.features, Prefix="zone1/runs/good-1/data/")["Contents"]
    keys = [p["Key"] for p in parts if p["Key"].endswith(".parquet")]
    assert keys
    tables = [pq.read_table(io.BytesIO(s3.get_object(Bucket=b.features, Key=k)["Body"].read())) for k in keys]
    frame = pa.concat_tables(tables).to_pandas().sort_values(features.TIMESTAMP).reset_index(drop=True)
    assert len(frame) == manifest["rows"]
    _, holdout = evaluate.time_split(frame, holdout_weeks=1)
    predicted = booster.predict(
        xgboost.DMatrix(holdout[manifest["features"]], feature_names=manifest["features"])
    )
    again = evaluate.regression_metrics(holdout[features.TARGET].to_numpy(), predicted)
    for key in ("rmse", "mae", "mape", "r2"):
        assert again[key] == pytest.approx(m["holdout"]["xgboost"][key], rel=1e-6)
    # The drift reference serving scores against: the bins of exactly the rows the model was trained on.
    train_h, _ = evaluate.time_split(frame, holdout_weeks=1)
    names = manifest["features"]
    fitted = booster.predict(xgboost.DMatrix(train_h[names], feature_names=names))
    assert metadata["drift"] == drift.reference(train_h, np.asarray(fitted, dtype="float64"))
    assert sorted(metadata["drift"]["features"]) == sorted(drift.monitored_features())
    assert metadata["drift"]["rows"] == len(train_h) == metadata["splits"]["holdout"]["train_rows"]

    report = s3.get_object(Bucket=b.results, Key="runs/good-1/report.md")["Body"].read().decode()
    assert "# rayops run good-1" in report
    for image in ("pred_vs_actual.png", "residuals.png", "feature_importance.png"):
        assert f"]({image})" in report
        png = s3.get_object(Bucket=b.results, Key=f"runs/good-1/{image}")["Body"].read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 5000


def test_same_data_again_same_metrics_and_a_missed_threshold_keeps_current(good_run: Run, s3: Any) -> None:
    b = good_run.buckets
    before = s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"]
    proc = rerun(good_run, "good-2", "--min-r2", "0.99999")
    assert proc.returncode == 3, proc.stdout[-4000:] + proc.stderr[-4000:]
    m = metrics_line(proc.stdout)
    assert m["promoted"] is False
    # deterministic: the same data gives the same numbers, to the last bit
    assert m["holdout"] == good_run.metrics["holdout"]
    assert m["seed_protocol"] == good_run.metrics["seed_protocol"]
    assert m["data_version"] == good_run.metrics["data_version"]  # same bytes, same raw version
    r2 = m["holdout"]["xgboost"]["r2"]
    assert error_line(proc.stderr) == (
        f"the model of run good-2 was not promoted (holdout R2 {r2:.4f} is below --min-r2 0.99999); "
        f"s3://{b.models}/zone1/current.json still names the previous model"
    )
    assert s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"] == before
    assert get_json(s3, b.models, "zone1/current.json")["run_id"] == "good-1"
    assert get_json(s3, b.results, "runs/good-2/metrics.json") == m  # the run is still on record


def test_bad_data_is_refused_before_anything_is_written(good_run: Run, s3: Any, tmp_path: Path) -> None:
    b = good_run.buckets
    table = synth.frame(days=35).astype({"Temperature": object})
    table.loc[100, "Temperature"] = "n/a"
    bad = tmp_path / "powerconsumption.csv"  # same name as the good file: same raw key
    bad.write_bytes(synth.csv_bytes(table))
    raw_versions = s3.list_object_versions(Bucket=b.raw)["Versions"]
    latest = get_json(s3, b.features, "zone1/newest-features-manifest.json")
    current = s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"]

    proc = run_cli(
        *data_args(bad, b.to_dict(), good_run.endpoint),
        *SMALL,
    )
    assert proc.returncode == 2
    assert error_line(proc.stderr) == (
        "column Temperature of powerconsumption.csv has the non-numeric value 'n/a' on line 102: every "
        "weather and consumption value must be a number, fix or remove that line"
    )
    assert "Traceback" not in proc.stderr
    assert METRICS_PREFIX not in proc.stdout
    assert "starting a local Ray" not in proc.stdout  # failed in stage 1, before Ray
    assert "[rayops] stage 1/5 ingest: failed after " in proc.stdout  # every stage's end is shown
    assert s3.list_object_versions(Bucket=b.raw)["Versions"] == raw_versions
    assert get_json(s3, b.features, "zone1/newest-features-manifest.json") == latest
    assert latest["source"]["version_id"] == good_run.metrics["data_version"]
    assert s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"] == current


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ["--target-zone", "4"],
            "--target-zone is 4, but the Tetouan data has zones 1, 2 and 3: pass one of them",
        ),
        (
            ["--buckets", '{"raw": "a-raw"}'],
            "--buckets lacks features, models, results: it needs exactly the keys",
        ),
        (["--dataset", "/nonexistent/powerconsumption.csv"], "cannot read the dataset /nonexistent/"),
        (["--dataset", "UNREACHABLE"], "cannot read the dataset http://127.0.0.1:"),
        (["--dataset", "SHORT"], "covers only 480 hours, but the workflow needs at least 504"),
        (["--dataset", "COLUMNS"], "lacks the column(s) PowerConsumption_Zone1"),
        (["--num-boost-round", "0"], "--num-boost-round is 0: pass a whole number from 1 to 100000"),
        (
            ["--claim-token", "short;rm"],
            "--claim-token is not a claim token: pass 16-64 letters, digits, '_' or '-' (got 8 characters)",
        ),
    ],
)
def test_bad_input_one_sentence_exit_2(
    good_run: Run, tmp_path: Path, change: list[str], expected: str
) -> None:
    args = {
        "--dataset": str(good_run.dataset),
        "--buckets": json.dumps(good_run.buckets.to_dict()),
        "--s3-endpoint-url": good_run.endpoint,
    }
    key, value = change
    if value == "UNREACHABLE":
        value = f"http://127.0.0.1:{free_port()}/tetouan.zip"
    elif value == "SHORT":
        value = str(tmp_path / "short.csv")
        Path(value).write_bytes(synth.csv_bytes(synth.frame(days=20)))
    elif value == "COLUMNS":
        value = str(tmp_path / "columns.csv")
        Path(value).write_bytes(
            synth.csv_bytes(synth.frame(days=1)).replace(b"PowerConsumption_Zone1", b"Z1")
        )
    args[key] = value
    proc = run_cli(*SMALL, *[x for pair in args.items() for x in pair], timeout=120)  # ours last: they win
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expected in error_line(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert METRICS_PREFIX not in proc.stdout


def test_num_workers_and_executor_force_a_distributed_run(good_run: Run, s3: Any) -> None:
    """--num-workers 2 --features-executor ray: Ray Data and a worker group on the same data; the
    features are the same bits, the choice is logged and recorded, the model is as good."""
    # Distributed subsampling differs from good-1's one process (a few % on the holdout): the live
    # model's tolerance lets it promote.
    proc = rerun(
        good_run, "forced-2", "--num-workers", "2", "--features-executor", "ray", "--live-tolerance", "0.2"
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    m = metrics_line(proc.stdout)
    assert m["features_execution"]["executor"] == "ray"
    assert "as asked (--features-executor ray)" in m["features_execution"]["reason"]
    assert m["training"]["mode"] == "distributed"
    assert (m["training"]["requested_workers"], m["training"]["num_workers"]) == (2, 2)
    assert "(--num-workers 2)" in m["training"]["reason"]
    assert m["training"]["reason"] in proc.stdout
    assert proc.stdout.count("[rayops] ray: no RAY_ADDRESS, starting a local Ray for this run") == 1
    assert m["splits"] == good_run.metrics["splits"]  # the same feature rows
    ours, local = m["holdout"]["xgboost"]["rmse"], good_run.metrics["holdout"]["xgboost"]["rmse"]
    assert ours < m["holdout"]["baseline"]["rmse"]
    assert abs(ours - local) < 0.1 * local  # distributed subsampling differs: close, not equal


def test_num_workers_rejects_what_is_not_a_count(good_run: Run) -> None:
    common = ["--dataset", str(good_run.dataset), "--buckets", json.dumps(good_run.buckets.to_dict())]
    proc = run_cli(*common, "--num-workers", "many", timeout=120)
    assert proc.returncode == 2
    assert "'many' is neither 'auto' nor a whole number" in proc.stderr
    proc = run_cli(*common, "--num-workers", "-1", timeout=120)
    assert proc.returncode == 2
    assert error_line(proc.stderr) == "--num-workers is -1: pass a whole number from 0 to 1024"


# --------------------------------------------------------------- nothing lost (issue 15, item 3)


def all_versions(s3: Any, buckets: Buckets) -> dict[tuple[str, str, str], tuple[str, bool]]:
    """(bucket, key, version id) -> (ETag, is latest) for every object version of the four buckets."""
    found = {}
    for bucket in buckets.to_dict().values():
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in page.get("Versions", []):
                found[(bucket, v["Key"], v["VersionId"])] = (v["ETag"], v["IsLatest"])
            for marker in page.get("DeleteMarkers", []):
                found[(bucket, marker["Key"], marker["VersionId"])] = ("delete-marker", marker["IsLatest"])
    return found


def test_an_existing_run_id_is_refused_and_its_objects_stay(good_run: Run, s3: Any) -> None:
    """Reusing good-1's run id (other data, so every object of it would change) changes nothing."""
    b = good_run.buckets
    before = all_versions(s3, b)
    assert (b.models, "zone1/runs/good-1/model.ubj") in {k[:2] for k in before}
    other = good_run.dataset.with_name("other.csv")
    other.write_bytes(synth.csv_bytes(synth.frame(days=35, seed=7)))
    proc = run_cli(*data_args(other, b.to_dict(), good_run.endpoint), "--run-id", "good-1", *SMALL)
    assert proc.returncode == 2, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert error_line(proc.stderr) == (
        f"the run id 'good-1' is taken (s3://{b.results}/runs/good-1/run.json exists), so nothing of that "
        "run was touched: pass a new --run-id (train_run_id) or leave it out for a fresh one"
    )
    assert "stage 2/5" not in proc.stdout  # refused in stage 1, before any feature or model was made
    assert all_versions(s3, b) == before  # every version id of every object, and which one is latest


def test_a_worse_model_is_refused_and_the_live_one_stays(good_run: Run, s3: Any) -> None:
    b = good_run.buckets
    current = s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"]
    live_run = get_json(s3, b.models, "zone1/current.json")["run_id"]
    # 3 rounds instead of 60: still better than the linear baseline, much worse than the live model.
    weak = [
        *SMALL[: SMALL.index("--num-boost-round") + 1],
        "3",
        *SMALL[SMALL.index("--num-boost-round") + 2 :],
    ]
    proc = run_cli(*data_args(good_run.dataset, b.to_dict(), good_run.endpoint), "--run-id", "weak-1", *weak)
    assert proc.returncode == 3, proc.stdout[-4000:] + proc.stderr[-4000:]
    m = metrics_line(proc.stdout)
    ours, theirs = m["holdout"]["xgboost"]["rmse"], m["promotion"]["live"]["holdout"]["rmse"]
    assert m["promotion"]["live"]["run_id"] == live_run
    assert ours > theirs
    assert m["promoted"] is False
    reason = (
        f"xgboost's holdout RMSE {ours:.1f} is worse than the live model's (run {live_run}) {theirs:.1f} on "
        "the same holdout by more than --live-tolerance 0"
    )
    assert reason in m["promotion"]["reasons"]
    assert reason in error_line(proc.stderr)
    assert s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"] == current
    # The live model scored on this holdout is the promoted model itself: its holdout RMSE on the same
    # data is the one it was promoted with.
    assert theirs == pytest.approx(get_json(s3, b.models, "zone1/current.json")["holdout"]["rmse"])


def tags(s3: Any, bucket: str, key: str, version: str | None) -> dict[str, str]:
    extra = {"VersionId": version} if version else {}
    tag_set = s3.get_object_tagging(Bucket=bucket, Key=key, **extra)["TagSet"]
    return {t["Key"]: t["Value"] for t in tag_set}


def test_what_the_pointer_and_the_manifest_pin_is_tagged_pinned(good_run: Run, s3: Any) -> None:
    """The versions the live pointer names carry rayops-pinned=true (the lifecycle rule skips them:
    tests/pulumi/test_pulumi_storage.py); the pointer's own versions and a run's plots carry false."""
    b = good_run.buckets
    pointer = get_json(s3, b.models, "zone1/current.json")
    model_key = pointer["model_uri"].split("/", 3)[3]
    assert tags(s3, b.models, model_key, pointer["model_version_id"]) == {"rayops-pinned": "true"}
    metadata_key = pointer["metadata_uri"].split("/", 3)[3]
    metadata = get_json(s3, b.models, metadata_key)
    assert tags(s3, b.models, metadata_key, None) == {"rayops-pinned": "true"}
    manifest_key = metadata["data"]["features_manifest_uri"].split("/", 3)[3]
    assert tags(s3, b.features, manifest_key, metadata["data"]["features_manifest_version_id"]) == {
        "rayops-pinned": "true"
    }
    raw_key = metadata["data"]["raw_uri"].split("/", 3)[3]
    assert tags(s3, b.raw, raw_key, metadata["data"]["version_id"]) == {"rayops-pinned": "true"}
    # Not pinned: the pointer itself (its older versions may expire) and the run's report.
    assert tags(s3, b.models, "zone1/current.json", None) == {"rayops-pinned": "false"}
    assert tags(s3, b.results, "runs/good-1/report.md", None) == {"rayops-pinned": "false"}


# --------------------------------------------- a resubmission after a lost driver (issue 16, item 3)

#: The driver killed in the train stage (os._exit: no cleanup, as with SIGKILL or a head restart),
#: after the claim, the raw data, the features' Parquet parts and their manifest were written.
LOST_IN_TRAINING = """
import os, sys
from rayops.workflow import cli, pipeline

def killed(*args, **kwargs):
    sys.stdout.write("[rayops] test: the driver dies in the train stage\\n")
    sys.stdout.flush()
    os._exit(137)

pipeline.train_stage = killed
sys.exit(cli.main(sys.argv[1:]))
"""

TOKEN = "resubmit-token-0123456789"


def current_keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    """The keys of the current objects under ``prefix``, without pyarrow's folder markers (``.../``)."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"] for o in listed if not o["Key"].endswith("/")}


def test_a_resubmission_with_the_same_claim_token_continues_the_lost_run(good_run: Run, s3: Any) -> None:
    """The lost attempt left its claim, Parquet parts and manifest. The same run id with the same
    --claim-token continues it: the parts are replaced (delete markers, every version kept), the manifest
    gets a new version, the run completes and says it was resubmitted. Another token, or none, is refused,
    and so is the same token once the run has finished."""
    b = good_run.buckets
    # Ray Data features (several Parquet parts with fresh names per write) and a tolerance to promote.
    extra = ["--features-executor", "ray", "--live-tolerance", "0.2", "--claim-token", TOKEN]
    lost = rerun(good_run, "resub-1", *extra, program=("-c", LOST_IN_TRAINING))
    assert lost.returncode == 137, lost.stdout[-3000:] + lost.stderr[-3000:]
    data = "zone1/runs/resub-1/data/"
    parts_lost = current_keys(s3, b.features, data)
    assert parts_lost and current_keys(s3, b.results, "runs/resub-1/") == {"runs/resub-1/run.json"}
    claim = get_json(s3, b.results, "runs/resub-1/run.json")
    assert TOKEN not in json.dumps(claim) and claim["claim_sha256"]  # the token's digest, not the token

    refused = rerun(good_run, "resub-1", "--claim-token", "another-token-0123456789")
    assert refused.returncode == 2 and "the run id 'resub-1' is taken" in error_line(refused.stderr)
    assert rerun(good_run, "resub-1").returncode == 2

    again = rerun(good_run, "resub-1", *extra)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "run resub-1 continues its own claim" in again.stdout
    m = metrics_line(again.stdout)
    assert m["resubmitted"] is True and m["promoted"] is True
    parts_now = current_keys(s3, b.features, data)
    assert parts_now and not parts_now & parts_lost  # only this attempt's parts are current
    rows = sum(
        pq.read_metadata(pa.BufferReader(s3.get_object(Bucket=b.features, Key=k)["Body"].read())).num_rows
        for k in parts_now
    )
    split = m["splits"]["holdout"]
    assert rows == split["train_rows"] + split["test_rows"], (rows, split)  # each feature row once
    kept = s3.list_object_versions(Bucket=b.features, Prefix=data)
    assert {v["Key"] for v in kept["Versions"]} >= parts_lost  # the lost attempt's parts: noncurrent, kept
    manifests = s3.list_object_versions(Bucket=b.features, Prefix="zone1/runs/resub-1/manifest.json")
    assert len(manifests["Versions"]) == 2
    assert get_json(s3, b.models, "zone1/current.json")["run_id"] == "resub-1"

    finished = rerun(good_run, "resub-1", *extra)
    assert finished.returncode == 2
    assert error_line(finished.stderr) == (
        f"run resub-1 already finished (s3://{b.results}/runs/resub-1/metrics.json exists): nothing to "
        "resume; train again with a new train_run_id"
    )


DIES_WRITING_METRICS = """
import os, sys
from rayops.workflow import cli, s3

put_json = s3.S3Store.put_json

def put_json_or_die(self, bucket, key, *args, **kwargs):
    if key.endswith("/metrics.json"):
        sys.stdout.write("[rayops] test: the driver dies writing " + key + "\\n")
        sys.stdout.flush()
        os._exit(137)
    return put_json(self, bucket, key, *args, **kwargs)

s3.S3Store.put_json = put_json_or_die
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_run_lost_before_its_record_is_written_moves_no_pointer(good_run: Run, s3: Any) -> None:
    """The run's record (metrics.json) is written before the promotion pointer: a driver lost at that
    write (here it dies there) leaves current.json on the live model, so no promoted model ever lacks
    its record, and no run reported FAILED has moved the pointer (once current.json came first)."""
    b = good_run.buckets
    before = s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"]
    lost = rerun(good_run, "order-1", "--live-tolerance", "0.2", program=("-c", DIES_WRITING_METRICS))
    assert lost.returncode == 137, lost.stdout[-3000:] + lost.stderr[-3000:]
    assert "[rayops] test: the driver dies writing runs/order-1/metrics.json" in lost.stdout
    assert "[rayops] evaluate: promote\n" in lost.stdout  # the model would have been promoted
    assert s3.head_object(Bucket=b.models, Key="zone1/current.json")["VersionId"] == before
    assert get_json(s3, b.models, "zone1/current.json")["run_id"] != "order-1"
