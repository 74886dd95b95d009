"""What a local cloud is (its spec and machines), where its things live, and what it records.

Every name and path of a cloud derives from its name (``--name``): the bridge ``rb-<name>``, the NAT
comment, the machines ``<name>-head`` and ``<name>-worker-<i>``, their folders and cgroups. The state
file (``<state dir>/state.json``) records the spec and the pids of one cloud, so that ``down`` needs
only the state dir; it is also the only proof of a cloud's subnet once its bridge is gone.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rayops import contract
from rayops.localcloud import image
from rayops.localcloud.errors import LocalCloudError

DEFAULT_NAME = "rayops"
DEFAULT_SUBNET = "10.213.7.0/24"
DEFAULT_S3_PORT = 5599
DEFAULT_STATE_DIR = Path(".rayops/local")
RUNTIME_ROOT = Path("/var/lib/rayops")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
FIRST_NODE_OFFSET = 10  # head at .10, workers at .11, .12, ...
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")


@dataclass(frozen=True)
class CloudSpec:
    """What a cloud is made of; stored in its state file so that `down` needs only the state dir."""

    name: str = DEFAULT_NAME
    workers: int = 2
    subnet: str = DEFAULT_SUBNET
    s3_port: int = DEFAULT_S3_PORT
    state_dir: str = str(DEFAULT_STATE_DIR)
    # The machines' Debian release (image.RELEASES); state files older than this field mean bookworm.
    release: str = image.DEFAULT_RELEASE

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
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
        image.check_release(self.release)

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

    # ------------------------------------------------------------------ the state dir's files
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def outputs_path(self) -> Path:
        return self.state_path / "outputs.json"

    @property
    def key_path(self) -> Path:
        return self.state_path / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_path / "known_hosts"

    @property
    def logs_dir(self) -> Path:
        return self.state_path / "logs"

    # ---------------------------------------------------------------------------- machines
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

    def owns_machine(self, machine: str) -> bool:
        """True for a machine name of this cloud (never of a cloud whose name starts with ours)."""
        return re.fullmatch(rf"{re.escape(self.name)}-(head|worker-[0-9]+)", machine) is not None

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
