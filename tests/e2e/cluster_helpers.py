"""The cluster the end-to-end tests run playbooks against."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rayops.localcloud.cloud import LocalCloud

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
