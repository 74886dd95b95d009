"""rayops.ansible_env: what the tests and benchmarks run Ansible with."""

from __future__ import annotations

import configparser
from pathlib import Path

from rayops.ansible_env import BIN, ansible_env


def test_points_at_the_repository_config_and_the_venv_tools() -> None:
    env = ansible_env()
    cfg = Path(env["ANSIBLE_CONFIG"])
    parser = configparser.ConfigParser()
    assert parser.read(cfg), f"{cfg} is not readable"
    # The repository's ansible.cfg is the one that finds our roles and the inventory plugin.
    assert "roles" in parser["defaults"]["roles_path"]
    assert env["PATH"].split(":")[0] == str(BIN)
    assert (BIN / "ansible-playbook").exists()
    assert env["ANSIBLE_FORCE_COLOR"] == "0"


def test_overrides_win() -> None:
    env = ansible_env(ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_FORCE_COLOR="1")
    assert env["ANSIBLE_CACHE_PLUGIN"] == "memory" and env["ANSIBLE_FORCE_COLOR"] == "1"
