"""Lifecycle of one local cloud: bridge + NAT, N nspawn machines booted from overlays, an S3 endpoint.

This module is the orchestration; each concern lives in its own module:
``state`` (spec, names, paths, state file), ``network`` (bridge, NAT, free subnet/port),
``machines`` (overlays, nspawn launchers, cgroups, removal), ``s3server`` (moto, buckets, the
nodes' S3 environment), ``readiness`` (SSH and systemd's `running`), ``discovery`` (clouds found
by what they leave behind).

Every resource is named after the cloud (``--name``), so several clouds (the user's and Molecule's)
can live side by side, and ``down`` can find and remove everything of one cloud even when its state
file is gone or the cloud crashed half-way up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayops import contract
from rayops.localcloud import image, machines, network, readiness, s3server, system
from rayops.localcloud.discovery import leftovers, local_clouds
from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.machines import NSPAWN_PROPAGATE
from rayops.localcloud.readiness import BOOT_TIMEOUT_S
from rayops.localcloud.state import (
    CGROUP_ROOTS,
    DEFAULT_NAME,
    DEFAULT_S3_PORT,
    DEFAULT_STATE_DIR,
    DEFAULT_SUBNET,
    RUNTIME_ROOT,
    CloudSpec,
    CloudState,
    Machine,
)

# What Ray may schedule on each machine (the contract's ray_resources): 1 CPU, 2 GiB for tasks, 512 MiB of
# object store, so three nodes fit on a 2-core laptop (the machines' facts show the whole host).
RAY_RESOURCES = {"num_cpus": 1, "memory": 2 * 1024**3, "object_store_memory": 512 * 1024**2}

# The names the tests, benchmarks and the CLI import from here.
__all__ = [
    "BOOT_TIMEOUT_S",
    "CGROUP_ROOTS",
    "DEFAULT_NAME",
    "DEFAULT_S3_PORT",
    "DEFAULT_STATE_DIR",
    "DEFAULT_SUBNET",
    "NSPAWN_PROPAGATE",
    "RUNTIME_ROOT",
    "CloudSpec",
    "CloudState",
    "LocalCloud",
    "Machine",
    "local_clouds",
]

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(f"[rayops-local] {msg}", flush=True)


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
        return self.spec.outputs_path

    @property
    def key_path(self) -> Path:
        return self.spec.key_path

    @property
    def known_hosts_path(self) -> Path:
        return self.spec.known_hosts_path

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
        found = leftovers(self.spec)
        if found:
            raise LocalCloudError(
                f"cloud '{self.spec.name}' has leftovers of an earlier run ({found[0]}) "
                f"but no state file: run `rayops-local down --name {self.spec.name}` first"
            )
        network.check_subnet_free(self.spec.network)
        network.check_port_free(self.spec.s3_port)

        img = image.ensure_image(self.image_cache, self.log, self.spec.release)
        spec = self.spec
        state = CloudState(spec)
        try:
            spec.state_path.mkdir(parents=True, exist_ok=True)
            spec.logs_dir.mkdir(exist_ok=True)
            machines.make_key(spec)
            self.log(f"bridge {spec.bridge} {spec.gateway}/{spec.network.prefixlen}, NAT for {spec.subnet}")
            network.bridge_up(spec)
            state.s3_pid = s3server.start(spec)
            self.log(f"S3 endpoint (moto) starting at {spec.s3_endpoint_url}")
            state.save()
            nodes = spec.machines()
            for m in nodes:
                machines.prepare(spec, m, img)
                state.launcher_pids[m.name] = self._launch(m)
                state.save()
            machines.write_known_hosts(spec, nodes)
            for m in nodes:
                readiness.wait_ready(spec, m, state.launcher_pids[m.name])
            s3server.create_buckets(spec, self.log)
            outputs = self._write_outputs(nodes)
        except BaseException:
            self.log("bringing the cloud up failed; removing everything it created")
            with contextlib.suppress(Exception):
                self.down(quiet=True)
            raise
        self.log(
            f"cloud '{spec.name}' is up in {time.monotonic() - start:.1f} s: "
            f"{len(nodes)} {spec.release} machines, S3 at {spec.s3_endpoint_url}, "
            f"contract {self.outputs_path}"
        )
        return outputs

    def _launch(self, m: Machine) -> int:
        pid = machines.launch(self.spec, m)
        self.log(f"booting {m.name} ({m.role}) at {m.ip}")
        return pid

    def _health_problems(self, state: CloudState) -> list[str]:
        problems = []
        for m in self.spec.machines():
            if not machines.is_launcher(state.launcher_pids.get(m.name), m.name):
                problems.append(f"machine {m.name} is not running")
        if not s3server.is_server(state.s3_pid, self.spec.name):
            problems.append("the S3 endpoint is not running")
        return problems

    def ssh_command(self, m: Machine, *remote: str, timeout: int = 3) -> list[str]:
        """The ssh argv that reaches machine ``m`` as the login user (exact known_hosts, our key)."""
        return readiness.ssh_command(self.spec, m, *remote, timeout=timeout)

    def s3_client(self) -> Any:
        """A boto3 S3 client for this cloud's endpoint (moto accepts any credentials)."""
        return s3server.client(self.spec)

    def _write_outputs(self, nodes: list[Machine]) -> dict[str, Any]:
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
                    # The same key the AWS stack exports for its nodes: the inventory plugin pins it.
                    "ssh_host_key": machines.host_public_key(self.spec, m),
                    # Every machine sees all of the host's cores and memory: Ray gets a small, fixed share.
                    "ray_resources": dict(RAY_RESOURCES),
                }
                for m in nodes
            ],
            "buckets": self.spec.buckets(),
            "s3_endpoint_url": self.spec.s3_endpoint_url,
            "s3_env": s3server.node_env(self.spec),
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

    def stop_machine(self, name: str, hard: bool = False) -> None:
        """Power a machine off (orderly), keeping its disk, like stopping an EC2 instance. ``hard``: a power
        cut instead, every process of the machine killed at once (a failed instance)."""
        m = self.machine(name)
        state = self._require_state()
        machines.stop(self.spec, m, state.launcher_pids.get(m.name), timeout=0.0 if hard else 20.0)
        self.log(f"{m.name} {'powered off hard' if hard else 'stopped'}")

    def start_machine(self, name: str) -> None:
        """Boot a stopped machine again from its kept overlay."""
        m = self.machine(name)
        state = self._require_state()
        if machines.is_launcher(state.launcher_pids.get(m.name), m.name):
            self.log(f"{m.name} is already running")
            return
        state.launcher_pids[m.name] = self._launch(m)
        state.save()
        readiness.wait_ready(self.spec, m, state.launcher_pids[m.name])
        self.log(f"{m.name} is running again")

    def pause_s3(self, paused: bool = True) -> None:
        """Freeze (SIGSTOP) or thaw (SIGCONT) the S3 endpoint: an outage that keeps its objects (moto holds
        them in memory, so a stopped server would lose them). Connections hang while it is frozen."""
        state = self._require_state()
        if state.s3_pid is None or not s3server.is_server(state.s3_pid, self.spec.name):
            raise LocalCloudError(f"cloud '{self.spec.name}' has no running S3 endpoint to pause")
        os.kill(state.s3_pid, signal.SIGSTOP if paused else signal.SIGCONT)
        self.log(f"S3 endpoint {'paused' if paused else 'resumed'}")

    def _require_state(self) -> CloudState:
        state = self._state()
        if state is None:
            raise LocalCloudError(f"cloud '{self.spec.name}' is not up: run `make local-up` first")
        return state

    # --------------------------------------------------------------------------------- down
    def down(self, quiet: bool = False) -> None:
        """Remove everything of this cloud; safe on a half-up, crashed or already-down cloud.

        Only what provably belongs to this cloud is touched: what carries its name (machines, folders,
        cgroups, rules, bridge, the S3 server's mark), and an unmarked S3 server only on the gateway
        that this cloud's state file records or its bridge still carries (never an assumed subnet).
        """
        system.preflight()
        # Another cloud's state dir (`down --name x` beside the default cloud's .rayops/local) is
        # neither read nor removed: its pids and files belong to that cloud.
        state = CloudState.load(self.spec.state_path)
        own_state_dir = state is None or state.spec.name == self.spec.name
        if not own_state_dir:
            state = None
        gateway = state.spec.gateway if state else network.bridge_gateway(self.spec.bridge)
        pids = state.launcher_pids if state else {}
        # Machines named in the state file, plus any of this cloud's machines still running.
        names = {m.name for m in self.spec.machines()} | set(pids) | machines.running_names(self.spec)
        for name in sorted(names):
            m = Machine(name=name, role="", ip="", cloud=self.spec.name)
            machines.stop(self.spec, m, pids.get(name))
            machines.remove(self.spec, m)
        machines.remove_cloud_dirs(self.spec)
        s3server.stop(self.spec.name, gateway)
        network.bridge_down(self.spec)
        if own_state_dir and self.spec.state_path.exists():
            shutil.rmtree(self.spec.state_path)
        if not quiet:
            self.log(f"cloud '{self.spec.name}' is down; nothing of it is left")

    # ------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """Machines with IP, state and memory; the S3 endpoint; the contract path."""
        state = self._state()
        spec = state.spec if state else self.spec
        rows = []
        for m in spec.machines():
            running = state is not None and machines.is_launcher(state.launcher_pids.get(m.name), m.name)
            rows.append(
                {
                    "name": m.name,
                    "role": m.role,
                    "ip": m.ip,
                    "state": readiness.system_state(spec, m) if running else "stopped",
                    "memory_mib": round(machines.rss_bytes(m) / 2**20, 1) if running else 0.0,
                }
            )
        s3_up = state is not None and s3server.is_server(state.s3_pid, spec.name)
        return {
            "name": spec.name,
            "up": state is not None,
            "release": spec.release,
            "machines": rows,
            "s3_endpoint_url": spec.s3_endpoint_url if s3_up else None,
            "contract": str(self.outputs_path) if self.outputs_path.exists() else None,
        }
