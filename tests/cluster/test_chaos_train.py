"""Issue 16's training chaos rows on the session cluster: a worker's raylet killed mid-training, a worker
machine stopped mid-training, the S3 endpoint frozen for 30 s mid-run, two train.yml for one zone at once.

Every run trains zone 3 on a worker group (num_workers 2, a checkpoint every 10 of 100 rounds, gates off
so that a run that completes promotes): zone 1's pointer, its manifest and the served model are never
touched, and are asserted unchanged after every fault by their S3 version ids. Each fault is undone in a
fixture's teardown (machine started, 3 nodes alive and reachable), or a ``finally`` (S3 thawed), so that a
fault that is not undone fails loudly instead of breaking the later tests of the session. Each row prints
its figure. ~6-7 min in all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from chaos_helpers import (
    PARAMS,
    REPO,
    ZONE,
    checkpointed,
    finish,
    has_key,
    registered_checkpoint,
    run_metrics,
    train_zone3,
    wait_for,
    worker_with_a_train_worker,
    zone1_versions,
    zone3_pointer,
)
from cluster_helpers import RayCluster

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


@pytest.fixture(scope="module")
def untouched(ray_cluster: RayCluster) -> Iterator[dict[str, str | None]]:
    before = zone1_versions(ray_cluster)
    yield before
    assert zone1_versions(ray_cluster) == before, "zone 1's pointer or manifest moved during the chaos rows"


@pytest.fixture
def restored(ray_cluster: RayCluster) -> Iterator[list[str]]:
    """The machines a row stopped (it appends them): started again after the row, then the 3 nodes alive
    and every machine answering SSH. A teardown, so that a fault left behind is an error of its own."""
    stopped: list[str] = []
    yield stopped
    for name in stopped:
        ray_cluster.cloud.start_machine(name)
    ray_cluster.wait_alive(3, deadline_s=240)
    for name in [ray_cluster.head, *ray_cluster.workers]:
        assert ray_cluster.ssh(name, "true", timeout=30).returncode == 0, f"{name} does not answer SSH"


def test_second_run_for_a_zone_is_refused_and_a_killed_raylet_is_survived(
    ray_cluster: RayCluster, untouched: dict[str, str | None], restored: list[str]
) -> None:
    """Two train.yml for zone 3 at once: the second is refused with the first's run id. Then a worker's
    raylet is killed (-9) after the first checkpoint: the run completes, resumed from a checkpoint."""
    first = train_zone3(ray_cluster, "chaos-a")
    try:
        wait_for(
            "claim of chaos-a",
            lambda: (
                has_key(ray_cluster, "results", f"zone{ZONE}/runs/chaos-a/run.json")
                or has_key(ray_cluster, "results", "runs/chaos-a/run.json")
            ),
            300,
            first,
        )
        code, out = finish(train_zone3(ray_cluster, "chaos-b"))
        assert code != 0, out[-3000:]
        flat = " ".join(out.split())
        assert (
            "Training run chaos-a (Ray job rayops-train-chaos-a, RUNNING) is already running for target zone3"
            in flat
        ), out[-3000:]
        assert not (REPO / ".rayops" / "runs" / "chaos-b" / "metrics.json").exists()
        print("second train.yml for zone 3: refused with run chaos-a's id")
        wait_for(
            "registered checkpoint of chaos-a", registered_checkpoint(ray_cluster, "chaos-a"), 300, first
        )
        victim = worker_with_a_train_worker(ray_cluster)
        killed_at = time.monotonic()
        kill = ray_cluster.ssh(victim, "kill -9 $(pgrep -x raylet)")
        assert kill.returncode == 0, kill.stderr
        code, out = finish(first)
        after_kill = time.monotonic() - killed_at
    finally:
        if first.poll() is None:
            first.kill()
    assert code == 0, out[-5000:]
    metrics = run_metrics("chaos-a")
    assert metrics["resumed_from_round"], "the run did not resume from a checkpoint"
    assert all(r % 10 == 0 and r > 0 for r in metrics["resumed_from_round"].values())
    assert (zone3_pointer(ray_cluster) or {}).get("run_id") == "chaos-a"  # completed: promoted legitimately
    timings = metrics["timings_s"]
    print(
        f"raylet of {victim} killed after a checkpoint: run completed {after_kill:.0f} s later, resumed "
        f"{metrics['resumed_from_round']}; Ray Train fit {timings['ray_train_fit']:.0f} s"
    )


def test_stopped_worker_machine_mid_training(
    ray_cluster: RayCluster, untouched: dict[str, str | None], restored: list[str]
) -> None:
    """The machine holding one of the run's Ray Train workers loses power (every process killed at once, a
    failed instance) after a registered checkpoint: the run completes on the remaining nodes, resumed from
    the checkpoint, or fails within the bound with the sentence. (An orderly stop let a short run finish
    while the machine shut down.)"""
    before = zone3_pointer(ray_cluster)
    # More rounds than the other rows: the worker must still be training when its node leaves (at 100 rounds
    # the run had finished first).
    run = train_zone3(ray_cluster, "chaos-c", num_boost_round=250)
    try:
        wait_for("registered checkpoint of chaos-c", registered_checkpoint(ray_cluster, "chaos-c"), 400, run)
        victim = worker_with_a_train_worker(ray_cluster)
        restored.append(victim)
        stopped_at = time.monotonic()
        ray_cluster.cloud.stop_machine(victim, hard=True)
        code, out = finish(run)
        took = time.monotonic() - stopped_at
    finally:
        if run.poll() is None:
            run.kill()
    flat = " ".join(out.split())
    if code == 0:
        resumed = run_metrics("chaos-c")["resumed_from_round"]
        assert resumed, f"the run completed without a restart: {victim} left after it ({took:.0f} s)"
        assert (zone3_pointer(ray_cluster) or {}).get("run_id") == "chaos-c"
        print(f"{victim} stopped after a checkpoint: run completed {took:.0f} s later, resumed from one")
    else:
        assert "could not place 2 worker(s) of 1 CPU" in flat and "(placement_timeout_s)" in flat, out[-4000:]
        assert took < PARAMS["placement_timeout_s"] + 240  # type: ignore[operator]  # an int
        assert zone3_pointer(ray_cluster) == before
        print(f"{victim} stopped after a checkpoint: run failed {took:.0f} s later with the sentence")


def test_s3_frozen_for_30_s_mid_run(ray_cluster: RayCluster, untouched: dict[str, str | None]) -> None:
    """The run retries and completes, or fails with the sentence; a run that failed promoted nothing."""
    before = zone3_pointer(ray_cluster)
    run = train_zone3(ray_cluster, "chaos-d")
    try:
        wait_for("checkpoint of chaos-d", checkpointed(ray_cluster, "chaos-d"), 400, run)
        ray_cluster.cloud.pause_s3()
        try:
            time.sleep(30)
        finally:
            ray_cluster.cloud.pause_s3(paused=False)
        code, out = finish(run)
    finally:
        if run.poll() is None:
            run.kill()
    if code == 0:
        assert (zone3_pointer(ray_cluster) or {}).get("run_id") == "chaos-d"
        print("S3 frozen 30 s mid-run: the run retried and completed")
    else:
        flat = " ".join(out.split())
        assert "Training run chaos-d FAILED: cannot " in flat, out[-4000:]
        assert zone3_pointer(ray_cluster) == before  # nothing promoted
        print(
            f"S3 frozen 30 s mid-run: the run failed with: {flat[flat.index('Training run chaos-d') :][:300]}"
        )
    # the next run succeeds once S3 is back: the session's later train.yml runs (test_mlflow, test_serve)
