"""The session cluster's handle for the cluster tests: ansible-playbook and ssh against it, alive nodes."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rayops.ansible_env import BIN, REPO, ansible_env
from rayops.localcloud.cloud import LocalCloud

__all__ = [
    "DASHBOARD_PORT",
    "DATASET",
    "RAY_CLIENT",
    "REPO",
    "SESSION_GROUP_VARS",
    "VENV",
    "RayCluster",
    "ServeApi",
    "one_row",
    "open_tunnel",
    "pointer_and_model",
    "ray_session",
    "raylets",
    "recap",
    "train_worker_machines",
    "wait_head_restarted",
    "wait_healthy",
    "worker_serve",
]

# The seed lab's dataset: CI runs with ../shared beside the repo.
DATASET = REPO.parent / "shared" / "data" / "powerconsumption.csv"

# The session cluster runs with the whole-cluster Molecule scenario's variables (a venv and a dashboard port
# that are not the defaults), so that every playbook the suite runs proves it takes them from the rayops role,
# and the scenario's converge, idempotence and verify are this session's (test_cluster_contract.py).
SESSION_GROUP_VARS = REPO / "molecule" / "cluster" / "inventory" / "group_vars"
_SESSION_VARS: dict[str, Any] = yaml.safe_load((SESSION_GROUP_VARS / "all.yml").read_text(encoding="utf-8"))
_ROLE_DEFAULTS: dict[str, Any] = yaml.safe_load(
    (REPO / "roles" / "rayops" / "defaults" / "main.yml").read_text(encoding="utf-8")
)


def _rendered(value: Any) -> str:
    return str(value).replace("{{ rayops_base_dir }}", _ROLE_DEFAULTS["rayops_base_dir"])


VENV = _rendered(_SESSION_VARS["rayops_venv"])
DASHBOARD_PORT = int(_SESSION_VARS["rayops_dashboard_port"])
DEFAULT_VENV = _rendered(_ROLE_DEFAULTS["rayops_venv"])  # what the scenario moves
DEFAULT_DASHBOARD_PORT = int(_ROLE_DEFAULTS["rayops_dashboard_port"])

RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass
class RayCluster:
    cloud: LocalCloud
    inventory: Path

    @property
    def head(self) -> str:
        return f"{self.cloud.spec.name}-head"

    @property
    def workers(self) -> list[str]:
        return [m.name for m in self.cloud.spec.machines() if m.role == "worker"]

    def secret_file(self, name: str) -> Path:
        """The controller's file of a token site.yml made for this cluster (.rayops/secrets/<cluster>/)."""
        return REPO / ".rayops" / "secrets" / self.cloud.spec.name / name

    def secret(self, name: str) -> str:
        """That token itself."""
        return self.secret_file(name).read_text(encoding="utf-8").strip()

    def playbook(self, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), *args],
            cwd=REPO,
            env=ansible_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        sys.stdout.write(proc.stdout[-4000:])
        return proc

    def ssh(self, machine: str, command: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        """Run ``command`` as root on a machine (the login user has passwordless sudo)."""
        argv = self.cloud.ssh_command(self.cloud.machine(machine), "sudo", "bash", "-c", _quote(command))
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def unit_invocation(self, machine: str, unit: str) -> str:
        out = self.ssh(machine, f"systemctl show --value --property=InvocationID {unit}")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def alive_nodes(self) -> int | None:
        """Alive nodes per `ray status` on the head, or None while the head does not answer."""
        out = self.ssh(
            self.head,
            "sudo -u ray bash -c 'set -a; . /etc/rayops/ray-client.env; set +a; "
            f"timeout 30 {VENV}/bin/ray status'",
            timeout=60,
        )
        if out.returncode != 0:
            return None
        section = out.stdout.split("Pending:")[0]
        return len(re.findall(r"node_[0-9a-f]+", section))

    def wait_alive(self, count: int, deadline_s: float) -> float:
        """Wait until ``count`` nodes are alive; return the seconds it took, fail after ``deadline_s``."""
        start = time.monotonic()
        while time.monotonic() - start < deadline_s:
            if self.alive_nodes() == count:
                return time.monotonic() - start
            time.sleep(2)
        raise AssertionError(
            f"{count} nodes were not alive within {deadline_s:.0f} s (last: {self.alive_nodes()})"
        )


def _quote(command: str) -> str:
    return "'" + command.replace("'", "'\"'\"'") + "'"


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    return {
        host: {"changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
        for host, changed, unreachable, failed in RECAP.findall(stdout)
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def open_tunnel(command: str, remote_ports: list[int]) -> Iterator[dict[int, int]]:
    """A printed ``ssh -N ... -L p:127.0.0.1:p ...`` run with each of ``remote_ports`` on a free local port
    (other tunnels may hold the printed ones); yields {remote port: local port} once the first one answers."""
    ports = {remote: free_port() for remote in remote_ports}
    for remote, local in ports.items():
        printed = f"-L {remote}:127.0.0.1:{remote}"
        assert printed in command, command
        command = command.replace(printed, f"-L {local}:127.0.0.1:{remote}")
    command = command.replace("ssh -N", "ssh -N -o ExitOnForwardFailure=yes", 1)
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        first = ports[remote_ports[0]]
        while time.monotonic() < deadline:
            assert proc.poll() is None, (
                f"the printed tunnel exited: {proc.stderr.read() if proc.stderr else ''}"
            )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", first)) == 0:
                    break
            time.sleep(0.5)
        yield ports
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class ServeApi:
    """The serving API through a tunnel: (status, JSON or text) of a call; -1 when nothing answers."""

    base: str
    token: str

    def call(
        self,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        method = "POST" if data is not None else "GET"
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310 (loopback)
        if token is None:
            token = self.token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the tunnel)
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode(errors="replace")
        except OSError as err:  # nothing listening behind the tunnel yet (a restart), a reset connection
            return -1, str(err)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


def one_row(api: ServeApi) -> dict[str, float]:
    status, info = api.call("/zone1/model")
    assert status == 200, info
    return dict.fromkeys(info["features"], 1.0)


ARTIFACTS = REPO / ".rayops" / "test-artifacts"


def wait_for_text(driver: Any, name: str, condition: Any, timeout: float) -> float:
    """Wait until ``condition(page text)`` holds in the browser; on failure keep a screenshot and the text in
    .rayops/test-artifacts/."""
    from selenium.webdriver.common.by import By

    start = time.monotonic()
    text = ""
    while time.monotonic() - start < timeout:
        text = driver.find_element(By.TAG_NAME, "body").text
        if condition(text):
            return time.monotonic() - start
        time.sleep(0.5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    (ARTIFACTS / f"{name}.txt").write_text(text, encoding="utf-8")
    raise AssertionError(
        f"{name}: not shown within {timeout:.0f} s; see {ARTIFACTS}/{name}.png\n{text[-2000:]}"
    )


# Issue 16's chaos tests (test_chaos_head, test_serve_heal): the head's faults and what must hold after them.
RAY_CLIENT = "sudo -u ray bash -c 'set -a; . /etc/rayops/ray-client.env; set +a; {}'"


@contextmanager
def worker_serve(cluster: RayCluster, worker: str, token: str) -> Iterator[ServeApi]:
    """Serve's HTTP proxy on ``worker`` (it listens on the worker's loopback) through an SSH tunnel of our
    own on a free local port: requests that never touch the head."""
    local = free_port()
    argv = cluster.cloud.ssh_command(cluster.cloud.machine(worker))
    argv[1:1] = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:8000"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        api = ServeApi(f"http://127.0.0.1:{local}", token)
        deadline = time.monotonic() + 120
        while (answer := api.call("/zone1/model"))[0] != 200:
            assert proc.poll() is None, (
                f"the tunnel to {worker} exited: {proc.stderr.read() if proc.stderr else ''}"
            )
            assert time.monotonic() < deadline, (
                f"{worker}'s Serve proxy did not answer within 120 s: {answer}"
            )
            time.sleep(0.5)
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def pointer_and_model(cluster: RayCluster, first_run: dict[str, Any], api: ServeApi) -> tuple[Any, str]:
    """Zone 1's current.json (parsed) and the run the API serves."""
    bucket, _, key = first_run["current_uri"].removeprefix("s3://").partition("/")
    pointer = json.loads(cluster.cloud.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    status, info = api.call("/zone1/model")
    assert status == 200, info
    return pointer, info["run_id"]


def raylets(cluster: RayCluster) -> dict[str, tuple[str, str]]:
    """Each worker's raylet PID and ray-worker invocation: a change means the worker left the cluster."""
    found = {}
    for worker in cluster.workers:
        pid = cluster.ssh(worker, "pgrep -x raylet").stdout.split()
        found[worker] = (" ".join(pid), cluster.unit_invocation(worker, "ray-worker"))
    return found


# Run on the head as `ray`: the IPs of the nodes that hold an ALIVE Ray Train worker actor, per Ray's state
# API (a process title on a machine may be a worker of an earlier group that has not exited yet).
_TRAIN_WORKER_IPS = """
import json
from ray.util.state import list_actors, list_nodes
ips = {n.node_id: n.node_ip for n in list_nodes(limit=1000)}
alive = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], limit=1000)
print(json.dumps(sorted({ips[a.node_id] for a in alive if a.node_id in ips})))
"""


def train_worker_machines(cluster: RayCluster) -> list[str]:
    """The machines whose Ray node holds an ALIVE Ray Train worker of the running group (workers first)."""
    code = base64.b64encode(_TRAIN_WORKER_IPS.encode()).decode()
    out = cluster.ssh(
        cluster.head,
        RAY_CLIENT.format(f"echo {code} | base64 -d | timeout 60 {VENV}/bin/python -"),
        timeout=90,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ips = set(json.loads(out.stdout.strip().splitlines()[-1]))
    return [name for name in [*cluster.workers, cluster.head] if cluster.cloud.machine(name).ip in ips]


def ray_session(cluster: RayCluster) -> str:
    """The head's Ray session folder: a new one means a new cluster."""
    out = cluster.ssh(cluster.head, "readlink -f /var/lib/ray/private/ray/session_latest")
    return out.stdout.strip()


def wait_head_restarted(cluster: RayCluster, before: str, deadline_s: float) -> None:
    """Until ray-head runs a new invocation (so a dying head's answer never counts as back)."""
    start = time.monotonic()
    while cluster.unit_invocation(cluster.head, "ray-head") == before:
        assert time.monotonic() - start < deadline_s, (
            f"systemd did not restart ray-head within {deadline_s} s"
        )
        time.sleep(0.5)


def wait_healthy(cluster: RayCluster, deadline_s: float) -> None:
    """Until the head's GCS answers `ray health-check`, its Jobs API answers (the dashboard: what train.yml
    and serve.yml talk to) and all three nodes are alive. With GCS fault tolerance "3 alive" alone is not
    enough: the GCS reloads the old head's node as alive until it notices it is gone (a train.yml started
    then found no Jobs API)."""
    start = time.monotonic()
    address = f"{cluster.cloud.machine(cluster.head).ip}:6379"
    checks = {
        "GCS": RAY_CLIENT.format(f"timeout 20 {VENV}/bin/ray health-check --address={address}"),
        "Jobs API": RAY_CLIENT.format(f"timeout 20 {VENV}/bin/ray job list"),
    }
    for name, check in checks.items():
        while cluster.ssh(cluster.head, check).returncode != 0:
            if time.monotonic() - start >= deadline_s:
                journal = cluster.ssh(
                    cluster.head,
                    "systemctl show ray-head -p NRestarts -p ActiveState; "
                    "journalctl -u ray-head -n 400 --no-pager | grep -E "
                    "'Exception|Timed out|exited unexpectedly|exit code|Scheduled restart' | tail -n 12",
                )
                raise AssertionError(
                    f"the head's {name} did not answer within {deadline_s} s: {journal.stdout}"
                )
            time.sleep(1)
    cluster.wait_alive(3, deadline_s=max(deadline_s - (time.monotonic() - start), 10))
