"""Finding clouds on this host by what they leave behind, without their state files.

A cloud leaves its folder (``/var/lib/rayops/clouds/<name>``), its bridge ``rb-<name>`` and its nspawn
launchers. Only the bridge proves a subnet: a cloud whose bridge is gone has no known subnet, and
nothing is matched by an assumed one (see ``LocalCloud.down``).
"""

from __future__ import annotations

from rayops.localcloud import machines, network
from rayops.localcloud.state import NAME_RE, RUNTIME_ROOT, CloudSpec


def local_clouds() -> dict[str, str | None]:
    """Every local cloud on this host, by name: the subnet its bridge carries, or None without a bridge."""
    names = set(network.bridge_names())
    clouds_dir = RUNTIME_ROOT / "clouds"
    if clouds_dir.is_dir():
        names |= {d.name for d in clouds_dir.iterdir() if d.is_dir()}
    addresses = network.bridge_addresses()
    return {
        name: str(addresses[f"rb-{name}"].network) if f"rb-{name}" in addresses else None
        for name in sorted(names)
        if NAME_RE.match(name)
    }


def leftovers(spec: CloudSpec) -> list[str]:
    """What an earlier run of this cloud left on the host: its folder, its bridge, running machines."""
    found = []
    if spec.runtime_dir.exists():
        found.append(f"folder {spec.runtime_dir}")
    if network.bridge_exists(spec.bridge):
        found.append(f"bridge {spec.bridge}")
    if machines.launcher_pids(spec):
        found.append("running nspawn machines")
    return found
