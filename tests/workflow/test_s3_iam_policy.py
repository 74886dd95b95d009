"""The nodes' instance policy (pulumi/rayops_aws/iam.py) is enough for the workflow, and no more.

moto can authorize requests like IAM does (moto.core.authorization: `enable_iam_authentication`, the
context-manager form of INITIAL_NO_AUTH_ACTION_COUNT=0). A moto server in this process holds the four
versioned buckets and an IAM user whose only policy is the document the Pulumi program attaches to the
node role; with authorization on, the real workflow (`python -m rayops.workflow run`, a subprocess with
that user's keys) runs end to end on synthetic data, and actions outside the policy are denied.
An IAM user stands in for the role: moto evaluates a user's and an assumed role's policies the same way.
~25 s (the workflow run).
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
from rayops_aws.iam import bucket_access_policy  # the Pulumi program's package

BUCKETS = {kind: f"iam-{kind}" for kind in ("raw", "features", "models", "results")}
SMALL = ["--holdout-weeks", "1", "--num-boost-round", "60", "--eta", "0.2", "--local-cpus", "2"]


@pytest.fixture(scope="module")
def enforcing_s3() -> Iterator[tuple[str, dict[str, str]]]:
    """(endpoint, the node user's credentials): buckets and user made with authorization off, then on."""
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
        iam.create_user(UserName="rayops-node")
        iam.put_user_policy(
            UserName="rayops-node",
            PolicyName="rayops-buckets",
            PolicyDocument=bucket_access_policy([f"arn:aws:s3:::{b}" for b in BUCKETS.values()]),
        )
        key = iam.create_access_key(UserName="rayops-node")["AccessKey"]
        with enable_iam_authentication():
            yield (
                endpoint,
                {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]},
            )
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))  # noqa: S310
        server.stop()


def node_s3(enforcing_s3: tuple[str, dict[str, str]]) -> Any:
    endpoint, creds = enforcing_s3
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
    )


def test_the_workflow_runs_with_the_instance_policy_alone(
    enforcing_s3: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    endpoint, creds = enforcing_s3
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


def test_actions_outside_the_policy_are_denied(enforcing_s3: tuple[str, dict[str, str]]) -> None:
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
