"""Filters for rayops playbooks and roles: logic that used to be written inline in Jinja.

Each filter is a plain function, tested in tests/roles/test_filters.py.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

_GLIBC = re.compile(r"^glibc 2\.([0-9]+)")


def requirement_lines(text: str) -> list[str]:
    """The requirements in a requirements file's text: comments and blank lines dropped, trimmed."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def ray_alive_nodes(response: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The ALIVE nodes in a reply of Ray's state API (``GET /api/v0/nodes``), or [] for no or a bad reply."""
    if not isinstance(response, Mapping):
        return []
    result = (response.get("data") or {}).get("result") or {}
    nodes = result.get("result") if isinstance(result, Mapping) else None
    return [dict(n) for n in nodes or [] if isinstance(n, Mapping) and n.get("state") == "ALIVE"]


def ray_cpus(nodes: Iterable[Mapping[str, Any]]) -> float:
    """The CPUs that ``nodes`` (from ray_alive_nodes) offer in total."""
    return float(sum((n.get("resources_total") or {}).get("CPU", 0) for n in nodes))


def oldest_glibc_minor(glibc_versions: Iterable[str]) -> int:
    """The minor version of the oldest C library among ``getconf GNU_LIBC_VERSION`` outputs ("glibc 2.36")."""
    minors = []
    for version in glibc_versions:
        match = _GLIBC.match(str(version).strip())
        if match is None:
            raise ValueError(f"not a `getconf GNU_LIBC_VERSION` output: {version!r}")
        minors.append(int(match.group(1)))
    if not minors:
        raise ValueError("no C library versions given")
    return min(minors)


def manylinux_platforms(glibc_minor: int, arch: str) -> list[str]:
    """``pip download --platform`` arguments for every manylinux tag a C library 2.<glibc_minor> runs."""
    return [f"--platform=manylinux_2_{minor}_{arch}" for minor in range(17, int(glibc_minor) + 1)] + [
        f"--platform=manylinux2014_{arch}"
    ]


def ssh_tunnel(host: Mapping[str, Any], ports: Iterable[int], default_user: str = "") -> str:
    """The ``ssh -N -L ...`` command forwarding ``ports`` on 127.0.0.1 to the same ports on the head.

    ``host`` is the head's hostvars: the key, port, common SSH arguments (jump host, pinned known hosts),
    user and address Ansible itself connects with, so the command works wherever the play did.
    """
    argv = ["ssh", "-N"]
    key = host.get("ansible_ssh_private_key_file") or ""
    if key:
        argv += ["-i", shlex.quote(str(key))]
    port = int(host.get("ansible_port") or 22)
    if port != 22:
        argv += ["-p", str(port)]
    common = str(host.get("ansible_ssh_common_args") or "").strip()
    if common:
        argv.append(common)  # already shell words, as Ansible passes them to ssh
    for forwarded in ports:
        argv += ["-L", f"{int(forwarded)}:127.0.0.1:{int(forwarded)}"]
    user = host.get("ansible_user") or default_user
    address = host.get("ansible_host") or host.get("inventory_hostname") or ""
    argv.append(f"{user}@{address}" if user else str(address))
    return " ".join(argv)


def serve_summary(smoke_json: str) -> list[str]:
    """`python -m rayops.serving smoke`'s JSON -> one line per served zone for serve.yml's output."""
    import json

    lines = []
    for app, zone in sorted(json.loads(smoke_json or "{}").items()):
        ms = zone.get("ms", {})
        timings = ", ".join(f"{route} {value:.0f} ms" for route, value in sorted(ms.items()))
        lines.append(
            f"/{app}: run {zone['run_id']}; its forecast for {zone['hour']} is {zone['prediction']:g} "
            f"and equals the predict of that hour's features (every route answered: {timings})"
        )
    return lines


def tunnel_lines(forwards: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per forwarded service: its local URL through the tunnel and how to log in.

    Each forward is ``{"name", "port", "path" (optional), "login"}``:
    "Ray dashboard: http://127.0.0.1:8265 - ...".
    """
    return [
        f"{f['name']}: http://127.0.0.1:{int(f['port'])}{f.get('path') or ''} - {f['login']}"
        for f in forwards
    ]


class FilterModule:
    """rayops filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "requirement_lines": requirement_lines,
            "ray_alive_nodes": ray_alive_nodes,
            "ray_cpus": ray_cpus,
            "oldest_glibc_minor": oldest_glibc_minor,
            "manylinux_platforms": manylinux_platforms,
            "ssh_tunnel": ssh_tunnel,
            "serve_summary": serve_summary,
            "tunnel_lines": tunnel_lines,
        }
