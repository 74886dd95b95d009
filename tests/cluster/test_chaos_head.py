"""Chaos on the head (issue 16, items 1, 3 and 4). With GCS fault tolerance (the head's Redis) a killed GCS
and a rebooted head machine are the same cluster again without Ansible, and the workers never leave it; a
GCS killed mid-training loses the job's driver, and train.yml resubmits the job, which resumes from its
checkpoint; a head without enough free disk is refused by preflight. After every fault zone 1's pointer
and the served model are unchanged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chaos_helpers import (
    finish,
    registered_checkpoint,
    run_metrics,
    train_zone3,
    wait_for,
    zone1_versions,
    zone3_pointer,
)
from cluster_helpers import (
    RAY_CLIENT,
    VENV,
    RayCluster,
    ServeApi,
    pointer_and_model,
    ray_session,
    raylets,
    wait_head_restarted,
    wait_healthy,
    worker_serve,
)

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


def http_get(url: str, token: str = "") -> str:
    """A shell command on a node that fails unless ``url`` answers 2xx (urllib raises on anything else)."""
    code = (
        "import urllib.request as u; "
        f'u.urlopen(u.Request("{url}", headers={{"Authorization": "Bearer {token}"}}), timeout=10)'
    )
    return f"python3 -c '{code}'"


@pytest.fixture(scope="module")
def worker_api(ray_cluster: RayCluster, served: dict[str, Any]) -> Iterator[ServeApi]:
    """The first worker's Serve proxy: it must answer through every fault of the head."""
    with worker_serve(ray_cluster, ray_cluster.workers[0], ray_cluster.secret("serve_token")) as api:
        yield api


def test_the_gcs_store_is_the_heads_own(ray_cluster: RayCluster) -> None:
    """Redis listens on the head's loopback only, with the controller's password, persisting to an AOF;
    only root's and the Ray user's processes may connect (the firewall); the password is in no unit file.
    ~5 s."""
    head = ray_cluster.head
    password = ray_cluster.secret("gcs_redis_password")
    assert len(password) >= 32
    listening = ray_cluster.ssh(head, "ss -Htln 'sport = :6390' | awk '{print $4}'")
    assert listening.stdout.split() == ["127.0.0.1:6390"], listening.stdout
    env_file = ray_cluster.ssh(head, "stat -c '%a %U:%G' /etc/rayops/ray-head-gcs.env")
    assert env_file.stdout.strip() == "600 root:root", env_file.stdout
    unit = ray_cluster.ssh(head, "systemctl cat ray-head redis-server")
    assert unit.returncode == 0 and password not in unit.stdout, "the Redis password is in a unit file"
    assert "--redis-password=${RAY_GCS_REDIS_PASSWORD}" in unit.stdout, unit.stdout[-2000:]
    conf = ray_cluster.ssh(head, "stat -c '%a %U:%G' /etc/redis/redis.conf; ls /var/lib/redis/appendonlydir")
    assert conf.stdout.split()[:2] == ["640", "root:redis"], conf.stdout
    assert "appendonly.aof.manifest" in conf.stdout, conf.stdout
    cli = "REDISCLI_AUTH={} redis-cli -p 6390 --no-auth-warning {}"
    as_root = ray_cluster.ssh(head, cli.format(password, "--scan --pattern 'RAY*'"))
    assert f"RAY{ray_cluster.cloud.spec.name}@NODE" in as_root.stdout, as_root.stdout + as_root.stderr
    without = ray_cluster.ssh(head, "redis-cli -p 6390 ping")
    assert "NOAUTH" in without.stdout + without.stderr, without.stdout + without.stderr
    other = ray_cluster.ssh(
        head, "setpriv --reuid=nobody --regid=nogroup --clear-groups " + cli.format(password, "ping")
    )
    assert "PONG" not in other.stdout, "another local account reached the GCS store"


def test_killed_gcs_keeps_the_cluster_and_its_workers(
    ray_cluster: RayCluster, first_run: dict[str, Any], worker_api: ServeApi
) -> None:
    """kill -9 of the head's gcs_server: `ray start --block` exits, systemd restarts the head (KillMode=mixed:
    at once), the GCS reloads the cluster from Redis; the workers' raylets stay (same PIDs, same unit
    invocations) and the Jobs API still knows the first run's job. ~20-30 s."""
    pointer, model = pointer_and_model(ray_cluster, first_run, worker_api)
    workers, session = raylets(ray_cluster), ray_session(ray_cluster)
    head = ray_cluster.unit_invocation(ray_cluster.head, "ray-head")
    killed = ray_cluster.ssh(ray_cluster.head, "kill -9 $(pgrep -x gcs_server)")
    assert killed.returncode == 0, killed.stderr
    start = time.monotonic()
    wait_head_restarted(ray_cluster, head, 60)
    wait_healthy(ray_cluster, 90 - (time.monotonic() - start))
    print(f"\nGCS killed -> the same cluster whole again after {time.monotonic() - start:.1f} s")
    assert raylets(ray_cluster) == workers, "a worker's raylet was restarted: it left the cluster"
    assert ray_session(ray_cluster) == session, "the head started a new Ray session: a new cluster"
    jobs = ray_cluster.ssh(ray_cluster.head, RAY_CLIENT.format(f"{VENV}/bin/ray job list"))
    assert jobs.returncode == 0 and "SUCCEEDED" in jobs.stdout, jobs.stdout[-2000:] + jobs.stderr[-1000:]
    assert pointer_and_model(ray_cluster, first_run, worker_api) == (pointer, model)


def test_killed_gcs_mid_training_is_resubmitted_and_resumes_from_its_checkpoint(
    ray_cluster: RayCluster,
) -> None:
    """kill -9 of the GCS while train.yml trains zone 3 on a worker group, once Ray Train registered a
    checkpoint: the head restarts and its job's driver is lost with it; train.yml resubmits the job
    (rayops-train-<run>-r1, the same claim token), which continues the run and resumes Ray Train from the
    checkpoint; the run completes and promotes zone 3; the workers' raylets never restart; zone 1 is
    untouched. ~3 min."""
    before = zone1_versions(ray_cluster)
    workers = raylets(ray_cluster)
    run = train_zone3(ray_cluster, "chaos-gcs", num_boost_round=150)
    try:
        wait_for(
            "a registered checkpoint of chaos-gcs", registered_checkpoint(ray_cluster, "chaos-gcs"), 400, run
        )
        head = ray_cluster.unit_invocation(ray_cluster.head, "ray-head")
        killed = ray_cluster.ssh(ray_cluster.head, "kill -9 $(pgrep -x gcs_server)")
        assert killed.returncode == 0, killed.stderr
        killed_at = time.monotonic()
        wait_head_restarted(ray_cluster, head, 60)
        code, out = finish(run, 900)
        took = time.monotonic() - killed_at
    finally:
        if run.poll() is None:
            run.kill()
        ray_cluster.wait_alive(3, deadline_s=240)
    flat = " ".join(out.split())
    assert code == 0, out[-6000:]
    assert (
        "job rayops-train-chaos-gcs was lost with the Ray head; resubmitting it as rayops-train-chaos-gcs-r1"
        in flat
    )
    metrics = run_metrics("chaos-gcs")
    assert metrics["resubmitted"] is True
    assert metrics["resumed_from_round"], "the resubmitted run did not resume from the checkpoint"
    assert all(r % 10 == 0 and r > 0 for r in metrics["resumed_from_round"].values())
    assert (zone3_pointer(ray_cluster) or {}).get("run_id") == "chaos-gcs"  # completed: promoted legitimately
    assert raylets(ray_cluster) == workers, "a worker's raylet was restarted: it left the cluster"
    assert zone1_versions(ray_cluster) == before
    fit = metrics["timings_s"]["ray_train_fit"]
    print(
        f"\nGCS killed mid-training: train.yml resubmitted the lost job and the run completed {took:.0f} s "
        f"later, resumed {metrics['resumed_from_round']}; Ray Train fit {fit:.0f} s"
    )


def test_rebooted_head_machine_heals_without_ansible(
    ray_cluster: RayCluster, first_run: dict[str, Any], worker_api: ServeApi
) -> None:
    """The head machine powered off and on (like an EC2 stop/start): Redis, Ray (the same cluster), the Serve
    app on the head's proxy, Prometheus and MLflow come back by themselves; the workers keep their raylets
    (the head is back within their 120 s reconnect timeout). ~60-90 s."""
    pointer, model = pointer_and_model(ray_cluster, first_run, worker_api)
    workers, session = raylets(ray_cluster), ray_session(ray_cluster)
    head = ray_cluster.head
    ray_cluster.cloud.stop_machine(head)
    start = time.monotonic()
    try:
        status, _ = worker_api.call("/zone1/model")
        assert status == 200, "a worker's Serve proxy stopped answering while the head was off"
    finally:
        ray_cluster.cloud.start_machine(head)
    booted = time.monotonic() - start
    wait_healthy(ray_cluster, 240)
    ray_up = time.monotonic() - start
    token = ray_cluster.secret("serve_token")
    # The nodes have no curl: the distribution's python3 asks (a non-2xx answer or none exits non-zero).
    waiting = {
        "serve": http_get("http://127.0.0.1:8000/zone1/model", token),
        "prometheus": http_get("http://127.0.0.1:9090/-/ready"),
        "mlflow": http_get("http://127.0.0.1:5000/health"),
    }
    while waiting and time.monotonic() - start < 300:
        waiting = {name: cmd for name, cmd in waiting.items() if ray_cluster.ssh(head, cmd).returncode != 0}
        time.sleep(1)
    healthy = time.monotonic() - start
    print(
        f"\nhead machine rebooted: booted after {booted:.1f} s, Ray whole after {ray_up:.1f} s, "
        f"Serve on the head, Prometheus and MLflow answering after {healthy:.1f} s"
    )
    assert not waiting, f"not back 300 s after the reboot: {sorted(waiting)}"
    assert ray_session(ray_cluster) == session, "the rebooted head started a new Ray session: a new cluster"
    assert raylets(ray_cluster) == workers, "a worker's raylet was restarted during the head's reboot"
    assert pointer_and_model(ray_cluster, first_run, worker_api) == (pointer, model)


def test_head_with_too_little_free_disk_is_refused(ray_cluster: RayCluster) -> None:
    """The head's disk filled to the preflight bound: 2 GiB written with fallocate where Ray writes, and the
    bound (ray_service_min_free_disk_mb) set 1 GiB below the free space before the fill (the host's disk is
    shared with other clouds: filling all of it is not an option; the 1 GiB margins absorb their writes).
    Preflight refuses with its sentence; with the file gone the same bound passes. ~30-40 s."""
    head = ray_cluster.head
    free = ray_cluster.ssh(head, "df -P -m /var/lib/ray | tail -n 1 | awk '{print $4}'")
    assert free.returncode == 0, free.stderr
    bound = int(free.stdout) - 1024
    args = ("site.yml", "--tags", "preflight", "--limit", head, "-e", f"ray_service_min_free_disk_mb={bound}")
    fill = "/var/lib/ray/rayops-chaos-fill"
    try:
        filled = ray_cluster.ssh(head, f"fallocate -l 2G {fill} && sync")
        assert filled.returncode == 0, filled.stderr
        refused = ray_cluster.playbook(*args)
        flat = " ".join(refused.stdout.split())
        assert refused.returncode != 0, flat[-2000:]
        match = re.search(
            rf"{head} has (\d+) MiB free on (\S+) \(where Ray keeps its sessions, spilled objects and the "
            rf"GCS store\), less than ray_service_min_free_disk_mb \({bound}\): free disk space there or "
            r"give the node a larger disk, then run site.yml again\.",
            flat,
        )
        assert match, flat[-3000:]
        print(f"\npreflight refused the head: {match.group(1)} MiB free, bound {bound} MiB")
    finally:
        ray_cluster.ssh(head, f"rm -f {fill}")
    passed = ray_cluster.playbook(*args)
    assert passed.returncode == 0, passed.stdout[-3000:]
