"""The host firewall (roles/firewall) on the session cluster: members reach every port, the controller SSH.

The controller (this host, the machines' gateway) is not a member, so Ray's GCS and dashboard ports and any
other listener are dropped for it, while a worker reaches the same listeners; the table is the one the role
wrote on every node, its drop counter counts the controller's attempt, and `--tags firewall` puts a table that
another tool deleted back and takes it away with the switch off (then on again). Cost on the session cluster:
~90 s on a loaded host (three `site.yml --tags firewall` runs on one worker, ~20 s each at load 10 on two
cores; 3 s for each dropped connect).
"""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
from cluster_helpers import DASHBOARD_PORT, RayCluster, recap

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]

GCS_PORT = 6379
RAYLET_PORT = 6380  # rayops_node_manager_port: every node's raylet, on its private IP
CONNECT_TIMEOUT_S = 3.0


def _ip(cluster: RayCluster, machine: str) -> str:
    return cluster.cloud.machine(machine).ip


def _controller_connects(ip: str, port: int) -> str:
    """'open', 'refused' or 'dropped' (no answer within the timeout) for a TCP connect from this host."""
    with socket.socket() as s:
        s.settimeout(CONNECT_TIMEOUT_S)
        try:
            s.connect((ip, port))
        except TimeoutError:
            return "dropped"
        except ConnectionRefusedError:
            return "refused"
        return "open"


def _member_connects(cluster: RayCluster, member: str, ip: str, port: int) -> bool:
    probe = f"timeout 5 bash -c '(exec 3<>/dev/tcp/{ip}/{port})' && echo OPEN"
    return "OPEN" in cluster.ssh(member, probe).stdout


def _dropped_packets(cluster: RayCluster, machine: str) -> int:
    out = cluster.ssh(machine, "nft list chain inet rayops input")
    assert out.returncode == 0, out.stderr
    match = re.search(r'counter packets (\d+) bytes \d+ comment "dropped: not a member', out.stdout)
    assert match, out.stdout
    return int(match.group(1))


def test_every_node_runs_the_roles_table_with_the_members(ray_cluster: RayCluster) -> None:
    members = sorted(_ip(ray_cluster, m) for m in [ray_cluster.head, *ray_cluster.workers])
    for machine in [ray_cluster.head, *ray_cluster.workers]:
        unit = ray_cluster.ssh(
            machine, "systemctl is-enabled rayops-firewall; systemctl is-active rayops-firewall"
        )
        assert unit.stdout.split() == ["enabled", "active"], (machine, unit.stdout, unit.stderr)
        table = ray_cluster.ssh(machine, "nft -j list set inet rayops members")
        assert table.returncode == 0, table.stderr
        assert sorted(re.findall(r'"(\d+\.\d+\.\d+\.\d+)"', table.stdout)) == members, table.stdout
        policy = ray_cluster.ssh(machine, "nft list chain inet rayops input").stdout
        assert "hook input priority filter; policy drop;" in policy, policy


def test_the_controller_cannot_reach_rays_gcs_and_dashboard_but_a_worker_can(ray_cluster: RayCluster) -> None:
    head_ip = _ip(ray_cluster, ray_cluster.head)
    worker = ray_cluster.workers[0]
    # The GCS listens on the head's private IP and serves the workers: a member reaches it ...
    assert _member_connects(ray_cluster, worker, head_ip, GCS_PORT)
    before = _dropped_packets(ray_cluster, ray_cluster.head)
    # ... the controller does not (dropped by the head's table: its counter moves), nor the dashboard.
    # Dropped, not refused: a refusal (RST) would mean the SYN reached the node's TCP stack, past the table.
    assert _controller_connects(head_ip, GCS_PORT) == "dropped"
    assert _controller_connects(head_ip, DASHBOARD_PORT) == "dropped"
    assert _dropped_packets(ray_cluster, ray_cluster.head) > before
    # SSH stays open to everybody.
    assert _controller_connects(head_ip, 22) == "open"


def test_any_listener_is_open_to_members_and_closed_to_the_controller(ray_cluster: RayCluster) -> None:
    """A port nobody planned for (as Serve's 8000 or a node exporter's 9100 would be): members only."""
    head_ip = _ip(ray_cluster, ray_cluster.head)
    listener = (
        "import socket, sys\n"
        f"s = socket.socket(); s.bind(('{head_ip}', 0)); s.listen(8)\n"
        "print(s.getsockname()[1], flush=True)\n"
        "s.settimeout(40)\n"
        "try:\n"
        "    while True:\n"
        "        s.accept()[0].close()\n"
        "except OSError:\n"
        "    pass\n"
    )
    argv = ray_cluster.cloud.ssh_command(
        ray_cluster.cloud.machine(ray_cluster.head), "timeout", "45", "python3", "-c", f'"{listener}"'
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for worker in ray_cluster.workers:
            assert _member_connects(ray_cluster, worker, head_ip, port), worker
        assert _controller_connects(head_ip, port) == "dropped"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_firewall_tags_restore_a_deleted_table_and_the_switch_removes_it(ray_cluster: RayCluster) -> None:
    worker = ray_cluster.workers[-1]
    worker_ip = _ip(ray_cluster, worker)

    def firewall_run(*extra: str) -> dict[str, int]:
        run = ray_cluster.playbook("site.yml", "--tags", "firewall", "--limit", worker, *extra)
        assert run.returncode == 0, run.stdout[-3000:]
        return recap(run.stdout)[worker]

    # Another tool deleted the table: the unit still says active; the role loads the rules again.
    assert ray_cluster.ssh(worker, "nft delete table inet rayops").returncode == 0
    assert _controller_connects(worker_ip, RAYLET_PORT) == "open"  # the raylet's port, open without the table
    assert firewall_run()["changed"] == 1
    assert _controller_connects(worker_ip, RAYLET_PORT) == "dropped"
    try:
        # The switch off: no table, no unit, no rules file; the raylet answers the controller again.
        firewall_run("-e", "firewall_enabled=false")
        gone = ray_cluster.ssh(
            worker,
            "nft list table inet rayops; ls /etc/systemd/system/rayops-firewall.service /etc/nftables.d",
        )
        assert "No such file or directory" in gone.stderr and "rayops.nft" not in gone.stdout, gone
        assert _controller_connects(worker_ip, RAYLET_PORT) == "open"
    finally:
        firewall_run()
    assert _controller_connects(worker_ip, RAYLET_PORT) == "dropped"
