"""Issue 16's training chaos rows on the session cluster: a worker's raylet killed mid-training, a worker
machine stopped mid-training, the S3 endpoint frozen for 30 s mid-run, two train.yml for one zone at once.

Every run trains zone 3 on a worker group (num_workers 2, a checkpoint every 10 of 100 rounds, gates off
so that a run that completes promotes): zone 1's pointer, its manifest and the served model are never
touched, and are asserted unchanged after every fault by their S3 version ids. Each fault is undone in a
``finally`` (machine started, 3 nodes alive, S3 thawed). Each row prints its figure. ~6-7 min in all.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import DATASET, RayCluster

from rayops.ansible_env import BIN, REPO, ansible_env

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]

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


def _train(ray_cluster: RayCluster, run_id: str, **params: Any) -> subprocess.Popen[str]:
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


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _versions(ray_cluster: RayCluster) -> dict[str, str | None]:
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


def _zone3_pointer(ray_cluster: RayCluster) -> dict[str, Any] | None:
    s3 = ray_cluster.cloud.s3_client()
    models = ray_cluster.cloud.spec.buckets()["models"]
    try:
        return dict(json.loads(s3.get_object(Bucket=models, Key=f"zone{ZONE}/current.json")["Body"].read()))
    except s3.exceptions.NoSuchKey:
        return None


def _wait_for(what: str, check: Any, deadline_s: float, proc: subprocess.Popen[str] | None = None) -> float:
    start = time.monotonic()
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"train.yml ended before {what}:\n{(proc.stdout.read() if proc.stdout else '')[-4000:]}"
            )
        assert time.monotonic() - start < deadline_s, f"no {what} within {deadline_s:.0f} s"
        time.sleep(1)
    return time.monotonic() - start


def _has_key(ray_cluster: RayCluster, bucket_role: str, prefix: str, marker: str = "") -> bool:
    s3 = ray_cluster.cloud.s3_client()
    bucket = ray_cluster.cloud.spec.buckets()[bucket_role]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return any(marker in obj["Key"] for obj in listed.get("Contents", []))


def _checkpointed(ray_cluster: RayCluster, run_id: str) -> Any:
    return lambda: _has_key(ray_cluster, "models", f"zone{ZONE}/ray-train/{run_id}/", "checkpoint_")


def _registered(ray_cluster: RayCluster, run_id: str) -> Any:
    """Whether Ray Train's controller registered a checkpoint of the run: it writes its snapshot then (a
    checkpoint folder alone may still wait in a worker's result queue)."""
    return lambda: _has_key(
        ray_cluster, "models", f"zone{ZONE}/ray-train/{run_id}/", "checkpoint_manager_snapshot.json"
    )


def _worker_with_a_train_worker(ray_cluster: RayCluster) -> str:
    for worker in ray_cluster.workers:
        if (
            ray_cluster.ssh(worker, "pgrep -f 'ray::RayTrainWorker' >/dev/null && echo yes").stdout.strip()
            == "yes"
        ):
            return worker
    raise AssertionError("no worker machine runs a Ray Train worker")


def _metrics(run_id: str) -> dict[str, Any]:
    return dict(json.loads((REPO / ".rayops" / "runs" / run_id / "metrics.json").read_text()))


@pytest.fixture(scope="module")
def untouched(ray_cluster: RayCluster) -> Iterator[dict[str, str | None]]:
    before = _versions(ray_cluster)
    yield before
    assert _versions(ray_cluster) == before, "zone 1's pointer or manifest moved during the chaos rows"


@pytest.mark.xfail(
    strict=False,
    reason=(
        "issue 16, open: in CI on e17b748 and fce0854 the run completed without resuming from a "
        "checkpoint after a worker's raylet was killed (waiting for a registered checkpoint did not change "
        "it; it passed in CI on 00a282b and 397d776); the machine is chosen by a RayTrainWorker process "
        "title, which may not be the running group's worker"
    ),
)
def test_second_run_for_a_zone_is_refused_and_a_killed_raylet_is_survived(
    ray_cluster: RayCluster, untouched: dict[str, str | None]
) -> None:
    """Two train.yml for zone 3 at once: the second is refused with the first's run id. Then a worker's
    raylet is killed (-9) after the first checkpoint: the run completes, resumed from a checkpoint."""
    first = _train(ray_cluster, "chaos-a")
    try:
        _wait_for(
            "claim of chaos-a",
            lambda: (
                _has_key(ray_cluster, "results", f"zone{ZONE}/runs/chaos-a/run.json")
                or _has_key(ray_cluster, "results", "runs/chaos-a/run.json")
            ),
            300,
            first,
        )
        code, out = _finish(_train(ray_cluster, "chaos-b"))
        assert code != 0, out[-3000:]
        flat = " ".join(out.split())
        assert (
            "Training run chaos-a (Ray job rayops-train-chaos-a, RUNNING) is already running for target zone3"
            in flat
        ), out[-3000:]
        assert not (REPO / ".rayops" / "runs" / "chaos-b" / "metrics.json").exists()
        print("second train.yml for zone 3: refused with run chaos-a's id")
        _wait_for("registered checkpoint of chaos-a", _registered(ray_cluster, "chaos-a"), 300, first)
        victim = _worker_with_a_train_worker(ray_cluster)
        killed_at = time.monotonic()
        kill = ray_cluster.ssh(victim, "kill -9 $(pgrep -x raylet)")
        assert kill.returncode == 0, kill.stderr
        code, out = _finish(first)
        after_kill = time.monotonic() - killed_at
    finally:
        if first.poll() is None:
            first.kill()
        ray_cluster.wait_alive(3, deadline_s=180)
    assert code == 0, out[-5000:]
    metrics = _metrics("chaos-a")
    assert metrics["resumed_from_round"], "the run did not resume from a checkpoint"
    assert all(r % 10 == 0 and r > 0 for r in metrics["resumed_from_round"].values())
    assert (_zone3_pointer(ray_cluster) or {}).get("run_id") == "chaos-a"  # completed: promoted legitimately
    timings = metrics["timings_s"]
    print(
        f"raylet of {victim} killed after a checkpoint: run completed {after_kill:.0f} s later, resumed "
        f"{metrics['resumed_from_round']}; Ray Train fit {timings['ray_train_fit']:.0f} s"
    )


@pytest.mark.xfail(
    strict=False,
    reason=(
        "issue 16, open: the row now cuts the machine's power after a registered checkpoint, which has not "
        "run in CI yet; with the orderly stop it passed in CI on 397d776 and e17b748 and failed on 00a282b "
        "and in one run on 2 Dec (the run finished inside the machine's 20 s shutdown, 19 s after the stop)"
    ),
)
def test_stopped_worker_machine_mid_training(
    ray_cluster: RayCluster, untouched: dict[str, str | None]
) -> None:
    """The machine holding one of the run's Ray Train workers loses power (every process killed at once, a
    failed instance) after a registered checkpoint: the run completes on the remaining nodes, resumed from
    the checkpoint, or fails within the bound with the sentence. (An orderly stop let a short run finish
    while the machine shut down; see the xfail.)"""
    before = _zone3_pointer(ray_cluster)
    # More rounds than the other rows: the worker must still be training when its node leaves (at 100 rounds
    # the run had finished first).
    run = _train(ray_cluster, "chaos-c", num_boost_round=250)
    victim = None
    try:
        _wait_for("registered checkpoint of chaos-c", _registered(ray_cluster, "chaos-c"), 400, run)
        victim = _worker_with_a_train_worker(ray_cluster)
        stopped_at = time.monotonic()
        ray_cluster.cloud.stop_machine(victim, hard=True)
        code, out = _finish(run)
        took = time.monotonic() - stopped_at
    finally:
        if run.poll() is None:
            run.kill()
        if victim is not None:
            ray_cluster.cloud.start_machine(victim)
        ray_cluster.wait_alive(3, deadline_s=240)
    flat = " ".join(out.split())
    if code == 0:
        resumed = _metrics("chaos-c")["resumed_from_round"]
        assert resumed, f"the run completed without a restart: {victim} left after it ({took:.0f} s)"
        assert (_zone3_pointer(ray_cluster) or {}).get("run_id") == "chaos-c"
        print(f"{victim} stopped after a checkpoint: run completed {took:.0f} s later, resumed from one")
    else:
        assert "could not place 2 worker(s) of 1 CPU" in flat and "(placement_timeout_s)" in flat, out[-4000:]
        assert took < PARAMS["placement_timeout_s"] + 240  # type: ignore[operator]  # an int
        assert _zone3_pointer(ray_cluster) == before
        print(f"{victim} stopped after a checkpoint: run failed {took:.0f} s later with the sentence")


def test_s3_frozen_for_30_s_mid_run(ray_cluster: RayCluster, untouched: dict[str, str | None]) -> None:
    """The run retries and completes, or fails with the sentence; a run that failed promoted nothing."""
    before = _zone3_pointer(ray_cluster)
    run = _train(ray_cluster, "chaos-d")
    try:
        _wait_for("checkpoint of chaos-d", _checkpointed(ray_cluster, "chaos-d"), 400, run)
        ray_cluster.cloud.pause_s3()
        try:
            time.sleep(30)
        finally:
            ray_cluster.cloud.pause_s3(paused=False)
        code, out = _finish(run)
    finally:
        if run.poll() is None:
            run.kill()
    if code == 0:
        assert (_zone3_pointer(ray_cluster) or {}).get("run_id") == "chaos-d"
        print("S3 frozen 30 s mid-run: the run retried and completed")
    else:
        flat = " ".join(out.split())
        assert "Training run chaos-d FAILED: cannot " in flat, out[-4000:]
        assert _zone3_pointer(ray_cluster) == before  # nothing promoted
        print(
            f"S3 frozen 30 s mid-run: the run failed with: {flat[flat.index('Training run chaos-d') :][:300]}"
        )
    # the next run succeeds once S3 is back: the session's later train.yml runs (test_mlflow, test_serve)
