"""The ray_node profiles' lock files agree with the profiles' pins (no network: files only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rayops.ansible_env import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]+\])?==([A-Za-z0-9.+!_-]+)$")
DEFAULTS = yaml.safe_load((REPO / "roles/ray_node/defaults/main.yml").read_text())


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        found[normalize(match[1])] = match[3]
    return found


def pin_file(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return pins([line for line in lines if line])


def profile_pins(profile: str) -> dict[str, str]:
    if profile == "py39":
        top = DEFAULTS["ray_node_py39_requirements"]
    else:
        top = [f"{n}=={v}" for n, v in pin_file(REPO / "requirements-cluster.txt").items()]
    return pins(top + DEFAULTS["ray_node_head_requirements"][profile])


@pytest.mark.parametrize(
    ("profile", "lock", "ray", "numpy"),
    [
        # Ray 2.51.2 is the last Ray with Python 3.9 wheels; numpy 2.0.x the last numpy for 3.9.
        ("py39", "constraints-cluster-py39.txt", "2.51.2", "2.0."),
        # numpy 2.5 needs Python 3.12: the default lock is resolved for 3.11, Debian 12's python3.
        ("default", "constraints-cluster.txt", "2.60.0", "2.4."),
    ],
)
def test_lock_pins_every_requirement_of_its_profile_at_the_same_version(
    profile: str, lock: str, ray: str, numpy: str
) -> None:
    constraints = pin_file(REPO / lock)
    assert len(constraints) > 100  # the whole dependency tree, not just the top level
    for name, version in profile_pins(profile).items():
        got = constraints.get(name)
        assert got == version, f"{lock}: {name} {version} locked as {got}: regenerate it (see its header)"
    assert constraints["ray"] == ray
    assert constraints["numpy"].startswith(numpy)


def test_role_defaults_name_both_locks() -> None:
    assert DEFAULTS["ray_node_constraints_file"].endswith("/constraints-cluster.txt")
    assert DEFAULTS["ray_node_py39_constraints_file"].endswith("/constraints-cluster-py39.txt")


def test_controller_and_default_nodes_share_the_job_pins() -> None:
    """The driver-side workflow and the nodes must agree (same Ray, same pickled library versions)."""
    controller = pin_file(REPO / "requirements.txt")
    nodes = pin_file(REPO / "requirements-cluster.txt")
    for name, version in nodes.items():
        got = controller.get(name)
        assert got == version, f"requirements.txt pins {name}=={got}, the nodes {version}"


def test_mlflow_lock_pins_the_servers_requirements_and_matches_the_client() -> None:
    """The tracking server's lock (roles/mlflow) holds its pins, and the same MLflow as the jobs' client."""
    lock = pin_file(REPO / "constraints-mlflow.txt")
    assert len(lock) > 50 and "mlflow" in lock  # the whole server tree, not the skinny client
    for name, version in pin_file(REPO / "requirements-mlflow.txt").items():
        assert lock.get(name) == version, f"constraints-mlflow.txt: {name} is {lock.get(name)}, not {version}"
    client = pin_file(REPO / "requirements-cluster.txt")["mlflow-skinny"]
    assert lock["mlflow"] == lock["mlflow-skinny"] == client
    assert pin_file(REPO / "constraints-cluster.txt")["mlflow-skinny"] == client
