"""Helpers for the local cloud's tests: what a cloud leaves on the host, and stand-in processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayops.localcloud import system
from rayops.localcloud.cloud import NSPAWN_PROPAGATE, CloudSpec

CLI = [sys.executable, "-m", "rayops.localcloud"]
# The local cloud's host side (bridge, iptables, /proc of every process) needs root, not machines.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bridges, iptables, other processes)")


def spec_for(tmp_path: Path, name: str, subnet: str, port: int, workers: int = 1) -> CloudSpec:
    return CloudSpec(name=name, workers=workers, subnet=subnet, s3_port=port, state_dir=str(tmp_path / "st"))


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, check=False, timeout=120)


def leftovers(spec: CloudSpec) -> list[str]:
    """Everything of a cloud that could outlive `down`: processes, mounts, links, rules, folders."""
    found = []
    if Path(f"/sys/class/net/{spec.bridge}").exists():
        found.append(f"bridge {spec.bridge}")
    mounts = Path("/proc/self/mounts").read_text()
    if f"/clouds/{spec.name}/" in mounts:
        found.append("overlay mount")
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        if spec.nat_comment in rules:
            found.append(f"iptables {table} rule")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if stat != "Z" and (f"--machine={spec.name}-" in text or f"-p {spec.s3_port}" in text):
            found.append(f"process {pid}: {text[:80]}")
    for root in ("/sys/fs/cgroup/systemd/rayops", "/sys/fs/cgroup/unified/rayops"):
        if Path(root, spec.name).exists():
            found.append(f"cgroup {root}/{spec.name}")
    if spec.runtime_dir.exists():
        found.append(f"folder {spec.runtime_dir}")
    found += [f"nspawn folder {p}" for p in sorted(NSPAWN_PROPAGATE.glob(f"{spec.name}-*"))]
    if spec.state_path.exists():
        found.append(f"state dir {spec.state_path}")
    return found


def stand_in(argv0: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A sleeping process whose argv is ``argv0 -c <sleep> *args`` (what `down` matches on), in ``env``.

    It is a Python that dies on SIGTERM like the real moto_server or systemd-nspawn would; it returns
    once the process shows that argv in /proc.
    """
    proc = subprocess.Popen(
        [
            "bash",
            "-c",
            'exec -a "$0" "$@"',
            argv0,
            sys.executable,
            "-c",
            "import time; time.sleep(300)",
            *args,
        ],
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 10
    while system.cmdline(proc.pid)[:1] != [argv0]:
        assert time.monotonic() < deadline, f"stand-in {argv0} did not start"
        time.sleep(0.01)
    return proc


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None and system.pid_alive(proc.pid)
