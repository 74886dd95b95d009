"""The py39 profile's constraints file agrees with the profile's pins (no network: files only)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]+\])?==([A-Za-z0-9.+!_-]+)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        found[normalize(match[1])] = match[3]
    return found


def test_constraints_pin_every_py39_requirement_at_the_same_version() -> None:
    defaults = yaml.safe_load((REPO / "roles/ray_node/defaults/main.yml").read_text())
    wanted = pins(defaults["ray_node_py39_requirements"] + defaults["ray_node_head_requirements"]["py39"])
    text = (REPO / "constraints-cluster-py39.txt").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    constraints = pins([line for line in lines if line])
    assert len(constraints) > 100  # the whole dependency tree, not just the top level
    for name, version in wanted.items():
        got = constraints.get(name)
        assert got == version, f"{name}: pinned {version}, constrained {got}"
    # Ray 2.51.2 is the last Ray with Python 3.9 wheels; numpy 2.0.x the last numpy for 3.9.
    assert constraints["ray"] == "2.51.2"
    assert constraints["numpy"].startswith("2.0.")
