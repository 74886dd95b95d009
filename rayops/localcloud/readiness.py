"""When a machine counts as up: its launcher alive and systemd inside it `running`, asked over real SSH.

The controller's ssh uses the cloud's key and exact known_hosts (never trust on first use), so a
machine that answers here answers Ansible too.
"""

from __future__ import annotations

import subprocess
import time

from rayops.localcloud import image, machines
from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.state import CloudSpec, Machine

BOOT_TIMEOUT_S = 90.0


def ssh_command(spec: CloudSpec, m: Machine, *remote: str, timeout: int = 3) -> list[str]:
    """The ssh argv that reaches machine ``m`` as the login user (exact known_hosts, our key)."""
    return [
        "ssh",
        "-i",
        str(spec.key_path),
        "-o",
        f"UserKnownHostsFile={spec.known_hosts_path}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={timeout}",
        "-o",
        "LogLevel=ERROR",
        f"{image.SSH_USER}@{m.ip}",
        *remote,
    ]


def system_state(spec: CloudSpec, m: Machine) -> str:
    """`systemctl is-system-running` of a machine now, or `unreachable`."""
    proc = subprocess.run(
        ssh_command(spec, m, "systemctl", "is-system-running"), capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "unreachable"


def wait_ready(spec: CloudSpec, m: Machine, launcher_pid: int) -> None:
    """Wait until systemd in ``m`` is `running`; one clear error if it exits, degrades or times out."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if not machines.is_launcher(launcher_pid, m.name):
            tail = (spec.logs_dir / f"{m.name}.log").read_text(errors="replace")
            raise LocalCloudError(
                f"machine {m.name} exited while booting: {tail.strip().splitlines()[-1:] or 'no log'}"
            )
        proc = subprocess.run(
            ssh_command(spec, m, "systemctl", "is-system-running", "--wait"),
            capture_output=True,
            text=True,
            timeout=BOOT_TIMEOUT_S,
            check=False,
        )
        last = (proc.stdout.strip() or proc.stderr.strip() or "no answer").splitlines()[-1]
        if last == "running":
            return
        if last == "degraded":
            failed = subprocess.run(
                ssh_command(spec, m, "systemctl", "--failed", "--plain", "--no-legend"),
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            raise LocalCloudError(f"machine {m.name} booted degraded; failed units: {failed}")
        time.sleep(0.5)
    raise LocalCloudError(f"machine {m.name} did not come up within {BOOT_TIMEOUT_S:.0f} s (last: {last})")
