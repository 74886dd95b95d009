"""Lifecycle of one local cloud: bridge + NAT, N nspawn machines booted from overlays, an S3 endpoint.

Every resource is named after the cloud (``--name``), so several clouds (the user's and Molecule's)
can live side by side, and ``down`` can find and remove everything of one cloud even when its state
file is gone or the cloud crashed half-way up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rayops import contract
from rayops.localcloud import image, system
from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.system import run

DEFAULT_NAME = "rayops"
DEFAULT_SUBNET = "10.213.7.0/24"
DEFAULT_S3_PORT = 5599
DEFAULT_STATE_DIR = Path(".rayops/local")
RUNTIME_ROOT = Path("/var/lib/rayops")
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
BOOT_TIMEOUT_S = 90.0
FIRST_NODE_OFFSET = 10  # head at .10, workers at .11, .12, ...
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(f"[rayops-local] {msg}", flush=True)


@dataclass(frozen=True)
class CloudSpec:
    """What a cloud is made of; stored in its state file so that `down` needs only the state dir."""

    name: str = DEFAULT_NAME
    workers: int = 2
    subnet: str = DEFAULT_SUBNET
    s3_port: int = DEFAULT_S3_PORT
    state_dir: str = str(DEFAULT_STATE_DIR)

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise LocalCloudError(
                f"cloud name {self.name!r} is invalid: use 1-12 lowercase letters, digits or '-', "
                "starting with a letter"
            )
        if not 0 <= self.workers <= 20:
            raise LocalCloudError(f"WORKERS={self.workers} is out of range: use 0 to 20 workers")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as err:
            raise LocalCloudError(
                f"subnet {self.subnet!r} is not an IPv4 network like 10.213.7.0/24"
            ) from err
        if net.num_addresses < FIRST_NODE_OFFSET + self.workers + 2:
            raise LocalCloudError(f"subnet {self.subnet} is too small for {self.workers} workers: use a /24")
        if not 1024 <= self.s3_port <= 65535:
            raise LocalCloudError(f"S3 port {self.s3_port} is out of range: use 1024-65535")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def bridge(self) -> str:
        return f"rb-{self.name}"

    @property
    def nat_comment(self) -> str:
        return f"rayops-local:{self.name}"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://{self.gateway}:{self.s3_port}"

    @property
    def runtime_dir(self) -> Path:
        return RUNTIME_ROOT / "clouds" / self.name

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def machines(self) -> list[Machine]:
        names = [f"{self.name}-head"] + [f"{self.name}-worker-{i}" for i in range(1, self.workers + 1)]
        return [
            Machine(
                name=n,
                role="head" if i == 0 else "worker",
                ip=str(self.network.network_address + FIRST_NODE_OFFSET + i),
                cloud=self.name,
            )
            for i, n in enumerate(names)
        ]

    def buckets(self) -> dict[str, str]:
        return {kind: f"{self.name}-{kind}" for kind in contract.BUCKET_KINDS}


@dataclass(frozen=True)
class Machine:
    name: str
    role: str
    ip: str
    cloud: str

    def dir(self, spec: CloudSpec) -> Path:
        return spec.runtime_dir / self.name

    def cgroups(self) -> list[Path]:
        return [root / "rayops" / self.cloud / self.name for root in CGROUP_ROOTS]


@dataclass
class CloudState:
    spec: CloudSpec
    launcher_pids: dict[str, int] = field(default_factory=dict)
    s3_pid: int | None = None

    def save(self) -> None:
        path = self.spec.state_path / "state.json"
        data = {"spec": asdict(self.spec), "launcher_pids": self.launcher_pids, "s3_pid": self.s3_pid}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, state_dir: Path) -> CloudState | None:
        path = state_dir / "state.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(CloudSpec(**data["spec"]), data["launcher_pids"], data["s3_pid"])
        except (ValueError, KeyError, TypeError):
            return None


class LocalCloud:
    """One local cloud. `up`, `down`, `status`, and per-machine `stop_machine`/`start_machine`."""

    def __init__(self, spec: CloudSpec, log: Log = _log, image_cache: Path | None = None) -> None:
        spec.validate()
        self.spec = spec
        self.log = log
        self.image_cache = image_cache or RUNTIME_ROOT / "images"

    # ----------------------------------------------------------------- paths of the state dir
    @property
    def outputs_path(self) -> Path:
        return self.spec.state_path / "outputs.json"

    @property
    def key_path(self) -> Path:
        return self.spec.state_path / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.spec.state_path / "known_hosts"

    # ----------------------------------------------------------------------------------- up
    def _state(self) -> CloudState | None:
        """This cloud's state file; an error when the state dir holds another cloud's."""
        state = CloudState.load(self.spec.state_path)
        if state is not None and state.spec.name != self.spec.name:
            raise LocalCloudError(
                f"{self.spec.state_path} holds the state of cloud '{state.spec.name}', not "
                f"'{self.spec.name}': pass the --state-dir that cloud '{self.spec.name}' was brought "
                "up with, or a new one"
            )
        return state

    def up(self) -> dict[str, Any]:
        """Boot the cloud and return its contract; a no-op when it is already fully up."""
        system.preflight()
        start = time.monotonic()
        state = self._state()
        if state is not None:
            problems = self._health_problems(state)
            if not problems and self.outputs_path.exists():
                self.log(f"cloud '{self.spec.name}' is already up; nothing to do")
                return contract.validate(json.loads(self.outputs_path.read_text(encoding="utf-8")))
            raise LocalCloudError(
                f"cloud '{self.spec.name}' is half up "
                f"({problems[0] if problems else 'no contract file'}): run `make local-down` "
                f"(rayops-local down --state-dir {self.spec.state_dir}) and then up again"
            )
        leftovers = self._leftovers()
        if leftovers:
            raise LocalCloudError(
                f"cloud '{self.spec.name}' has leftovers of an earlier run ({leftovers[0]}) "
                f"but no state file: run `rayops-local down --name {self.spec.name}` first"
            )
        self._check_subnet_free()
        self._check_port_free()

        img = image.ensure_image(self.image_cache, self.log)
        state = CloudState(self.spec)
        try:
            self.spec.state_path.mkdir(parents=True, exist_ok=True)
            (self.spec.state_path / "logs").mkdir(exist_ok=True)
            self._make_key()
            self._bridge_up()
            state.s3_pid = self._start_s3()
            state.save()
            machines = self.spec.machines()
            for m in machines:
                self._prepare_machine(m, img)
                state.launcher_pids[m.name] = self._launch(m)
                state.save()
            self._write_known_hosts(machines)
            for m in machines:
                self._wait_ready(m, state)
            self._create_buckets()
            outputs = self._write_outputs(machines)
        except BaseException:
            self.log("bringing the cloud up failed; removing everything it created")
            with contextlib.suppress(Exception):
                self.down(quiet=True)
            raise
        self.log(
            f"cloud '{self.spec.name}' is up in {time.monotonic() - start:.1f} s: "
            f"{len(machines)} machines, S3 at {self.spec.s3_endpoint_url}, contract {self.outputs_path}"
        )
        return outputs

    def _health_problems(self, state: CloudState) -> list[str]:
        problems = []
        for m in self.spec.machines():
            pid = state.launcher_pids.get(m.name)
            if pid is None or not system.pid_alive(pid):
                problems.append(f"machine {m.name} is not running")
        if state.s3_pid is None or not system.pid_alive(state.s3_pid):
            problems.append("the S3 endpoint is not running")
        return problems

    def _leftovers(self) -> list[str]:
        found = []
        if self.spec.runtime_dir.exists():
            found.append(f"folder {self.spec.runtime_dir}")
        if Path(f"/sys/class/net/{self.spec.bridge}").exists():
            found.append(f"bridge {self.spec.bridge}")
        if self._machine_pids():
            found.append("running nspawn machines")
        return found

    def _check_subnet_free(self) -> None:
        net = self.spec.network
        for dev, cidr in _host_ipv4():
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

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR: connections of an earlier run in TIME_WAIT are not "in use"; listeners are.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", self.spec.s3_port))  # noqa: S104 - probing only, closed at once
            except OSError as err:
                raise LocalCloudError(
                    f"port {self.spec.s3_port} for the S3 endpoint is already in use: "
                    f"pick another, e.g. `make local-up S3_PORT={self.spec.s3_port + 1}`"
                ) from err

    def _make_key(self) -> None:
        if not self.key_path.exists():
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"rayops-local-{self.spec.name}",
                    "-f",
                    str(self.key_path),
                ]
            )

    def _bridge_up(self) -> None:
        br, spec = self.spec.bridge, self.spec
        self.log(f"bridge {br} {spec.gateway}/{spec.network.prefixlen}, NAT for {spec.subnet}")
        run(["ip", "link", "add", br, "type", "bridge"])
        run(["ip", "addr", "add", f"{spec.gateway}/{spec.network.prefixlen}", "dev", br])
        run(["ip", "link", "set", br, "up"])
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n", encoding="utf-8")
        comment = ["-m", "comment", "--comment", spec.nat_comment]
        run(
            [
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                spec.subnet,
                "!",
                "-o",
                br,
                "-j",
                "MASQUERADE",
                *comment,
            ]
        )
        run(["iptables", "-A", "FORWARD", "-i", br, "-j", "ACCEPT", *comment])
        run(["iptables", "-A", "FORWARD", "-o", br, "-j", "ACCEPT", *comment])

    def _start_s3(self) -> int:
        moto = Path(sys.executable).with_name("moto_server")
        if not moto.exists():
            raise LocalCloudError(f"moto_server is not installed next to {sys.executable}: run `make setup`")
        log = (self.spec.state_path / "logs" / "s3.log").open("ab")
        proc = subprocess.Popen(
            [str(moto), "-H", self.spec.gateway, "-p", str(self.spec.s3_port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log(f"S3 endpoint (moto) starting at {self.spec.s3_endpoint_url}")
        return proc.pid

    def _prepare_machine(self, m: Machine, img: Path) -> None:
        base = m.dir(self.spec)
        upper, work, rootfs = base / "upper", base / "work", base / "rootfs"
        for d in (upper, work, rootfs):
            d.mkdir(parents=True, exist_ok=True)
        run(
            [
                "mount",
                "-t",
                "overlay",
                f"rayops-{m.name}",
                "-o",
                f"lowerdir={img},upperdir={upper},workdir={work}",
                str(rootfs),
            ]
        )
        etc = rootfs / "etc"
        (etc / "hostname").write_text(m.name + "\n", encoding="utf-8")
        hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        hosts += [f"{n.ip} {n.name}" for n in self.spec.machines()]
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
            f"Address={m.ip}/{self.spec.network.prefixlen}\nGateway={self.spec.gateway}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
            encoding="utf-8",
        )
        # Per-machine host key, so the controller's known_hosts is exact (no trust on first use).
        key = etc / "ssh/ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", m.name, "-f", str(key)])
        ssh_dir = rootfs / "home" / image.SSH_USER / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(
            Path(str(self.key_path) + ".pub").read_text(encoding="utf-8"), encoding="utf-8"
        )
        (ssh_dir / "authorized_keys").chmod(0o600)
        for p in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(p, 1000, 1000)

    def _launch(self, m: Machine) -> int:
        for cg in m.cgroups():
            cg.mkdir(parents=True, exist_ok=True)
        # nspawn keeps a folder per machine name under /run and can only remove it from a tmpfs; this host's
        # /run is on disk, so the folders outlived their machines (nspawn logs "Attempted to remove disk file
        # system ... and we can't allow that"; that was the last line of a failed boot in bench_site).
        self._remove_propagate_dir(m.name)
        procs = " && ".join(f"echo $$ > {cg}/cgroup.procs" for cg in m.cgroups())
        nspawn = (
            f"exec systemd-nspawn --boot --directory={m.dir(self.spec) / 'rootfs'} --machine={m.name} "
            f"--register=no --keep-unit --network-bridge={self.spec.bridge} --resolv-conf=off "
            "--timezone=off --link-journal=no --console=read-only"
        )
        log = (self.spec.state_path / "logs" / f"{m.name}.log").open("ab")
        proc = subprocess.Popen(
            ["sh", "-c", f"{procs} && {nspawn}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log(f"booting {m.name} ({m.role}) at {m.ip}")
        return proc.pid

    def _write_known_hosts(self, machines: list[Machine]) -> None:
        lines = []
        for m in machines:
            pub = (m.dir(self.spec) / "rootfs/etc/ssh/ssh_host_ed25519_key.pub").read_text(encoding="utf-8")
            keytype, key = pub.split()[:2]
            lines.append(f"{m.name},{m.ip} {keytype} {key}")
        self.known_hosts_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def ssh_command(self, m: Machine, *remote: str, timeout: int = 3) -> list[str]:
        """The ssh argv that reaches machine ``m`` as the login user (exact known_hosts, our key)."""
        return [
            "ssh",
            "-i",
            str(self.key_path),
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
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

    def _wait_ready(self, m: Machine, state: CloudState) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            pid = state.launcher_pids[m.name]
            if not system.pid_alive(pid):
                tail = (self.spec.state_path / "logs" / f"{m.name}.log").read_text(errors="replace")
                raise LocalCloudError(
                    f"machine {m.name} exited while booting: {tail.strip().splitlines()[-1:] or 'no log'}"
                )
            proc = subprocess.run(
                self.ssh_command(m, "systemctl", "is-system-running", "--wait"),
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
                    self.ssh_command(m, "systemctl", "--failed", "--plain", "--no-legend"),
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
                raise LocalCloudError(f"machine {m.name} booted degraded; failed units: {failed}")
            time.sleep(0.5)
        raise LocalCloudError(
            f"machine {m.name} did not come up within {BOOT_TIMEOUT_S:.0f} s (last: {last})"
        )

    def s3_client(self) -> Any:
        """A boto3 S3 client for this cloud's endpoint (moto accepts any credentials)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.spec.s3_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="rayops-local",
            aws_secret_access_key="rayops-local",  # noqa: S106 - moto ignores them
        )

    def _create_buckets(self) -> None:
        s3 = self.s3_client()
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.list_buckets()
                break
            except Exception as err:
                if time.monotonic() > deadline:
                    raise LocalCloudError(
                        f"the S3 endpoint {self.spec.s3_endpoint_url} did not start: {err}"
                    ) from err
                time.sleep(0.3)
        for bucket in self.spec.buckets().values():
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        self.log(f"buckets {', '.join(self.spec.buckets().values())} created, versioning on")

    def _write_outputs(self, machines: list[Machine]) -> dict[str, Any]:
        outputs: dict[str, Any] = {
            "rayops_contract": contract.CONTRACT_VERSION,
            "cluster_name": self.spec.name,
            "provider": "local",
            "region": "local",
            "ssh_user": image.SSH_USER,
            "nodes": [
                {
                    "name": m.name,
                    "role": m.role,
                    "private_ip": m.ip,
                    "public_ip": None,
                    "instance_id": f"nspawn-{m.name}",
                    "instance_type": "nspawn",
                }
                for m in machines
            ],
            "buckets": self.spec.buckets(),
            "s3_endpoint_url": self.spec.s3_endpoint_url,
            "ssh_private_key_file": str(self.key_path.resolve()),
            "ssh_known_hosts_file": str(self.known_hosts_path.resolve()),
        }
        contract.validate(outputs)
        self.outputs_path.write_text(json.dumps(outputs, indent=2) + "\n", encoding="utf-8")
        return outputs

    # --------------------------------------------------------------------- single machines
    def machine(self, name: str) -> Machine:
        for m in self.spec.machines():
            if m.name == name:
                return m
        names = ", ".join(m.name for m in self.spec.machines())
        raise LocalCloudError(f"cloud '{self.spec.name}' has no machine {name!r}; it has {names}")

    def stop_machine(self, name: str) -> None:
        """Power a machine off (orderly), keeping its disk, like stopping an EC2 instance."""
        m = self.machine(name)
        state = self._require_state()
        self._stop(m, state.launcher_pids.get(m.name))
        self.log(f"{m.name} stopped")

    def start_machine(self, name: str) -> None:
        """Boot a stopped machine again from its kept overlay."""
        m = self.machine(name)
        state = self._require_state()
        pid = state.launcher_pids.get(m.name)
        if pid is not None and system.pid_alive(pid):
            self.log(f"{m.name} is already running")
            return
        state.launcher_pids[m.name] = self._launch(m)
        state.save()
        self._wait_ready(m, state)
        self.log(f"{m.name} is running again")

    def _require_state(self) -> CloudState:
        state = self._state()
        if state is None:
            raise LocalCloudError(f"cloud '{self.spec.name}' is not up: run `make local-up` first")
        return state

    def _stop(self, m: Machine, pid: int | None, timeout: float = 20.0) -> None:
        pids = [p for p in [pid, *self._machine_pids(m.name)] if p is not None and system.pid_alive(p)]
        for p in set(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)  # nspawn turns this into an orderly poweroff of the machine
        system.wait_gone(pids, timeout, interval=0.2)
        self._kill_cgroup(m)

    def _kill_cgroup(self, m: Machine) -> None:
        for _ in range(50):
            pids = _cgroup_pids(m)
            if not pids:
                return
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.1)

    def _machine_pids(self, machine: str | None = None) -> list[int]:
        prefix = f"--machine={machine}" if machine else f"--machine={self.spec.name}-"

        def match(argv: list[str]) -> bool:
            return (
                bool(argv)
                and argv[0].endswith("systemd-nspawn")
                and any(a == prefix if machine else a.startswith(prefix) for a in argv)
            )

        return system.find_pids(match)

    # --------------------------------------------------------------------------------- down
    def down(self, quiet: bool = False) -> None:
        """Remove everything of this cloud; safe on a half-up, crashed or already-down cloud."""
        system.preflight()
        # Another cloud's state dir (`down --name x` beside the default cloud's .rayops/local) is
        # neither read nor removed: its pids and files belong to that cloud.
        state = CloudState.load(self.spec.state_path)
        own_state_dir = state is None or state.spec.name == self.spec.name
        if not own_state_dir:
            state = None
        pids = state.launcher_pids if state else {}
        # Machines named in the state file, plus any of this cloud's machines still running.
        names = {m.name for m in self.spec.machines()} | set(pids)
        for argv_pid in self._machine_pids():
            for a in system.cmdline(argv_pid):
                if a.startswith("--machine="):
                    names.add(a.split("=", 1)[1])
        for name in sorted(names):
            m = Machine(name=name, role="", ip="", cloud=self.spec.name)
            self._stop(m, pids.get(name))
            self._remove_machine_dirs(m)
            for cg in sorted(m.cgroups(), key=lambda p: len(p.parts), reverse=True):
                self._rmdir_tree(cg)
        if self.spec.runtime_dir.exists():
            for rootfs in self.spec.runtime_dir.glob("*/rootfs"):
                self._umount(rootfs)
            shutil.rmtree(self.spec.runtime_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.spec.runtime_dir.parent.rmdir()  # only when no other cloud lives there
        for root in CGROUP_ROOTS:
            self._rmdir_tree(root / "rayops" / self.spec.name)
            with contextlib.suppress(OSError):
                (root / "rayops").rmdir()
        self._stop_s3(state.s3_pid if state else None)
        self._delete_rules()
        if Path(f"/sys/class/net/{self.spec.bridge}").exists():
            run(["ip", "link", "delete", self.spec.bridge])
        if own_state_dir and self.spec.state_path.exists():
            shutil.rmtree(self.spec.state_path)
        if not quiet:
            self.log(f"cloud '{self.spec.name}' is down; nothing of it is left")

    def _remove_machine_dirs(self, m: Machine) -> None:
        base = m.dir(self.spec)
        if base.exists():
            self._umount(base / "rootfs")
            shutil.rmtree(base, ignore_errors=True)
        self._remove_propagate_dir(m.name)

    @staticmethod
    def _remove_propagate_dir(name: str) -> None:
        """nspawn's per-machine folder (see _launch); left alone while something is mounted on it."""
        propagate = NSPAWN_PROPAGATE / name
        if propagate.is_dir() and not os.path.ismount(propagate):
            shutil.rmtree(propagate, ignore_errors=True)

    @staticmethod
    def _umount(path: Path) -> None:
        for _ in range(20):
            if not _is_mountpoint(path):
                return
            proc = subprocess.run(["umount", str(path)], capture_output=True, check=False)
            if proc.returncode == 0:
                continue
            time.sleep(0.2)
        if _is_mountpoint(path):
            run(["umount", "--lazy", str(path)])

    @staticmethod
    def _rmdir_tree(path: Path) -> None:
        if not path.exists():
            return
        for sub in sorted(
            (p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            path.rmdir()

    def _stop_s3(self, pid: int | None) -> None:
        # The gateway address is this cloud's alone (subnets may not overlap); the port is not
        # matched, so that a leftover cloud found without its state file loses its S3 server too.
        def match(argv: list[str]) -> bool:
            return any(a.endswith("moto_server") for a in argv[:2]) and any(
                a == "-H" and b == self.spec.gateway for a, b in itertools.pairwise(argv)
            )

        pids = set(system.find_pids(match)) | ({pid} if pid and system.pid_alive(pid) else set())
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
        system.wait_gone(pids, 10)
        for p in pids:
            if system.pid_alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)

    def _delete_rules(self) -> None:
        for table, chain in (("nat", "POSTROUTING"), ("filter", "FORWARD")):
            for rule in _rules_with_comment(table, chain, self.spec.nat_comment):
                run(["iptables", "-t", table, "-D", *rule])

    # ------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """Machines with IP, state and memory; the S3 endpoint; the contract path."""
        state = self._state()
        spec = state.spec if state else self.spec
        rows = []
        for m in spec.machines():
            pid = state.launcher_pids.get(m.name) if state else None
            running = pid is not None and system.pid_alive(pid)
            sysstate = "stopped"
            if running:
                proc = subprocess.run(
                    self.ssh_command(m, "systemctl", "is-system-running"),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                sysstate = proc.stdout.strip() or "unreachable"
            rows.append(
                {
                    "name": m.name,
                    "role": m.role,
                    "ip": m.ip,
                    "state": sysstate,
                    "memory_mib": round(_cgroup_rss(m) / 2**20, 1) if running else 0.0,
                }
            )
        s3_up = bool(state and state.s3_pid and system.pid_alive(state.s3_pid))
        return {
            "name": spec.name,
            "up": state is not None,
            "machines": rows,
            "s3_endpoint_url": spec.s3_endpoint_url if s3_up else None,
            "contract": str(self.outputs_path) if self.outputs_path.exists() else None,
        }


def local_clouds() -> dict[str, CloudSpec]:
    """Every local cloud on this host, found by what it leaves: its folder or its rb-<name> bridge.

    Each comes with the subnet its bridge carries (the default when the bridge is gone), so that
    `down` also finds its NAT rules and S3 server without the state file.
    """
    names = set()
    clouds_dir = RUNTIME_ROOT / "clouds"
    if clouds_dir.is_dir():
        names |= {d.name for d in clouds_dir.iterdir() if d.is_dir()}
    names |= {d.name[3:] for d in Path("/sys/class/net").glob("rb-*") if (d / "bridge").is_dir()}
    subnets = {dev[3:]: str(cidr.network) for dev, cidr in _host_ipv4() if dev.startswith("rb-")}
    return {
        name: CloudSpec(name=name, subnet=subnets.get(name, DEFAULT_SUBNET))
        for name in sorted(names)
        if _NAME_RE.match(name)
    }


def _host_ipv4() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(device, address/prefix) of every IPv4 address on this host."""
    lines = run(["ip", "-4", "-o", "addr", "show"]).splitlines()
    return [(parts[1], ipaddress.IPv4Interface(parts[3])) for parts in map(str.split, lines)]


def _is_mountpoint(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        return any(line.split()[1] == target for line in fh)


def _rules_with_comment(table: str, chain: str, comment: str) -> Iterator[list[str]]:
    out = run(["iptables", "-t", table, "-S", chain])
    for line in out.splitlines():
        if f'--comment "{comment}"' in line or f"--comment {comment}" in line:
            args = line.split()
            if args and args[0] == "-A":
                yield [a.strip('"') for a in args[1:]]


def _cgroup_pids(m: Machine) -> set[int]:
    """Every process of a machine: the pids in its cgroups (all hierarchies, nested groups included)."""
    pids: set[int] = set()
    for cg in m.cgroups():
        for procs in cg.rglob("cgroup.procs") if cg.exists() else []:
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _cgroup_rss(m: Machine) -> int:
    """Resident memory of every process of a machine (sum of RSS), in bytes."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in _cgroup_pids(m):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total
