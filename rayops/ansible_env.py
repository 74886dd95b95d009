"""The environment for running this repository's Ansible commands from Python (tests, benchmarks).

The same as `make site`/`make train` give them: the repository's ansible.cfg wherever the caller was
started, the venv's tools first on PATH, and plain (uncoloured) output that can be searched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ansible_env(**overrides: str) -> dict[str, str]:
    """os.environ plus ANSIBLE_CONFIG, ANSIBLE_FORCE_COLOR=0 and the venv on PATH; then `overrides`."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        **overrides,
    }


def run_ansible(tool: str, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a venv Ansible tool (``ansible-playbook``, ...) in the repository with ansible_env(**env).

    Returns the finished process (text output captured, never raises on a non-zero exit).
    """
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=REPO,
        env=ansible_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
