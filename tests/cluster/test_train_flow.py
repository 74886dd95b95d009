"""End to end on the local cloud: site.yml builds the cluster, train.yml trains, promotes and reports.

Real machines, real Ray (3 nodes), real S3 API, the real dataset from ../shared/data.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import DASHBOARD_PORT, DATASET, VENV, RayCluster

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]
SEED_VALID_RMSE = 8029.0  # the seed lab's recorded valid RMSE (random 80/20 split)
# The model's RMSE on this data with the defaults in one process (every such run in .rayops/runs/):
# a regression band of 2 % around it, not just "beats the seed". The run is deterministic under the lock (a
# second run matches to 1e-9); 123 rounds of depth 5 give +4 % (holdout) and +10 % (seed split) and fail it.
KNOWN_RMSE = {"holdout": 4013.66, "seed_protocol": 4627.89}
FEATURES = 85  # hourly sums and means, 6 lags x 6 series, calendar, season and hour one-hot


def s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def get_json(ray_cluster: RayCluster, uri: str, version_id: str | None = None) -> Any:
    bucket, key = s3_uri(uri)
    args = {"Bucket": bucket, "Key": key} | ({"VersionId": version_id} if version_id else {})
    return json.loads(ray_cluster.cloud.s3_client().get_object(**args)["Body"].read())


def test_train_yml_promotes_a_model_that_beats_the_seed(first_run: dict[str, Any]) -> None:
    m = first_run
    assert m["run_id"] == "e2e-first" and m["promoted"] is True
    for protocol in ("holdout", "seed_protocol"):
        for model in ("xgboost", "baseline"):
            assert set(m[protocol][model]) >= {"rmse", "mae", "mape", "r2"}
    assert m["seed_protocol"]["xgboost"]["rmse"] < SEED_VALID_RMSE
    for protocol, rmse in KNOWN_RMSE.items():
        assert m[protocol]["xgboost"]["rmse"] == pytest.approx(rmse, rel=0.02), protocol
    assert m["holdout"]["xgboost"]["rmse"] < m["holdout"]["baseline"]["rmse"]
    # The play ends with the table and the artifact locations.
    out = m["_play_output"]
    assert "xgboost / holdout" in out and "baseline / seed_protocol" in out
    assert m["model_uri"] in out
    # The seed table is small: pandas features and one training process (Ray Train local mode),
    # chosen by the job itself (train.yml passes no worker count) and recorded with the reason.
    assert m["features_execution"]["executor"] == "pandas"
    assert (m["training"]["mode"], m["training"]["requested_workers"]) == ("local", "auto")
    assert "one process with" in m["training"]["reason"]


def test_artifacts_and_lineage_are_in_the_buckets(ray_cluster: RayCluster, first_run: dict[str, Any]) -> None:
    m = first_run
    s3 = ray_cluster.cloud.s3_client()
    buckets = ray_cluster.cloud.spec.buckets()
    stored_metrics = get_json(ray_cluster, m["metrics_uri"])
    assert {k: v for k, v in m.items() if k != "_play_output"} == stored_metrics
    # The model exists in XGBoost's format and the current pointer names it.
    bucket, key = s3_uri(m["model_uri"])
    assert bucket == buckets["models"] and key.endswith(".ubj")
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 10_000
    current = get_json(ray_cluster, m["current_uri"])
    assert current["run_id"] == "e2e-first" and current["model_uri"] == m["model_uri"]
    # Lineage: metadata names the raw object's S3 version, the features, params, versions, sha.
    meta = get_json(ray_cluster, m["metadata_uri"])
    raw_bucket, raw_key = s3_uri(meta["data"]["raw_uri"])
    assert raw_bucket == buckets["raw"]
    versions = s3.list_object_versions(Bucket=raw_bucket, Prefix=raw_key)["Versions"]
    assert meta["data"]["version_id"] in {v["VersionId"] for v in versions}
    assert meta["data"]["rows"] == 52_416
    assert len(meta["features"]) == m["feature_count"] == FEATURES
    assert meta["package_versions"]["ray"] == "2.60.0"
    assert meta["git_sha"] and meta["params"]["num_boost_round"] == 400
    manifest = get_json(ray_cluster, meta["data"]["features_manifest_uri"])
    assert manifest["features"] == meta["features"]
    # The report and its plots sit next to the metrics.
    rbucket, rkey = s3_uri(m["report_uri"])
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=rbucket, Prefix=rkey.rsplit("/", 1)[0])["Contents"]}
    assert rkey in listed and sum(k.endswith(".png") for k in listed) >= 3


def test_second_run_on_the_same_data_gives_the_same_metrics(
    ray_cluster: RayCluster, first_run: dict[str, Any], runs_dir: Path
) -> None:
    proc = ray_cluster.playbook("train.yml", "-e", f"dataset={DATASET}", "-e", "train_run_id=e2e-second")
    assert proc.returncode == 0, proc.stdout[-5000:]
    second = json.loads((runs_dir / "e2e-second" / "metrics.json").read_text())
    for protocol in ("holdout", "seed_protocol"):
        for model in ("xgboost", "baseline"):
            for name, value in first_run[protocol][model].items():
                assert second[protocol][model][name] == pytest.approx(value, rel=1e-9), (
                    protocol,
                    model,
                    name,
                )


def test_unknown_target_zone_fails_before_anything_runs(
    ray_cluster: RayCluster, first_run: dict[str, Any]
) -> None:
    proc = ray_cluster.playbook("train.yml", "-e", f"dataset={DATASET}", "-e", "target_zone=4")
    assert proc.returncode != 0
    assert "target_zone must be 1, 2 or 3 (got 4)" in proc.stdout
    # Checked on the controller before train.yml's first node task: nothing deployed, copied or submitted.
    assert "deploy the workflow package" not in proc.stdout and "submit the Ray Job" not in proc.stdout


def test_bad_dataset_fails_with_the_jobs_own_error_and_promotes_nothing(
    ray_cluster: RayCluster, first_run: dict[str, Any], tmp_path: Path
) -> None:
    before = get_json(ray_cluster, first_run["current_uri"])
    bad = tmp_path / "wrong_columns.csv"
    bad.write_text("when,temp\n1/1/2017 0:00,6.5\n1/1/2017 0:10,6.4\n")
    proc = ray_cluster.playbook("train.yml", "-e", f"dataset={bad}", "-e", "train_run_id=e2e-badcols")
    assert proc.returncode != 0
    assert "Training run e2e-badcols FAILED:" in proc.stdout
    failure = proc.stdout[proc.stdout.index("Training run e2e-badcols FAILED:") :].splitlines()[0]
    assert (
        "wrong_columns.csv lacks the column(s) Datetime, Temperature, Humidity, WindSpeed, "
        "GeneralDiffuseFlows, DiffuseFlows, PowerConsumption_Zone1: expected the Kaggle names (Datetime, "
        "Temperature, Humidity, WindSpeed, GeneralDiffuseFlows, DiffuseFlows, PowerConsumption_Zone1..3) "
        "or UCI's (DateTime, ..., Zone 1 Power Consumption, ...)"
    ) in failure, failure
    assert get_json(ray_cluster, first_run["current_uri"]) == before


@pytest.mark.parametrize(
    ("extra", "sentence"),
    [
        (
            # The job's unit has PrivateTmp and a read-only system: /var/lib/ray (the Ray user's) is the one
            # place an injected command could write that root's probe below can see.
            ["-e", "train_run_id=x;touch${IFS}/var/lib/ray/rayops-pwned"],
            'train_run_id "x;touch${IFS}/var/lib/ray/rayops-pwned" is not usable as a run id: use 1-64',
        ),
        (
            ["-e", json.dumps({"train_params": {"max_depth": "deep"}})],
            "train_params.max_depth is 'deep', which is not a whole number: pass e.g. 6",
        ),
    ],
    ids=["run-id-with-shell", "non-numeric-param"],
)
def test_bad_run_id_or_param_is_one_sentence_before_the_job(
    ray_cluster: RayCluster, first_run: dict[str, Any], extra: list[str], sentence: str
) -> None:
    """Issue 15: the run id reached the job's shell command unquoted; a word in train_params gave argparse's
    usage text from the job. Both now stop on the controller, before any node is touched (train.yml's first
    play). ~5 s each (~25 s before the checks moved ahead of the package deploy)."""
    proc = ray_cluster.playbook("train.yml", "-e", f"dataset={DATASET}", *extra)
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert sentence in out, proc.stdout[-3000:]
    assert "submit the Ray Job" not in proc.stdout and "usage:" not in proc.stdout
    probe = ray_cluster.ssh(ray_cluster.head, "test -d /var/lib/ray && test ! -e /var/lib/ray/rayops-pwned")
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_missing_dataset_file_is_one_sentence(ray_cluster: RayCluster) -> None:
    proc = ray_cluster.playbook("train.yml", "-e", "dataset=/nonexistent/power.csv")
    assert proc.returncode != 0
    assert "The dataset /nonexistent/power.csv does not exist on this controller" in proc.stdout


def test_a_dataset_larger_than_the_cap_is_refused_before_the_copy(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """Issue 15: a dataset had no size cap, so any file was copied to the head before the workflow could
    refuse it. train.yml refuses a file larger than the workflow reads (512 MiB) on the controller, in one
    sentence, before the copy. The file is sparse (no disk used). ~20 s."""
    big = tmp_path / "powerconsumption.csv"
    with big.open("wb") as out:
        out.truncate(513 * 1024 * 1024)
    proc = ray_cluster.playbook("train.yml", "-e", f"dataset={big}", "-e", "train_run_id=e2e-toolarge")
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    sentence = f"The dataset {big} is 513.0 MiB, more than the workflow reads (512 MiB)"
    assert sentence in out, proc.stdout[-3000:]
    assert "copy the dataset to the head" not in proc.stdout and "submit the Ray Job" not in proc.stdout


def test_deployed_notebook_runs_on_the_head_with_the_cluster_kernel(
    ray_cluster: RayCluster, first_run: dict[str, Any]
) -> None:
    """The notebook JupyterLab serves, executed by the `rayops` kernel on the head as user ray, with a
    clean environment: the kernel alone must bring the address, token, buckets and S3 endpoint."""
    executed = "/tmp/workflow-executed.ipynb"  # on the head
    run = ray_cluster.ssh(
        ray_cluster.head,
        "cd /var/lib/ray/notebooks && sudo -u ray env -i HOME=/var/lib/ray PATH=/usr/bin:/bin "
        f"{VENV}/bin/jupyter nbconvert --to notebook --execute "
        "--ExecutePreprocessor.kernel_name=rayops --ExecutePreprocessor.timeout=1200 "
        f"--output {executed} workflow.ipynb",
        timeout=1500,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    notebook = json.loads(ray_cluster.ssh(ray_cluster.head, f"cat {executed}; rm -f {executed}").stdout)
    outputs = [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs if o["output_type"] == "stream")
    # It read the data of the model train.yml promoted, from the raw bucket, through the local S3.
    meta = get_json(ray_cluster, first_run["metadata_uri"])
    assert f"dataset: {meta['data']['raw_uri']}" in text
    assert f"S3 endpoint: {ray_cluster.cloud.spec.s3_endpoint_url}" in text
    assert "3 node(s)" in text and "52,416 rows" in text
    assert "promotion: the model beats the baseline" in text, text[-2000:]
    # The head carries ipywidgets, so Ray renders its rich notebook output instead of asking for it.
    assert "Missing packages" not in text, text[-2000:]
    plots = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(plots) >= 2


def test_ray_job_submit_runs_python_from_the_venv(ray_cluster: RayCluster) -> None:
    """`ray job submit -- python ...`, as in Ray's guides, finds the venv's Python as `python` (~10 s)."""
    code = "import sys; print('RAYOPS_PY=' + sys.executable)"
    as_ray = (
        f"set -a; . /etc/rayops/ray-client.env; set +a; timeout 150 {VENV}/bin/ray job submit "
        f"--address http://127.0.0.1:{DASHBOARD_PORT} -- python -c {shlex.quote(code)}"
    )
    out = ray_cluster.ssh(ray_cluster.head, f"sudo -u ray bash -c {shlex.quote(as_ray)}", timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"RAYOPS_PY={VENV}/bin/python" in out.stdout, out.stdout[-2000:]
