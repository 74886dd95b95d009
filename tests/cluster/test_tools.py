"""Ray's own tools find the cluster (issue 18).

The login user's `ray` on the head, Ray's CLI on the controller through the tunnel site.yml prints (`python`
and `--working-dir` jobs), and site.yml's lines saying where each token lives. On the session cluster; ~60 s
in all (a no-change site.yml for its output, two small jobs)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import REPO, RayCluster

from rayops.ansible_env import BIN, ansible_env

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


@pytest.fixture(scope="module")
def site_output(ray_cluster: RayCluster) -> str:
    """The output of a no-change site.yml on the converged cluster, whitespace folded to single spaces."""
    run = ray_cluster.playbook("site.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    return " ".join(run.stdout.split())


def _secret(ray_cluster: RayCluster, name: str) -> Path:
    return REPO / ".rayops" / "secrets" / ray_cluster.cloud.spec.name / name


def test_site_says_where_each_token_lives_and_never_prints_one(
    ray_cluster: RayCluster, site_output: str
) -> None:
    ray_token, jupyter_token = _secret(ray_cluster, "ray_auth_token"), _secret(ray_cluster, "jupyter_token")
    assert (
        f"it asks for the cluster token: paste the contents of {ray_token} on the controller" in site_output
    )
    assert f"/lab - its token: {jupyter_token} on the controller" in site_output
    for token in (ray_token, jupyter_token):
        assert token.read_text(encoding="utf-8").strip() not in site_output


def test_login_user_runs_ray_status_list_and_job_list_on_the_head(ray_cluster: RayCluster) -> None:
    head = ray_cluster.cloud.machine(ray_cluster.head)
    for argv, expect in (
        (["ray", "status"], "Active:"),
        (["ray", "list", "nodes"], "ALIVE"),
        (["ray", "job", "list"], "Job submission server address"),
    ):
        start = time.monotonic()
        proc = subprocess.run(
            ray_cluster.cloud.ssh_command(head, *argv),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        print(f"login user: {' '.join(argv)} rc={proc.returncode} in {time.monotonic() - start:.1f} s")
        plain = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)  # Ray's CLI colours its log lines
        assert proc.returncode == 0 and expect in plain, proc.stdout[-2000:] + proc.stderr[-2000:]
    # ... without loosening who may read the token
    mode = ray_cluster.ssh(ray_cluster.head, "stat -c '%a %U %G' /etc/rayops/ray_auth_token")
    assert mode.stdout.split() == ["640", "root", "ray"], mode.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tunnel(site_output: str) -> Iterator[int]:
    """site.yml's printed tunnel command, run as printed but with a free local port for the dashboard."""
    match = re.search(r"Tunnel \(leave it running\): (ssh -N .*?@\d+\.\d+\.\d+\.\d+)", site_output)
    assert match, site_output[-3000:]
    local = _free_port()
    command = match.group(1).replace("-L 8265:127.0.0.1:8265", f"-L {local}:127.0.0.1:8265")
    assert f"-L {local}:" in command, command
    command = command.replace("-L 8888:127.0.0.1:8888", f"-L {_free_port()}:127.0.0.1:8888")
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command} -o ExitOnForwardFailure=yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (
                f"the printed tunnel exited: {proc.stderr.read() if proc.stderr else ''}"
            )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", local)) == 0:
                    break
            time.sleep(0.5)
        yield local
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _submit(ray_cluster: RayCluster, port: int, *argv: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(
        RAY_ADDRESS=f"http://127.0.0.1:{port}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(_secret(ray_cluster, "ray_auth_token")),
    )
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(f"ray job submit {' '.join(argv)[:60]}... rc={proc.returncode} in {time.monotonic() - start:.1f} s")
    return proc


def test_ray_job_submit_python_through_the_tunnel(ray_cluster: RayCluster, tunnel: int) -> None:
    """Ray's documented form, `ray job submit -- python ...`, from the controller through the tunnel."""
    proc = _submit(
        ray_cluster,
        tunnel,
        "--",
        "python",
        "-c",
        "import ray; ray.init(); print('CPUS', ray.cluster_resources()['CPU'])",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "CPUS 3.0" in proc.stdout, proc.stdout[-3000:]


def test_ray_job_submit_with_a_working_dir(ray_cluster: RayCluster, tunnel: int, tmp_path: Path) -> None:
    (tmp_path / "mymodule.py").write_text("ANSWER = 41\n", encoding="utf-8")
    proc = _submit(
        ray_cluster,
        tunnel,
        "--working-dir",
        str(tmp_path),
        "--",
        "python",
        "-c",
        "import mymodule; print('answer', mymodule.ANSWER + 1)",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "answer 42" in proc.stdout, proc.stdout[-3000:]
