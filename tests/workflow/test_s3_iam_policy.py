"""The nodes' instance policies (pulumi/rayops_aws/iam.py) are enough for their work, and no more.

moto can authorize requests like IAM does (moto.core.authorization: `enable_iam_authentication`, the
context-manager form of INITIAL_NO_AUTH_ACTION_COUNT=0). A moto server in this process holds the four
versioned buckets and an IAM user whose only policy is the document the Pulumi program attaches to the
head role, and one whose only policy is the workers' document; with authorization on, the real workflow
(`python -m rayops.workflow run`, a subprocess with the head user's keys) runs end to end on synthetic data,
the worker user writes what Ray Data and Ray Train write from a worker (pyarrow's S3 filesystem, as they
use it) and nothing else: no promotion pointer, no delete outside Ray Train's storage, no tags.
IAM users stand in for the roles: moto evaluates a user's and an assumed role's policies the same way.
~30 s (the workflow run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import workflow_synth as synth
from botocore.exceptions import ClientError
from moto.core.authorization import enable_iam_authentication
from moto.server import ThreadedMotoServer
from workflow_helpers import REPO, TEST_ENV, metrics_line

sys.path.insert(0, str(REPO / "pulumi"))
from rayops_aws.iam import head_policy, worker_policy  # the Pulumi program's package

BUCKETS = {kind: f"iam-{kind}" for kind in ("raw", "features", "models", "results")}
SMALL = ["--holdout-weeks", "1", "--num-boost-round", "60", "--eta", "0.2", "--local-cpus", "2"]


@pytest.fixture(scope="module")
def enforcing_s3() -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """(endpoint, the head user's credentials, the worker user's): buckets and users made with
    authorization off, then on."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "admin"}
    admin["aws_secret_access_key"] = "admin"
    try:
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        for bucket in [*BUCKETS.values(), "iam-elsewhere"]:
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        arns = {kind: f"arn:aws:s3:::{b}" for kind, b in BUCKETS.items()}
        creds = []
        for user, policy in (("rayops-head", head_policy(arns)), ("rayops-worker", worker_policy(arns))):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="rayops-buckets", PolicyDocument=policy)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            creds.append(
                {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
            )
        with enable_iam_authentication():
            yield endpoint, creds[0], creds[1]
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))  # noqa: S310
        server.stop()


def node_s3(enforcing_s3: tuple[str, dict[str, str], dict[str, str]], role: str = "head") -> Any:
    endpoint, head, worker = enforcing_s3
    creds = head if role == "head" else worker
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
    )


def test_the_workflow_runs_with_the_head_policy_alone(
    enforcing_s3: tuple[str, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    endpoint, creds, _ = enforcing_s3
    dataset = tmp_path / "powerconsumption.csv"
    dataset.write_bytes(synth.csv_bytes(synth.frame(days=35)))
    env = {**os.environ, **TEST_ENV, **creds}
    env.pop("RAY_ADDRESS", None)
    args = ["--dataset", str(dataset), "--buckets", json.dumps(BUCKETS), "--s3-endpoint-url", endpoint]
    proc = subprocess.run(
        [sys.executable, "-m", "rayops.workflow", "run", *args, "--run-id", "iam-1", *SMALL],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    metrics = metrics_line(proc.stdout)
    assert metrics["promoted"] is True
    # Everything it wrote is there, read back with the same credentials (versions included).
    s3 = node_s3(enforcing_s3)
    for uri in (metrics["model_uri"], metrics["metrics_uri"], metrics["current_uri"], metrics["report_uri"]):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0, uri
    raw_bucket, _, raw_key = metrics["raw_uri"].removeprefix("s3://").partition("/")
    versions = s3.list_object_versions(Bucket=raw_bucket, Prefix=raw_key)["Versions"]
    assert metrics["data_version"] in {v["VersionId"] for v in versions}


def denied(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return str(err.value.response["Error"]["Code"])


def test_actions_outside_the_head_policy_are_denied(
    enforcing_s3: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    s3 = node_s3(enforcing_s3)
    version = s3.put_object(Bucket=BUCKETS["raw"], Key="probe", Body=b"1")["VersionId"]  # allowed
    # History cannot be erased (s3:DeleteObjectVersion is left out on purpose) ...
    assert denied(s3.delete_object, Bucket=BUCKETS["raw"], Key="probe", VersionId=version) == "AccessDenied"
    # ... nor a bucket's versioning turned off, nor buckets made, listed, or another bucket written.
    suspend = {"Status": "Suspended"}
    assert denied(s3.put_bucket_versioning, Bucket=BUCKETS["raw"], VersioningConfiguration=suspend) == (
        "AccessDenied"
    )
    assert denied(s3.create_bucket, Bucket="iam-new") == "AccessDenied"
    assert denied(s3.list_buckets) == "AccessDenied"
    assert denied(s3.put_object, Bucket="iam-elsewhere", Key="x", Body=b"1") == "AccessDenied"
    assert denied(s3.get_object, Bucket="iam-elsewhere", Key="x") == "AccessDenied"


def test_a_worker_writes_its_prefixes_and_nothing_else(
    enforcing_s3: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    import pyarrow as pa
    import pyarrow.fs
    import pyarrow.parquet as pq

    endpoint, _, creds = enforcing_s3
    head, worker = node_s3(enforcing_s3, "head"), node_s3(enforcing_s3, "worker")
    models, features = BUCKETS["models"], BUCKETS["features"]
    pointer = head.put_object(Bucket=models, Key="zone1/current.json", Body=b'{"run_id": "w"}')
    # What a worker does: Ray Data's feature blocks, Ray Train's checkpoints (and their removal),
    # through pyarrow's S3 filesystem as Ray uses it; reading the promoted model (Serve replicas).
    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=endpoint.removeprefix("http://"),
        scheme="http",
        region="us-east-1",
        access_key=creds["AWS_ACCESS_KEY_ID"],
        secret_key=creds["AWS_SECRET_ACCESS_KEY"],
    )
    pq.write_table(pa.table({"x": [1, 2]}), f"{features}/zone1/runs/w1/data/part-1.parquet", filesystem=fs)
    with fs.open_output_stream(f"{models}/zone1/ray-train/w1/checkpoint_0/model.ubj") as out:
        out.write(b"checkpoint")
    fs.delete_file(f"{models}/zone1/ray-train/w1/checkpoint_0/model.ubj")
    assert worker.get_object(Bucket=models, Key="zone1/current.json")["Body"].read() == b'{"run_id": "w"}'
    # What it must not: promote (write or delete a pointer), write a model, metadata, manifest, raw
    # data or results, delete outside Ray Train's storage, or change a version's pinned tag.
    for bucket, key in (
        (models, "zone1/current.json"),
        (models, "zone2/current.json"),
        (models, "zone1/runs/w1/model.ubj"),
        (models, "zone1/runs/w1/metadata.json"),
        (features, "zone1/runs/w1/manifest.json"),
        (BUCKETS["raw"], "datasets/sha256/x.csv"),
        (BUCKETS["results"], "runs/w1/metrics.json"),
    ):
        assert denied(worker.put_object, Bucket=bucket, Key=key, Body=b"1") == "AccessDenied", key
    for key in ("zone1/current.json", "zone1/runs/w1/model.ubj"):
        assert denied(worker.delete_object, Bucket=models, Key=key) == "AccessDenied", key
    assert denied(worker.delete_object, Bucket=features, Key="zone1/runs/w1/data/part-1.parquet") == (
        "AccessDenied"
    )
    unpin = {"TagSet": [{"Key": "rayops-pinned", "Value": "false"}]}
    assert denied(worker.put_object_tagging, Bucket=models, Key="zone1/current.json", Tagging=unpin) == (
        "AccessDenied"
    )
    assert head.head_object(Bucket=models, Key="zone1/current.json")["VersionId"] == pointer["VersionId"]
    # The head may (it promotes and pins).
    head.put_object_tagging(Bucket=models, Key="zone1/current.json", Tagging=unpin)


def test_a_dataset_outside_the_cluster_buckets_gets_the_sentence_to_copy_it(
    enforcing_s3: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    """The README's old `s3://my-bucket/...` example: the head's role reads only the cluster's buckets."""
    from rayops.workflow import ingest
    from rayops.workflow.config import Buckets
    from rayops.workflow.errors import DataError
    from rayops.workflow.s3 import S3Store

    store = S3Store(enforcing_s3[0])
    store._client = node_s3(enforcing_s3, "head")
    with pytest.raises(DataError) as err:
        ingest.fetch("s3://iam-elsewhere/inputs/power.csv", store, cluster_buckets=Buckets(**BUCKETS))
    assert str(err.value) == (
        "cannot read the dataset s3://iam-elsewhere/inputs/power.csv (AccessDenied): the nodes may read only "
        "the cluster's buckets (iam-raw, iam-features, iam-models, iam-results); copy the file into the raw "
        "bucket (aws s3 cp s3://iam-elsewhere/inputs/power.csv s3://iam-raw/inputs/power.csv) and pass "
        "that URI"
    )
