"""What the chaos rows (test_chaos_train, test_chaos_head) share: train.yml for zone 3 in the background,
waits on its checkpoints in S3, the versions that must not move, and the machine that holds a worker.

Every run trains zone 3 on a worker group (num_workers 2, a checkpoint every 10 of 100 rounds, gates off
so that a run that completes promotes): zone 1's pointer, its manifest and the served model are never
touched.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from cluster_helpers import DATASET, RayCluster, train_worker_machines

from rayops.ansible_env import BIN, REPO, ansible_env

ZONE = 3
PARAMS = {
    "num_workers": 2,
    "num_boost_round": 100,
    "checkpoint_every": 10,
    "report_every": 10,
    "max_failures": 3,
    "placement_timeout_s": 120,
    "min_r2": "none",
    "live_tolerance": 1.0,
}


def train_zone3(ray_cluster: RayCluster, run_id: str, **params: Any) -> subprocess.Popen[str]:
    """train.yml for zone 3 in the background (the rows fault it while it runs)."""
    extra = json.dumps(
        {
            "train_params": {**PARAMS, **params},
            "target_zone": ZONE,
            "train_run_id": run_id,
            "dataset": str(DATASET),
        }
    )
    return subprocess.Popen(
        [str(BIN / "ansible-playbook"), "-i", str(ray_cluster.inventory), "train.yml", "-e", extra],
        cwd=REPO,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def zone1_versions(ray_cluster: RayCluster) -> dict[str, str | None]:
    """Version ids of what must not move: zone 1's pointer, the model it names (what Serve loads) and the
    features manifest of that model (the last good one)."""
    s3 = ray_cluster.cloud.s3_client()
    models = ray_cluster.cloud.spec.buckets()["models"]

    def version(uri: str) -> str | None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            return str(s3.head_object(Bucket=bucket, Key=key)["VersionId"])
        except s3.exceptions.ClientError:
            return None

    current = version(f"s3://{models}/zone1/current.json")
    if current is None:
        return {"zone1/current.json": None}
    pointer = json.loads(s3.get_object(Bucket=models, Key="zone1/current.json")["Body"].read())
    bucket, _, key = str(pointer["metadata_uri"]).removeprefix("s3://").partition("/")
    metadata = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    manifest = metadata["data"]["features_manifest_uri"]
    return {
        "zone1/current.json": current,
        "model": f"{pointer['model_uri']}@{version(pointer['model_uri'])}",
        "manifest": f"{manifest}@{version(manifest)}",
    }


def zone3_pointer(ray_cluster: RayCluster) -> dict[str, Any] | None:
    s3 = ray_cluster.cloud.s3_client()
    models = ray_cluster.cloud.spec.buckets()["models"]
    try:
        return dict(json.loads(s3.get_object(Bucket=models, Key=f"zone{ZONE}/current.json")["Body"].read()))
    except s3.exceptions.NoSuchKey:
        return None


def wait_for(what: str, check: Any, deadline_s: float, proc: subprocess.Popen[str] | None = None) -> float:
    start = time.monotonic()
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"train.yml ended before {what}:\n{(proc.stdout.read() if proc.stdout else '')[-4000:]}"
            )
        assert time.monotonic() - start < deadline_s, f"no {what} within {deadline_s:.0f} s"
        time.sleep(1)
    return time.monotonic() - start


def has_key(ray_cluster: RayCluster, bucket_role: str, prefix: str, marker: str = "") -> bool:
    s3 = ray_cluster.cloud.s3_client()
    bucket = ray_cluster.cloud.spec.buckets()[bucket_role]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return any(marker in obj["Key"] for obj in listed.get("Contents", []))


def checkpointed(ray_cluster: RayCluster, run_id: str) -> Any:
    return lambda: has_key(ray_cluster, "models", f"zone{ZONE}/ray-train/{run_id}/", "checkpoint_")


def registered_checkpoint(ray_cluster: RayCluster, run_id: str) -> Any:
    """Whether Ray Train's controller registered a checkpoint of the run: it writes its snapshot then (a
    checkpoint folder alone may still wait in a worker's result queue)."""
    return lambda: has_key(
        ray_cluster, "models", f"zone{ZONE}/ray-train/{run_id}/", "checkpoint_manager_snapshot.json"
    )


def worker_with_a_train_worker(ray_cluster: RayCluster) -> str:
    """A worker machine (not the head) whose node holds an ALIVE worker of the running group, per Ray's
    state API (waits up to 60 s while the group is placed or restarted)."""
    start = time.monotonic()
    while True:
        holders = [m for m in train_worker_machines(ray_cluster) if m != ray_cluster.head]
        if holders:
            return holders[0]
        assert time.monotonic() - start < 60, "no worker machine holds an alive Ray Train worker of the run"
        time.sleep(2)


def run_metrics(run_id: str) -> dict[str, Any]:
    return dict(json.loads((REPO / ".rayops" / "runs" / run_id / "metrics.json").read_text()))
