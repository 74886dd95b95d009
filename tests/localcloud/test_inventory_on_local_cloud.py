"""The inventory plugin against a running local cloud: real hosts, real SSH, through ansible itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rayops.ansible_env import BIN, REPO, ansible_env
from rayops.localcloud.cloud import LocalCloud

pytestmark = pytest.mark.localcloud


def ansible(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ansible_env(),
        timeout=180,
        check=False,
    )


@pytest.fixture
def inventory(local_cloud: LocalCloud, tmp_path: Path) -> Path:
    config = tmp_path / "cloud.pulumi_stack.yml"
    config.write_text(f"plugin: pulumi_stack\noutputs_file: {local_cloud.outputs_path.resolve()}\n")
    return config


def test_graph_lists_head_and_workers(inventory: Path) -> None:
    proc = ansible("ansible-inventory", "-i", str(inventory), "--graph")
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip(" |-") for line in proc.stdout.splitlines()]
    assert lines.index("@ray_cluster:") < lines.index("@ray_head:") < lines.index("rtest-head")
    assert lines.index("@ray_workers:") < lines.index("rtest-worker-1") < lines.index("rtest-worker-2")


def test_ping_reaches_every_node_over_ssh_and_become_works(inventory: Path) -> None:
    proc = ansible(
        "ansible", "all", "-i", str(inventory), "-b", "-m", "ansible.builtin.command", "-a", "id -u", "-o"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "CHANGED" in line]
    assert sorted(line.split()[0] for line in lines) == ["rtest-head", "rtest-worker-1", "rtest-worker-2"]
    assert all(line.rstrip().endswith("0") for line in lines)
    ping = ansible("ansible", "all", "-i", str(inventory), "-m", "ansible.builtin.ping")
    assert ping.returncode == 0 and ping.stdout.count("ping: pong") == 3  # yaml result format (ansible.cfg)


def test_hostvars_carry_the_cluster_facts(inventory: Path, local_cloud: LocalCloud) -> None:
    proc = ansible("ansible-inventory", "-i", str(inventory), "--host", "rtest-worker-2")
    hv = json.loads(proc.stdout)
    assert hv["ansible_host"] == hv["ray_node_ip"] == "10.213.50.12"
    assert hv["ray_head_ip"] == "10.213.50.10"
    assert hv["s3_endpoint_url"] == local_cloud.spec.s3_endpoint_url
    assert hv["rayops_buckets"] == local_cloud.spec.buckets()
    assert hv["ansible_ssh_private_key_file"] == str(local_cloud.key_path.resolve())
