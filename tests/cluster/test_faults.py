"""Fault tests on a real local cloud: Ray under systemd recovers, rejoins, and restarts only what changed.

The deadlines below are bounds for waiting, not measurements; the measured times are printed for the
benchmark notes. The head-kill bound was 60 s for "3 nodes alive"; it now also covers the Jobs API answering
(train.yml's next submit), which the head's dashboard serves last: 120 s (CI, idle host: 62 s once, 7-23 s in
other runs). With GCS fault tolerance (issue 16, the head's
Redis) the restarted head is the same cluster: the workers' raylets wait for it (their reconnect timeout is
120 s) and never leave, so "3 nodes alive" comes when the head's own raylet is back. Before issue 16 a
restarted head was a new cluster and each worker's raylet exited and rejoined (31-38 s in all).
"""

from __future__ import annotations

import time

import pytest
from cluster_helpers import VENV, RayCluster, recap, wait_healthy

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]

HEAD_BACK_S = 120  # a killed head: restarted, its GCS, its Jobs API and 3 alive nodes


def test_second_site_run_changes_nothing(ray_cluster: RayCluster, site_rerun: str) -> None:
    """The session's no-change site.yml (conftest's site_rerun, which the tunnel tests read too)."""
    counters = recap(site_rerun)
    assert set(counters) == {ray_cluster.head, *ray_cluster.workers}
    assert all(c["changed"] == 0 for c in counters.values()), counters


def test_killed_head_is_restarted_and_workers_rejoin(ray_cluster: RayCluster) -> None:
    before = ray_cluster.unit_invocation(ray_cluster.head, "ray-head")
    workers = {w: ray_cluster.unit_invocation(w, "ray-worker") for w in ray_cluster.workers}
    killed = ray_cluster.ssh(ray_cluster.head, "systemctl kill --signal=SIGKILL ray-head")
    assert killed.returncode == 0, killed.stderr
    start = time.monotonic()
    # First the restart itself (a new invocation), so that a `ray status` answered by the dying
    # head in the moment after the kill cannot count as "back".
    while ray_cluster.unit_invocation(ray_cluster.head, "ray-head") == before:
        assert time.monotonic() - start < 60, "systemd did not restart ray-head within 60 s"
        time.sleep(1)
    # The GCS, the Jobs API (train.yml's next submit) and 3 alive nodes.
    wait_healthy(ray_cluster, deadline_s=HEAD_BACK_S - (time.monotonic() - start))
    print(f"head killed -> GCS, Jobs API and 3 nodes back after {time.monotonic() - start:.1f} s")
    for worker in ray_cluster.workers:
        active = ray_cluster.ssh(worker, "systemctl is-active ray-worker")
        assert active.stdout.strip() == "active", f"{worker}: {active.stdout}"
    # The same cluster: no worker's unit was restarted (its raylet outlasted the head's restart).
    assert {w: ray_cluster.unit_invocation(w, "ray-worker") for w in ray_cluster.workers} == workers


def test_stopped_worker_machine_rejoins_after_start(ray_cluster: RayCluster) -> None:
    worker = ray_cluster.workers[-1]
    ray_cluster.cloud.stop_machine(worker)
    try:
        ray_cluster.wait_alive(2, deadline_s=120)
    finally:
        ray_cluster.cloud.start_machine(worker)
    took = ray_cluster.wait_alive(3, deadline_s=180)
    print(f"{worker} started -> 3 nodes alive again after {took:.1f} s")


def test_changed_worker_variable_restarts_only_the_workers(ray_cluster: RayCluster) -> None:
    units = [(ray_cluster.head, "ray-head"), (ray_cluster.head, "jupyterlab")]
    units += [(w, "ray-worker") for w in ray_cluster.workers]
    before = {u: ray_cluster.unit_invocation(*u) for u in units}
    # One kind only, the way the README says: the workers' group_vars beside the inventory (ray_service is
    # one definition for both kinds; an -e would change the head too).
    group_vars = ray_cluster.inventory.parent / "group_vars"
    group_vars.mkdir(exist_ok=True)
    (group_vars / "ray_workers.yml").write_text("ray_service_num_cpus: 2\n", encoding="utf-8")
    try:
        run = ray_cluster.playbook("site.yml")
        assert run.returncode == 0, run.stdout[-3000:]
        counters = recap(run.stdout)
        assert counters[ray_cluster.head]["changed"] == 0, counters
        assert all(counters[w]["changed"] > 0 for w in ray_cluster.workers), counters
        after = {u: ray_cluster.unit_invocation(*u) for u in units}
        assert after[(ray_cluster.head, "ray-head")] == before[(ray_cluster.head, "ray-head")]
        assert after[(ray_cluster.head, "jupyterlab")] == before[(ray_cluster.head, "jupyterlab")]
        for w in ray_cluster.workers:
            assert after[(w, "ray-worker")] != before[(w, "ray-worker")], f"{w} was not restarted"
        # site.yml's own health check waited until the GCS's node table (Ray's state API) listed 3 alive
        # nodes with 1 + 2 + 2 CPUs. `ray status` shows the autoscaler's view, which follows a few seconds
        # later (CI once read 7.0 CPUs there, the old raylets' CPUs not yet dropped): wait for it to agree.
        start = time.monotonic()
        while True:
            status = ray_cluster.ssh(
                ray_cluster.head,
                f"sudo -u ray bash -c 'set -a; . /etc/rayops/ray-client.env; set +a; {VENV}/bin/ray status'",
            )
            if "/5.0 CPU" in status.stdout or time.monotonic() - start > 90:
                break
            time.sleep(2)
        print(f"ray status agreed with the state API {time.monotonic() - start:.1f} s after site.yml")
        assert "/5.0 CPU" in status.stdout, status.stdout
    finally:
        (group_vars / "ray_workers.yml").unlink()
        restore = ray_cluster.playbook("site.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]
