"""The environment for running this repository's Ansible commands from Python (tests, benchmarks).

The same as `make site`/`make train` give them: the repository's ansible.cfg wherever the caller was
started, the venv's tools first on PATH, and plain (uncoloured) output that can be searched.
"""

from __future__ import annotations

import os
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
