"""Last on the session cluster: the head's Ray restarts (a new, empty Ray cluster) and the served API answers
again with the same model, without Ansible (rayops-serve.service re-applies serve.yml's config). ~2-3 min."""

from __future__ import annotations

import time

import pytest
from cluster_helpers import RayCluster, ServeApi, one_row

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


def test_a_head_restart_heals_without_ansible(ray_cluster: RayCluster, serve_api: ServeApi) -> None:
    row = one_row(serve_api)
    status, before = serve_api.call("/zone1/model")
    assert status == 200, before
    out = ray_cluster.ssh(ray_cluster.head, "systemctl restart ray-head", timeout=300)
    assert out.returncode == 0, out.stderr
    start = time.monotonic()
    healed = None
    while time.monotonic() - start < 300:
        status, _ = serve_api.call("/zone1/predict", {"instances": [row]})
        if status == 200:
            healed = time.monotonic() - start
            break
        time.sleep(1)
    print(f"head restart: the API answered again after {healed} s")
    assert healed is not None, "the API did not answer within 300 s of the head's restart"
    status, info = serve_api.call("/zone1/model")
    assert status == 200 and info["run_id"] == before["run_id"]
    ray_cluster.wait_alive(3, 180)  # the tests after this one need the whole cluster
