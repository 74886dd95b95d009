"""Token auth enforced on the cluster, tokens never printed, the printed tunnel works (issue 19).

Every check sends a real request: to the Jobs API and JupyterLab on the head (through `ssh` as root, and
through the `ssh -L` command site.yml prints: the session's tunnel fixture), and a driver's `ray.init()` to
the head's GCS. On the session cluster: ~35 s for the drivers (a refused one retries ~10 s), ~20 s for one
train.yml (an s3:// dataset from the raw bucket with train_params), under a second for the rest."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import DASHBOARD_PORT, REPO, VENV, RayCluster

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]
DATASET = REPO.parent / "shared" / "data" / "powerconsumption.csv"
RUN_ID = "rsec-s3-params"
PY = f"{VENV}/bin/python"


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a GET (an error status is an answer too)."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310  (http to a test machine)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def statuses_on_head(ray_cluster: RayCluster, url: str, headers: list[dict[str, str]]) -> list[int]:
    """GET ``url`` on the head once per headers dict; the statuses, in order (401/403 are answers)."""
    code = (
        "import json, sys, urllib.request, urllib.error\n"
        "out = []\n"
        f"for h in json.loads({json.dumps(json.dumps(headers))}):\n"
        f"    r = urllib.request.Request({url!r}, headers=h)\n"
        "    try:\n"
        "        out.append(urllib.request.urlopen(r, timeout=20).status)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        out.append(e.code)\n"
        "print('STATUSES', json.dumps(out))\n"
    )
    run = ray_cluster.ssh(ray_cluster.head, f"{PY} -c {shlex.quote(code)}")
    assert run.returncode == 0, run.stdout + run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("STATUSES "))
    statuses: list[int] = json.loads(line.removeprefix("STATUSES "))
    return statuses


# --- point 1: token auth enforced -------------------------------------------------------------------


def check_refused_without_token(ray_cluster: RayCluster, url: str, scheme: str, secret_name: str) -> None:
    """GET ``url`` on the head: no Authorization and a wrong token are refused, the token is let in."""
    token = ray_cluster.secret(secret_name)
    none, wrong, right = statuses_on_head(
        ray_cluster,
        url,
        [{}, {"Authorization": f"{scheme} not-the-token"}, {"Authorization": f"{scheme} {token}"}],
    )
    assert none in (401, 403) and wrong in (401, 403) and right == 200, (none, wrong, right)


def check_jobs_api_needs_the_token(ray_cluster: RayCluster) -> None:
    check_refused_without_token(
        ray_cluster, f"http://127.0.0.1:{DASHBOARD_PORT}/api/jobs/", "Bearer", "ray_auth_token"
    )


def test_jobs_api_refuses_requests_without_the_token(ray_cluster: RayCluster) -> None:
    check_jobs_api_needs_the_token(ray_cluster)


def driver_init(ray_cluster: RayCluster, token_env: str) -> subprocess.CompletedProcess[str]:
    """`ray.init()` of a driver on the head, as root with an empty HOME (no ~/.ray/auth_token) and only
    the given token settings; prints CONNECTED with the cluster's CPUs when it joined."""
    head_ip = ray_cluster.cloud.machine(ray_cluster.head).ip
    code = "import ray; ray.init(); print('CONNECTED', ray.cluster_resources().get('CPU'))"
    command = (
        "home=$(mktemp -d); env -i HOME=$home PATH=/usr/bin:/bin RAY_USAGE_STATS_ENABLED=0 "
        f"RAY_ADDRESS={head_ip}:6379 RAY_AUTH_MODE=token {token_env} "
        f"timeout 60 {PY} -c {shlex.quote(code)}; rc=$?; rm -rf $home; exit $rc"
    )
    run = ray_cluster.ssh(ray_cluster.head, command, timeout=150)
    print(f"ray.init() with {token_env or 'no token'}: rc={run.returncode}\n{run.stderr.strip()[-4000:]}")
    return run


def check_driver_needs_the_token(ray_cluster: RayCluster) -> None:
    head_ip = ray_cluster.cloud.machine(ray_cluster.head).ip
    # No token: Ray's client refuses before it connects (the cluster runs in token mode, so must the driver).
    none = driver_init(ray_cluster, "")
    assert none.returncode != 0 and "CONNECTED" not in none.stdout, none.stdout[-1000:]
    assert "Token authentication is enabled but no authentication token was found" in none.stderr
    # A wrong token, and a driver with auth off (no token sent): the cluster's GCS refuses the connection.
    for token_env in ("RAY_AUTH_TOKEN=not-the-token", "RAY_AUTH_MODE=disabled"):
        refused = driver_init(ray_cluster, token_env)
        assert refused.returncode != 0 and "CONNECTED" not in refused.stdout, refused.stdout[-1000:]
        assert "InvalidAuthToken: Authentication token is missing or incorrect" in refused.stderr, token_env
        assert f"ConnectionError: Failed to connect to Ray cluster at {head_ip}:6379" in refused.stderr
    joined = driver_init(ray_cluster, "RAY_AUTH_TOKEN_PATH=/etc/rayops/ray_auth_token")
    assert joined.returncode == 0 and "CONNECTED 3.0" in joined.stdout, joined.stdout + joined.stderr[-2000:]


def test_driver_without_the_token_cannot_join(ray_cluster: RayCluster) -> None:
    check_driver_needs_the_token(ray_cluster)


def check_jupyterlab_needs_its_token(ray_cluster: RayCluster) -> None:
    check_refused_without_token(ray_cluster, "http://127.0.0.1:8888/api/kernels", "token", "jupyter_token")


def test_jupyterlab_refuses_requests_without_its_token(ray_cluster: RayCluster) -> None:
    check_jupyterlab_needs_its_token(ray_cluster)


# --- point 2 (and point 7: s3:// datasets, train_params): tokens never printed -------------------------


@pytest.fixture(scope="module")
def s3_train_run(
    ray_cluster: RayCluster,
) -> Iterator[tuple[subprocess.CompletedProcess[str], dict[str, Any]]]:
    """train.yml with an s3:// dataset in the cluster's raw bucket and train_params; its output, metrics."""
    if not DATASET.exists():
        pytest.fail(f"{DATASET} is missing: CI must run with ../shared beside the repo")
    raw = ray_cluster.cloud.spec.buckets()["raw"]
    ray_cluster.cloud.s3_client().upload_file(str(DATASET), raw, "inputs/powerconsumption.csv")
    proc = ray_cluster.playbook(
        "train.yml",
        "-e",
        f"dataset=s3://{raw}/inputs/powerconsumption.csv",
        "-e",
        f"train_run_id={RUN_ID}",
        "-e",
        # 123 rounds of depth 5 are ~4 % worse on the holdout than the defaults zone 1's live model was
        # trained with: the tolerance lets this run promote whichever runs first in the session.
        json.dumps({"train_params": {"num_boost_round": 123, "max_depth": 5, "live_tolerance": 0.2}}),
    )
    try:
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        metrics = json.loads((REPO / ".rayops" / "runs" / RUN_ID / "metrics.json").read_text())
        yield proc, metrics
    finally:
        shutil.rmtree(REPO / ".rayops" / "runs" / RUN_ID, ignore_errors=True)


def test_train_yml_reads_an_s3_dataset_and_applies_train_params(
    s3_train_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]], ray_cluster: RayCluster
) -> None:
    _, metrics = s3_train_run
    raw = ray_cluster.cloud.spec.buckets()["raw"]
    assert metrics["dataset"] == f"s3://{raw}/inputs/powerconsumption.csv"
    assert (metrics["params"]["num_boost_round"], metrics["params"]["max_depth"]) == (123, 5)
    assert metrics["run_id"] == RUN_ID


def job_logs(ray_cluster: RayCluster, submission_id: str) -> str:
    token = ray_cluster.secret("ray_auth_token")
    code = (
        "import json, sys, urllib.request\n"
        f"r = urllib.request.Request('http://127.0.0.1:{DASHBOARD_PORT}/api/jobs/{submission_id}/logs',"
        " headers={'Authorization': 'Bearer ' + open('/etc/rayops/ray_auth_token').read().strip()})\n"
        "print(json.load(urllib.request.urlopen(r, timeout=30))['logs'])\n"
    )
    run = ray_cluster.ssh(ray_cluster.head, f"{PY} -c {shlex.quote(code)}")
    assert run.returncode == 0, run.stderr
    assert token not in run.stderr
    return run.stdout


def test_no_token_in_site_train_or_job_output(
    ray_cluster: RayCluster,
    site_output: str,
    s3_train_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    train, _ = s3_train_run
    logs = job_logs(ray_cluster, f"rayops-train-{RUN_ID}")
    assert "ingest:" in logs and "train" in logs, logs[-2000:]  # the job's log, not an empty answer
    outputs = {
        "site.yml": site_output,  # the session's no-change run (tests/cluster/conftest.py)
        "train.yml": train.stdout + train.stderr,
        "the job's log": logs,
    }
    check_no_token_in(ray_cluster, outputs)


def check_no_token_in(ray_cluster: RayCluster, outputs: dict[str, str]) -> None:
    for name in ("ray_auth_token", "jupyter_token"):
        token = ray_cluster.secret(name)
        assert len(token) >= 16, name
        for where, text in outputs.items():
            assert token not in text, f"the {name} is printed in {where}"


# --- point 3: the printed ssh -L tunnel ---------------------------------------------------------------


def test_the_printed_tunnel_reaches_the_dashboard_and_jupyterlab(
    ray_cluster: RayCluster, tunnel: dict[str, int]
) -> None:
    """Through the `ssh -L` command site.yml prints (run by the session's tunnel fixture, local ports
    swapped for free ones): the dashboard and JupyterLab answer, and each asks for its own token."""
    ray_token, jupyter_token = ray_cluster.secret("ray_auth_token"), ray_cluster.secret("jupyter_token")
    jobs = f"http://127.0.0.1:{tunnel['dashboard']}/api/jobs/"
    kernels = f"http://127.0.0.1:{tunnel['jupyterlab']}/api/kernels"
    assert http_status(jobs) in (401, 403)  # reached: the dashboard itself refuses
    assert http_status(jobs, {"Authorization": f"Bearer {ray_token}"}) == 200
    assert http_status(kernels) in (401, 403)
    assert http_status(kernels, {"Authorization": f"token {jupyter_token}"}) == 200


# --- point 7: the S3 endpoint listens on the bridge only ----------------------------------------------


def check_s3_on_the_bridge_only(ray_cluster: RayCluster) -> None:
    spec = ray_cluster.cloud.spec
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{spec.s3_port}"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    addresses = sorted({line.split()[3] for line in listening if line.strip()})
    assert addresses == [f"{spec.gateway}:{spec.s3_port}"], addresses
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", spec.s3_port)) != 0  # not on loopback (nor 0.0.0.0)
    # ... and a machine reaches it there.
    probe = f"(exec 3<>/dev/tcp/{spec.gateway}/{spec.s3_port}) && echo OPEN"
    assert "OPEN" in ray_cluster.ssh(ray_cluster.head, probe).stdout


def test_s3_endpoint_listens_on_the_bridge_only(ray_cluster: RayCluster) -> None:
    check_s3_on_the_bridge_only(ray_cluster)
