"""The cached Debian root filesystem that every local machine boots from (read-only lower layer)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.system import run

# The Debian releases a machine can run (`rayops-local up --release`), each with its own cached image.
# bookworm is the default (Python 3.11); bullseye's python3 is 3.9, for the py39 profile (Ray 2.51.2).
RELEASES = {"bookworm": "Debian 12, Python 3.11", "bullseye": "Debian 11, Python 3.9"}
DEFAULT_RELEASE = "bookworm"
# What an EC2 node of ours has that minbase lacks: systemd as PID 1, sshd, Python for Ansible,
# python3-venv for the Ray venv, sudo for become, iproute2 for networking, ca-certificates for TLS.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-apt",
    "iproute2",
    "iputils-ping",
    "procps",
    "sudo",
    "ca-certificates",
)
SSH_USER = "rayops"
# Files whose absence means the cached image is corrupt or half-built.
REQUIRED_FILES = (
    "usr/lib/systemd/systemd",
    "usr/sbin/sshd",
    "usr/bin/python3",
    "usr/bin/sudo",
    f"home/{SSH_USER}",
    "etc/sudoers.d/90-rayops",
)
_IMAGE_RECIPE_VERSION = "1"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def check_release(release: str) -> None:
    """One sentence naming the supported releases when ``release`` is not one of them."""
    if release not in RELEASES:
        supported = ", ".join(f"{name} ({what})" for name, what in RELEASES.items())
        raise LocalCloudError(
            f"release {release!r} is not supported: use one of {supported}, e.g. --release {DEFAULT_RELEASE}"
        )


def image_id(release: str = DEFAULT_RELEASE) -> str:
    """A name that changes whenever what goes into the image changes (one per release).

    The default release's id is the one it always had, so images cached before releases existed stay valid.
    """
    check_release(release)
    digest = hashlib.sha256(f"{release}|{_IMAGE_RECIPE_VERSION}|{','.join(PACKAGES)}".encode()).hexdigest()
    return f"{release}-{digest[:10]}"


def host_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The Debian mirror the host itself uses (the one that is reachable from here)."""
    try:
        text = sources.read_text(encoding="utf-8")
    except OSError:
        return DEFAULT_MIRROR
    match = re.search(r"^URIs:\s*(\S+)", text, re.MULTILINE)
    return match.group(1) if match else DEFAULT_MIRROR


def missing_files(root: Path) -> list[str]:
    """Required files that a rootfs lacks (empty when the image is complete)."""
    return [f for f in REQUIRED_FILES if not (root / f).exists()]


def ensure_image(cache_dir: Path, log: Callable[[str], None] = print, release: str = DEFAULT_RELEASE) -> Path:
    """Return the path of a complete cached image of ``release``, building (or rebuilding) it when needed."""
    root = cache_dir / image_id(release)
    marker = root / ".rayops-image"
    if root.exists():
        lacking = missing_files(root)
        if marker.exists() and not lacking:
            return root
        reason = f"it lacks {', '.join(lacking)}" if lacking else "it was never finished"
        log(f"cached image {root} is corrupt ({reason}); rebuilding it")
        shutil.rmtree(root)
    build_image(root, log, release)
    return root


def build_image(root: Path, log: Callable[[str], None] = print, release: str = DEFAULT_RELEASE) -> None:
    """debootstrap the image into a temporary folder, configure it, then move it into place."""
    tmp = root.with_name(root.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    mirror = host_mirror()
    log(f"building the machine image {root.name} with debootstrap from {mirror} (about a minute, once)")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                release,
                str(tmp),
                mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise LocalCloudError(
                f"debootstrap of {release} from {mirror} failed: {' | '.join(tail)}; "
                "check that the mirror is reachable (apt-get update works) and retry"
            )
        _configure(tmp)
        lacking = missing_files(tmp)
        if lacking:
            raise LocalCloudError(f"the freshly built image lacks {', '.join(lacking)}; this is a bug")
        (tmp / ".rayops-image").write_text(image_id(release) + "\n", encoding="utf-8")
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"image ready in {time.monotonic() - start:.0f} s")


def _configure(root: Path) -> None:
    """Make the rootfs boot like a fresh EC2 node: a sudo user, networkd, no identity baked in."""
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "--uid", "1000", SSH_USER])
    (root / "etc/sudoers.d/90-rayops").write_text(f"{SSH_USER} ALL=(ALL) NOPASSWD:ALL\n", encoding="utf-8")
    (root / "etc/sudoers.d/90-rayops").chmod(0o440)
    # Identity is per machine: empty machine-id (systemd fills it on first boot), host keys are
    # generated per machine by the cloud so that it can write an exact known_hosts file.
    (root / "etc/machine-id").write_text("", encoding="utf-8")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/50-rayops.conf").write_text(
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nUseDNS no\n",
        encoding="utf-8",
    )
    run(["chroot", str(root), "systemctl", "enable", "systemd-networkd.service", "ssh.service"])
    # Nothing in the machines should wait for a network that is static anyway.
    run(["chroot", str(root), "systemctl", "mask", "systemd-networkd-wait-online.service"])
    # pip uses certifi, not the system bundle: point it at the bundle the cloud copies from the host.
    (root / "etc/pip.conf").write_text(
        "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n", encoding="utf-8"
    )
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
