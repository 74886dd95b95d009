"""The machines of a cloud: overlay root filesystems, nspawn launchers in their own cgroups, stop and removal.

Each machine boots from an overlay (``<runtime dir>/<machine>/{upper,work,rootfs}``) on the cached image;
its launcher runs in the cgroups ``rayops/<cloud>/<machine>`` of every hierarchy (the host's PID 1 is
not systemd, so nothing else keeps machines' services apart). Machines are found by their exact names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from rayops.localcloud import image, system
from rayops.localcloud.state import CGROUP_ROOTS, CloudSpec, Machine
from rayops.localcloud.system import run

NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")


def make_key(spec: CloudSpec) -> None:
    """The cloud's login key pair (the key every machine accepts), once."""
    if not spec.key_path.exists():
        comment = f"rayops-local-{spec.name}"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(spec.key_path)])


def prepare(spec: CloudSpec, m: Machine, img: Path) -> None:
    """Mount the machine's overlay and write what makes it this machine: name, hosts, IP, keys, CA bundle."""
    base = m.dir(spec)
    upper, work, rootfs = base / "upper", base / "work", base / "rootfs"
    for d in (upper, work, rootfs):
        d.mkdir(parents=True, exist_ok=True)
    overlay = f"lowerdir={img},upperdir={upper},workdir={work}"
    run(["mount", "-t", "overlay", f"rayops-{m.name}", "-o", overlay, str(rootfs)])
    etc = rootfs / "etc"
    (etc / "hostname").write_text(m.name + "\n", encoding="utf-8")
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += [f"{n.ip} {n.name}" for n in spec.machines()]
    (etc / "hosts").write_text("\n".join(hosts) + "\n", encoding="utf-8")
    resolv = etc / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    # Trust what the host trusts (pip and apt through a TLS-inspecting proxy need it).
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_bundle.exists():
        (etc / "ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_bundle, etc / "ssl/certs/ca-certificates.crt")
    # Same name as the distro file in /usr/lib, so ours masks it (static IP instead of DHCP).
    (etc / "systemd/network").mkdir(parents=True, exist_ok=True)
    (etc / "systemd/network/80-container-host0.network").write_text(
        "[Match]\nName=host0\n\n[Network]\n"
        f"Address={m.ip}/{spec.network.prefixlen}\nGateway={spec.gateway}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        encoding="utf-8",
    )
    # Per-machine host key, so the controller's known_hosts is exact (no trust on first use).
    key = etc / "ssh/ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", m.name, "-f", str(key)])
    ssh_dir = rootfs / "home" / image.SSH_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(
        Path(str(spec.key_path) + ".pub").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (ssh_dir / "authorized_keys").chmod(0o600)
    for p in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(p, 1000, 1000)


def launch(spec: CloudSpec, m: Machine) -> int:
    """Boot the machine: an nspawn launcher put into the machine's own cgroups first; its pid."""
    for cg in m.cgroups():
        cg.mkdir(parents=True, exist_ok=True)
    # nspawn keeps a folder per machine name under /run and can only remove it from a tmpfs; this host's
    # /run is on disk, so the folders outlived their machines (nspawn logs "Attempted to remove disk file
    # system ... and we can't allow that"; that was the last line of a failed boot in bench_site).
    _remove_propagate_dir(m.name)
    procs = " && ".join(f"echo $$ > {cg}/cgroup.procs" for cg in m.cgroups())
    nspawn = (
        f"exec systemd-nspawn --boot --directory={m.dir(spec) / 'rootfs'} --machine={m.name} "
        f"--register=no --keep-unit --network-bridge={spec.bridge} --resolv-conf=off "
        "--timezone=off --link-journal=no --console=read-only"
    )
    log = (spec.logs_dir / f"{m.name}.log").open("ab")
    proc = subprocess.Popen(
        ["sh", "-c", f"{procs} && {nspawn}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc.pid


def host_public_key(spec: CloudSpec, m: Machine) -> str:
    """The machine's ed25519 host key as "ssh-ed25519 BASE64" (without the comment)."""
    pub = (m.dir(spec) / "rootfs/etc/ssh/ssh_host_ed25519_key.pub").read_text(encoding="utf-8")
    keytype, key = pub.split()[:2]
    return f"{keytype} {key}"


def write_known_hosts(spec: CloudSpec, machines: list[Machine]) -> None:
    """The exact host keys of the machines, for the controller's ssh."""
    lines = [f"{m.name},{m.ip} {host_public_key(spec, m)}" for m in machines]
    spec.known_hosts_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _nspawn_machines(argv: list[str]) -> list[str]:
    """The machine names of an nspawn argv; [] for any other process."""
    if not argv or not argv[0].endswith("systemd-nspawn"):
        return []
    return [a.split("=", 1)[1] for a in argv if a.startswith("--machine=")]


def launcher_pids(spec: CloudSpec, machine: str | None = None) -> list[int]:
    """Running nspawn launchers of one machine, or of every machine of this cloud (by exact name)."""

    def match(argv: list[str]) -> bool:
        return any(n == machine if machine else spec.owns_machine(n) for n in _nspawn_machines(argv))

    return system.find_pids(match)


def is_launcher(pid: int | None, name: str) -> bool:
    """Whether ``pid`` is alive and is the launcher of machine ``name``: its nspawn, or the shell that execs
    it. A pid from the state file may belong to another process by now (pids are reused; this
    host's pid_max is 32768), and must then be neither signalled nor taken for a running machine."""
    if pid is None or not system.pid_alive(pid):
        return False
    argv = system.cmdline(pid)
    if argv[:1] == ["sh"] and len(argv) == 3:
        return f" --machine={name} " in argv[2]
    return name in _nspawn_machines(argv)


def running_names(spec: CloudSpec) -> set[str]:
    """The names of this cloud's machines that have a running launcher."""
    names = set()
    for pid in launcher_pids(spec):
        names |= set(_nspawn_machines(system.cmdline(pid)))
    return {n for n in names if spec.owns_machine(n)}


def stop(spec: CloudSpec, m: Machine, pid: int | None, timeout: float = 20.0) -> None:
    """Orderly poweroff (SIGTERM to nspawn), then SIGKILL whatever is left in the machine's cgroups."""
    pids = [p for p in {*launcher_pids(spec, m.name), pid} if p is not None and is_launcher(p, m.name)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)  # nspawn turns this into an orderly poweroff of the machine
    system.wait_gone(pids, timeout, interval=0.2)
    for _ in range(50):
        left = cgroup_pids(m)
        if not left:
            return
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.1)


def remove(spec: CloudSpec, m: Machine) -> None:
    """The machine's overlay (unmounted first), its nspawn folder and its cgroups."""
    base = m.dir(spec)
    if base.exists():
        umount(base / "rootfs")
        shutil.rmtree(base, ignore_errors=True)
    _remove_propagate_dir(m.name)
    for cg in sorted(m.cgroups(), key=lambda p: len(p.parts), reverse=True):
        rmdir_tree(cg)


def remove_cloud_dirs(spec: CloudSpec) -> None:
    """The cloud's runtime folder and cgroups, and their parents once no other cloud uses them."""
    if spec.runtime_dir.exists():
        for rootfs in spec.runtime_dir.glob("*/rootfs"):
            umount(rootfs)
        shutil.rmtree(spec.runtime_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        spec.runtime_dir.parent.rmdir()  # only when no other cloud lives there
    for root in CGROUP_ROOTS:
        rmdir_tree(root / "rayops" / spec.name)
        with contextlib.suppress(OSError):
            (root / "rayops").rmdir()


def _remove_propagate_dir(name: str) -> None:
    """nspawn's per-machine folder (see launch); left alone while something is mounted on it."""
    propagate = NSPAWN_PROPAGATE / name
    if propagate.is_dir() and not os.path.ismount(propagate):
        shutil.rmtree(propagate, ignore_errors=True)


def umount(path: Path) -> None:
    for _ in range(20):
        if not is_mountpoint(path):
            return
        proc = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if proc.returncode == 0:
            continue
        time.sleep(0.2)
    if is_mountpoint(path):
        run(["umount", "--lazy", str(path)])


def is_mountpoint(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        return any(line.split()[1] == target for line in fh)


def rmdir_tree(path: Path) -> None:
    """Remove a tree of empty folders (cgroups), deepest first; what is still in use stays."""
    # os.walk skips a folder that vanishes while it is walked (the machine's systemd removes its own groups
    # while its processes die); pathlib's rglob raised FileNotFoundError there.
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def cgroup_pids(m: Machine) -> set[int]:
    """Every process of a machine: the pids in its cgroups (all hierarchies, nested groups included)."""
    pids: set[int] = set()
    for cg in m.cgroups():
        # os.walk, not rglob: a group removed while it is walked is skipped (see rmdir_tree)
        for dirpath, _dirs, files in os.walk(cg):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError), open(os.path.join(dirpath, "cgroup.procs")) as fh:
                    pids |= {int(p) for p in fh.read().split()}
    return pids


def rss_bytes(m: Machine) -> int:
    """Resident memory of every process of a machine (sum of RSS), in bytes."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in cgroup_pids(m):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total
