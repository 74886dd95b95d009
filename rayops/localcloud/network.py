"""The host side of a cloud's network: its bridge, NAT and forward rules, and checks for a free subnet/port.

The rules carry the comment ``rayops-local:<name>`` and the bridge is ``rb-<name>``, so both are found
and removed by the cloud's name alone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.state import CloudSpec
from rayops.localcloud.system import run

BRIDGE_PREFIX = "rb-"


def host_ipv4() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(device, address/prefix) of every IPv4 address on this host."""
    lines = run(["ip", "-4", "-o", "addr", "show"]).splitlines()
    return [(parts[1], ipaddress.IPv4Interface(parts[3])) for parts in map(str.split, lines)]


def bridge_exists(bridge: str) -> bool:
    return Path(f"/sys/class/net/{bridge}").exists()


def bridge_addresses() -> dict[str, ipaddress.IPv4Interface]:
    """The address each ``rb-*`` bridge carries, by bridge name: proof of a cloud's subnet and gateway."""
    return {dev: cidr for dev, cidr in host_ipv4() if dev.startswith(BRIDGE_PREFIX)}


def bridge_gateway(bridge: str) -> str | None:
    """The address ``bridge`` carries (a cloud's gateway), or None when the bridge or its address is gone."""
    cidr = bridge_addresses().get(bridge)
    return str(cidr.ip) if cidr is not None else None


def bridge_names() -> list[str]:
    """The cloud names of the ``rb-<name>`` bridges on this host."""
    return [
        d.name[len(BRIDGE_PREFIX) :]
        for d in Path("/sys/class/net").glob(f"{BRIDGE_PREFIX}*")
        if (d / "bridge").is_dir()
    ]


def check_subnet_free(net: ipaddress.IPv4Network) -> None:
    for dev, cidr in host_ipv4():
        if cidr.network.overlaps(net):
            raise LocalCloudError(
                f"subnet {net} is already taken ({cidr} on {dev}): pick another, "
                f"e.g. `make local-up SUBNET=10.213.8.0/24`"
            )
    routes = run(["ip", "-4", "route", "show"])
    for line in routes.splitlines():
        dest = line.split()[0]
        if dest != "default" and ipaddress.IPv4Network(dest, strict=False).overlaps(net):
            raise LocalCloudError(
                f"subnet {net} overlaps the route {line.strip()!r}: pick another, "
                f"e.g. `make local-up SUBNET=10.213.8.0/24`"
            )


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections of an earlier run in TIME_WAIT are not "in use"; listeners are.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - probing only, closed at once
        except OSError as err:
            raise LocalCloudError(
                f"port {port} for the S3 endpoint is already in use: "
                f"pick another, e.g. `make local-up S3_PORT={port + 1}`"
            ) from err


def bridge_up(spec: CloudSpec) -> None:
    """The bridge with the gateway address, IP forwarding, NAT for the subnet, forwarding to and from it."""
    br = spec.bridge
    run(["ip", "link", "add", br, "type", "bridge"])
    run(["ip", "addr", "add", f"{spec.gateway}/{spec.network.prefixlen}", "dev", br])
    run(["ip", "link", "set", br, "up"])
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n", encoding="utf-8")
    comment = ["-m", "comment", "--comment", spec.nat_comment]
    nat = ["-s", spec.subnet, "!", "-o", br, "-j", "MASQUERADE"]
    run(["iptables", "-t", "nat", "-A", "POSTROUTING", *nat, *comment])
    run(["iptables", "-A", "FORWARD", "-i", br, "-j", "ACCEPT", *comment])
    run(["iptables", "-A", "FORWARD", "-o", br, "-j", "ACCEPT", *comment])


def bridge_down(spec: CloudSpec) -> None:
    """Remove the cloud's rules (found by their comment) and its bridge; nothing when they are gone."""
    for table, chain in (("nat", "POSTROUTING"), ("filter", "FORWARD")):
        for rule in _rules_with_comment(table, chain, spec.nat_comment):
            run(["iptables", "-t", table, "-D", *rule])
    if bridge_exists(spec.bridge):
        run(["ip", "link", "delete", spec.bridge])


def _rules_with_comment(table: str, chain: str, comment: str) -> Iterator[list[str]]:
    out = run(["iptables", "-t", table, "-S", chain])
    for line in out.splitlines():
        if f'--comment "{comment}"' in line or f"--comment {comment}" in line:
            args = line.split()
            if args and args[0] == "-A":
                yield [a.strip('"') for a in args[1:]]
