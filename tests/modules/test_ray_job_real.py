"""ray_job and its action plugin against a real Ray Jobs API: a local Ray with its dashboard and
token authentication, driven by ansible-playbook on localhost as train.yml drives the head (~25 s
here: ~8 s to start Ray, a few seconds per job). The env file carries the token settings, as
/etc/rayops/ray-client.env does on the cluster."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayops.ansible_env import BIN, REPO, ansible_env

HEAD = """
import signal, sys, time, ray
ray.init(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=int(sys.argv[1]), num_cpus=1,
         _temp_dir=sys.argv[2], log_to_driver=False)
print("READY", flush=True)
signal.signal(signal.SIGTERM, lambda *_: (ray.shutdown(), sys.exit(0)))
while True:
    time.sleep(1)
"""
ELAPSED = re.compile(r"^\s*\d+:\d\d (\S.*)$")
# Prints lines with pauses, an empty line after each, and the metrics line, as the workflow does.
JOB = """
import sys, time
for i in range(6):
    print(f"[rayops] line {i}")
    print()
    sys.stdout.flush()
    time.sleep(0.4)
print('RAYOPS_METRICS_JSON={"run_id": "real"}')
"""


@pytest.fixture(scope="module")
def jobs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("ray-head")
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    env_file = folder / "ray-client.env"
    env_file.write_text(f"RAY_AUTH_MODE=token\nRAY_AUTH_TOKEN_PATH={token}\n")
    (folder / "job.py").write_text(JOB)
    port = _free_port()
    # Ray's session folder holds AF_UNIX sockets (107 bytes at most): a short path, not pytest's
    ray_dir = tempfile.mkdtemp(prefix="rayjob-", dir="/tmp")
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD, str(port), ray_dir],
        env={**ansible_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert head.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = head.stdout.readline()
        lines.append(line)
        if line.startswith("READY") or head.poll() is not None:
            break
    assert lines and lines[-1].startswith("READY"), "".join(lines)[-3000:]
    yield {"address": f"http://127.0.0.1:{port}", "env_file": str(env_file), "folder": str(folder)}
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    shutil.rmtree(ray_dir, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def play(api: dict[str, str], tasks: list[dict[str, Any]], *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``tasks`` on localhost with the module's defaults pointed at the test's Jobs API."""
    for task in tasks:
        if "ray_job" in task:
            task["ray_job"] = {"address": api["address"], "env_file": api["env_file"], **task["ray_job"]}
    playbook = Path(api["folder"]) / f"play-{secrets.token_hex(3)}.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "ray_job against a local Jobs API",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "tasks": tasks,
                }
            ],
            sort_keys=False,
        )
    )
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), *extra],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_submit_once_then_follow_prints_every_line_once_in_order(jobs_api: dict[str, str]) -> None:
    job = f"real-{secrets.token_hex(3)}"
    submit = {
        "name": "submit",
        "ray_job": {
            "submission_id": job,
            "state": "present",
            "entrypoint": f"python {jobs_api['folder']}/job.py",
        },
    }
    proc = play(
        jobs_api,
        [
            submit,
            {**submit, "name": "submit again", "register": "again"},
            {
                "name": "follow",
                "ray_job": {"submission_id": job, "state": "status", "follow": True, "wait_s": 5},
                "register": "_train_job",
            },
            {
                "name": "result",
                "ansible.builtin.copy": {
                    "content": "{{ {'followed': _train_job, 'again': again.changed} | to_json }}",
                    "dest": f"{jobs_api['folder']}/{job}.json",
                    "mode": "0644",
                },
            },
        ],
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout
    shown = [m.group(1) for m in map(ELAPSED.match, out.splitlines()) if m]
    ours = [line for line in shown if line.startswith(("[rayops]", "RAYOPS_METRICS_JSON"))]
    assert ours == [*(f"[rayops] line {i}" for i in range(6)), 'RAYOPS_METRICS_JSON={"run_id": "real"}'], out
    assert shown[-1] == f"job {job}: SUCCEEDED", out
    assert all(line.strip() for line in shown)  # the job's empty lines are not shown
    saved = json.loads(Path(jobs_api["folder"], f"{job}.json").read_text())
    result = saved["followed"]
    assert (result["status"], result["finished"], result["metrics"]) == (
        "SUCCEEDED",
        True,
        {"run_id": "real"},
    )
    assert saved["again"] is False  # the second submit found the job and submitted nothing


def test_stopped_stops_a_running_job(jobs_api: dict[str, str]) -> None:
    job = f"real-stop-{secrets.token_hex(3)}"
    proc = play(
        jobs_api,
        [
            {
                "name": "submit",
                "ray_job": {"submission_id": job, "state": "present", "entrypoint": "sleep 300"},
            },
            {"name": "stop", "ray_job": {"submission_id": job, "state": "stopped"}, "register": "stop"},
            {
                "name": "follow",
                "ray_job": {"submission_id": job, "state": "status", "follow": True, "wait_s": 5},
                "register": "_train_job",
            },
            {
                "name": "result",
                "ansible.builtin.debug": {"msg": "STOP={{ stop.changed }} END={{ _train_job.status }}"},
            },
        ],
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "STOP=True END=STOPPED" in proc.stdout


def test_one_job_per_zone_and_the_node_size_preflight_on_a_real_head(jobs_api: dict[str, str]) -> None:
    """Issue 16: a second job for a zone is refused naming the running run; a worker larger than every
    node (this head offers 1 CPU) is refused before submission, through Ray's state API with the token."""
    first, second = f"real-z-{secrets.token_hex(3)}", f"real-z-{secrets.token_hex(3)}"

    def submit(job: str, run: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": f"submit {job}",
            "ray_job": {
                "submission_id": job,
                "state": "present",
                "entrypoint": "sleep 300",
                "metadata": {"run_id": run, "target": "zone1"},
                "exclusive_key": "target",
                **extra,
            },
            "ignore_errors": True,
            "register": f"_{run}",
        }

    proc = play(
        jobs_api,
        [
            submit(first, "one"),
            submit(second, "two"),
            submit(second, "big", min_node_cpus=2, min_node_cpus_name="train_params.cpus_per_worker"),
            {"name": "stop", "ray_job": {"submission_id": first, "state": "stopped"}},
            {"name": "result", "ansible.builtin.debug": {"msg": "TWO={{ _two.msg }} BIG={{ _big.msg }}"}},
        ],
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    flat = " ".join(proc.stdout.split())
    assert f"TWO=Training run one (Ray job {first}, " in flat, flat[-3000:]
    assert "is already running for target zone1: wait for it to end" in flat, flat[-3000:]
    assert (
        "BIG=train_params.cpus_per_worker is 2, more than any node of the cluster offers: the largest offers "
        "1 CPU(s) to Ray, so pass at most 1 (nothing was submitted)."
    ) in flat, flat[-3000:]
