"""A whole rayops cluster on a local cloud of its own: machines up, site.yml applied, torn down after."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayops.localcloud.cloud import CloudSpec, LocalCloud

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Cluster:
    cloud: LocalCloud
    inventory: Path

    def playbook(self, playbook: str, *extra: str, timeout: int = 3600) -> subprocess.CompletedProcess[str]:
        """Run a playbook from the repo root as a user would, against this cluster."""
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_FORCE_COLOR": "0",
        }
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), playbook, *extra],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        # Keep the play's output in the test log: it is what a user would read.
        sys.stdout.write(proc.stdout[-6000:])
        return proc


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("e2e") / "state"
    cloud = LocalCloud(
        CloudSpec(name="re2e", workers=2, subnet="10.213.60.0/24", s3_port=5660, state_dir=str(state))
    )
    try:
        cloud.up()
        inventory = state / "cluster.pulumi_stack.yml"
        inventory.write_text(f"plugin: pulumi_stack\noutputs_file: {cloud.outputs_path.resolve()}\n")
        cluster = Cluster(cloud, inventory)
        site = cluster.playbook("site.yml")
        assert site.returncode == 0, f"site.yml failed:\n{site.stdout[-4000:]}\n{site.stderr[-2000:]}"
        yield cluster
    finally:
        cloud.down()
