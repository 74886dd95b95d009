"""Helpers for the pulumi_stack inventory plugin tests: the real plugin, a real InventoryData."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from rayops.ansible_env import REPO

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PLUGIN_DIR = REPO / "plugins" / "inventory"
# Run every Ansible command against the repository's own ansible.cfg, wherever pytest was started.
os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))

from ansible.inventory.data import InventoryData  # noqa: E402  (after ANSIBLE_CONFIG is set)
from ansible.parsing.dataloader import DataLoader  # noqa: E402
from ansible.plugins.loader import inventory_loader  # noqa: E402

inventory_loader.add_directory(str(PLUGIN_DIR))


def host_public_key() -> str:
    """A new ed25519 public key as a contract node's ``ssh_host_key`` ("ssh-ed25519 BASE64")."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def new_plugin() -> Any:
    """A fresh instance of the plugin, loaded the way ansible-inventory loads it."""
    plugin = inventory_loader.get("pulumi_stack")
    assert plugin is not None, f"the pulumi_stack plugin was not found in {PLUGIN_DIR}"
    return plugin


def plugin_module() -> ModuleType:
    """The plugin's module, for its pure helpers."""
    return sys.modules[type(new_plugin()).__module__]


def write_config(folder: Path, name: str = "cluster.pulumi_stack.yml", **options: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump({"plugin": "pulumi_stack", **options}), encoding="utf-8")
    return path


def write_outputs(folder: Path, outputs: Any, name: str = "outputs.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(outputs), encoding="utf-8")
    return path


def parse(config: Path, cache: bool = True) -> InventoryData:
    """Parse ``config`` like ansible's InventoryManager does, into a new InventoryData."""
    inventory = InventoryData()
    plugin = new_plugin()
    assert plugin.verify_file(str(config))
    plugin.parse(inventory, DataLoader(), str(config), cache=cache)
    if hasattr(plugin, "_cache"):
        plugin.update_cache_if_changed()
    return inventory


def hostvars(inventory: InventoryData, name: str) -> dict[str, Any]:
    host = inventory.get_host(name)
    assert host is not None, f"host {name} is not in the inventory"
    # InventoryData itself adds inventory_file/inventory_dir; the rest comes from the plugin
    return {k: v for k, v in host.vars.items() if k not in ("inventory_file", "inventory_dir")}


def group_hosts(inventory: InventoryData, group: str) -> list[str]:
    return sorted(h.name for h in inventory.groups[group].hosts)


def calls_of(calls: Path) -> list[dict[str, Any]]:
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()]


def ssh_config(args: list[str]) -> dict[str, str]:
    """What ``ssh -G`` (no connection made, no user config read) resolves for these arguments."""
    ssh = shutil.which("ssh")
    assert ssh is not None, "the ssh client (apt: openssh-client) is needed, as for Ansible itself"
    done = subprocess.run(
        [ssh, "-G", "-F", "/dev/null", *args], capture_output=True, text=True, check=True, timeout=30
    )
    resolved: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, value)
    return resolved
