"""Thin helpers around the host tools the local cloud drives (ip, iptables, mount, ssh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence

from rayops.localcloud.errors import LocalCloudError

REQUIRED_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "iptables": "iptables",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


def run(cmd: Sequence[str], *, check: bool = True, input_text: str | None = None) -> str:
    """Run a command, return its stdout; raise LocalCloudError with its stderr when it fails."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, input=input_text, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LocalCloudError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {detail[-1] if detail else 'no output'}"
        )
    return proc.stdout


def preflight() -> None:
    """Fail with one sentence when the host cannot run the local cloud."""
    if os.geteuid() != 0:
        raise LocalCloudError(
            "the local cloud needs root (it creates a bridge, overlay mounts and nspawn machines): "
            "run it as root, e.g. `sudo make local-up`"
        )
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LocalCloudError(
            f"missing host packages {', '.join(missing)}: run `make setup` "
            f"(or `apt-get install -y {' '.join(missing)}`)"
        )
    if not os.path.isdir("/sys/fs/cgroup/systemd"):
        raise LocalCloudError(
            "no /sys/fs/cgroup/systemd hierarchy: the local cloud needs the cgroup v1 'name=systemd' "
            "tree that nspawn machines run in"
        )


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: Iterable[int], timeout: float, interval: float = 0.1) -> bool:
    """Wait up to ``timeout`` seconds until none of ``pids`` is alive; True when they are all gone."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def cmdline(pid: int) -> list[str]:
    """The argv of a process, or [] when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError):
        return []


def environ(pid: int) -> dict[str, str]:
    """The environment a process was started with, or {} when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            entries = [e.decode(errors="replace") for e in fh.read().split(b"\0") if b"=" in e]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return dict(e.split("=", 1) for e in entries)


def find_pids(predicate: Callable[[list[str]], bool]) -> list[int]:
    """Pids whose argv satisfies predicate(argv)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and predicate(cmdline(int(entry))):
            pids.append(int(entry))
    return pids
