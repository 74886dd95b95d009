"""Molecule's whole-cluster scenario, on this session's cluster instead of a second one of its own.

The session converges with that scenario's group_vars (a venv and a dashboard port that are not the defaults,
cluster_helpers.SESSION_GROUP_VARS): site.yml is its converge, test_faults' no-change site.yml its
idempotence, this module its verify (molecule/cluster/verify_nodes.yml, as `molecule test -s cluster` runs it)
and every train.yml of the session its train.yml on the moved Jobs API. `make test` therefore boots one
3-node cluster, not two (the scenario cost 889 s of CI2's Molecule lane); `make molecule` still runs the
scenario alone.
"""

from __future__ import annotations

import pytest
from cluster_helpers import DASHBOARD_PORT, DEFAULT_DASHBOARD_PORT, DEFAULT_VENV, VENV, RayCluster, recap

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


def test_the_session_runs_on_the_scenarios_venv_and_dashboard_port(ray_cluster: RayCluster) -> None:
    """The group_vars took effect everywhere, and no role installed anything at the default path or port."""
    assert (VENV, DASHBOARD_PORT) != (DEFAULT_VENV, DEFAULT_DASHBOARD_PORT)
    for node in [ray_cluster.head, *ray_cluster.workers]:
        unit = "ray-head" if node == ray_cluster.head else "ray-worker"
        out = ray_cluster.ssh(
            node,
            f"systemctl show --value --property=ExecStart {unit}; echo ---; ss -ltnH; echo ---; "
            f"test -e {DEFAULT_VENV} && echo DEFAULT-VENV-EXISTS; true",
        )
        assert out.returncode == 0, out.stderr
        exec_start, listeners, leftovers = out.stdout.split("---\n")
        assert f"{VENV}/bin/" in exec_start, f"{node}: {exec_start}"
        local = [line.split()[3] for line in listeners.splitlines() if line.strip()]
        assert not [a for a in local if a.endswith(f":{DEFAULT_DASHBOARD_PORT}")], f"{node}: {local}"
        assert (f"127.0.0.1:{DASHBOARD_PORT}" in local) == (node == ray_cluster.head), f"{node}: {local}"
        assert "DEFAULT-VENV-EXISTS" not in leftovers, f"{node}: something installed {DEFAULT_VENV}"


def test_the_cluster_scenarios_verify_passes_on_the_session_cluster(ray_cluster: RayCluster) -> None:
    """Same Ray and Python and the controller's token on every node, units active with LimitNOFILE and
    hardened, the venv read-only for the Ray user, listeners where intended, every node alive from a driver
    and from the notebook's kernel: the scenario's own playbook, against this cluster's inventory."""
    proc = ray_cluster.playbook("molecule/cluster/verify_nodes.yml")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    counters = recap(proc.stdout)
    assert set(counters) == {ray_cluster.head, *ray_cluster.workers}, counters
    assert all(c == {"changed": 0, "unreachable": 0, "failed": 0} for c in counters.values()), counters
