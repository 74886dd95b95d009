"""Ray's own tools find the cluster (issue 18).

The login user's `ray` on the head, Ray's CLI on the controller through the tunnel site.yml prints (`python`
and `--working-dir` jobs), and site.yml's lines saying where each token lives. On the session cluster; ~60 s
in all (a no-change site.yml for its output, two small jobs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cluster_helpers import REPO, RayCluster

from rayops.ansible_env import BIN, ansible_env

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


def test_site_says_where_each_token_lives_and_never_prints_one(
    ray_cluster: RayCluster, site_output: str
) -> None:
    ray_token, jupyter_token = (
        ray_cluster.secret_file("ray_auth_token"),
        ray_cluster.secret_file("jupyter_token"),
    )
    assert (
        f"it asks for the cluster token: paste the contents of {ray_token} on the controller" in site_output
    )
    assert f"/lab - its token: {jupyter_token} on the controller" in site_output
    serve_token = ray_cluster.secret_file("serve_token")  # serve.yml writes it; site.yml names it
    assert (
        f"Authorization: Bearer <token> (answers once serve.yml deployed the model); its token: {serve_token}"
        in (site_output)
    )
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


def _submit(ray_cluster: RayCluster, port: int, *argv: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(
        RAY_ADDRESS=f"http://127.0.0.1:{port}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(ray_cluster.secret_file("ray_auth_token")),
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


def test_ray_job_submit_python_through_the_tunnel(ray_cluster: RayCluster, tunnel: dict[str, int]) -> None:
    """Ray's documented form, `ray job submit -- python ...`, from the controller through the tunnel."""
    code = "import ray; ray.init(); print('CPUS', ray.cluster_resources()['CPU'])"
    proc = _submit(ray_cluster, tunnel["dashboard"], "--", "python", "-c", code)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "CPUS 3.0" in proc.stdout, proc.stdout[-3000:]


def test_ray_job_submit_with_a_working_dir(
    ray_cluster: RayCluster, tunnel: dict[str, int], tmp_path: Path
) -> None:
    (tmp_path / "mymodule.py").write_text("ANSWER = 41\n", encoding="utf-8")
    code = "import mymodule; print('answer', mymodule.ANSWER + 1)"
    proc = _submit(
        ray_cluster, tunnel["dashboard"], "--working-dir", str(tmp_path), "--", "python", "-c", code
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "answer 42" in proc.stdout, proc.stdout[-3000:]


def test_train_yml_shows_every_stage_once_in_order_and_takes_train_params(ray_cluster: RayCluster) -> None:
    """train.yml's output: each stage's start and end once, in order, boosting progress every report_every
    rounds, the promotion decision; train_params reach the run. Zone 3, so zone 1's runs (test_train_flow)
    are untouched. ~45 s."""
    dataset = REPO.parent / "shared" / "data" / "powerconsumption.csv"
    params = '{"train_params": {"num_boost_round": 60, "report_every": 20}}'
    run = ray_cluster.playbook(
        "train.yml",
        "-e",
        f"dataset={dataset}",
        "-e",
        "target_zone=3",
        "-e",
        "train_run_id=tools-z3",
        "-e",
        params,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    out = " ".join(run.stdout.split())
    stages = ["ingest", "features", "train", "evaluate", "artifacts"]
    marks = [
        f"stage {i}/5 {name}: {what}" for i, name in enumerate(stages, 1) for what in ("started", "done in")
    ]
    positions = []
    for mark in marks:
        assert out.count(mark) == 1, f"{mark!r} appears {out.count(mark)} times"
        positions.append(out.index(mark))
    assert positions == sorted(positions), "stage lines out of order"
    rounds = re.findall(r"train: round (\d+)/60 holdout", out)
    assert rounds == ["20", "40"], rounds  # every report_every rounds (the last is in the final metrics)
    assert re.search(r"evaluate: (promote|do not promote: )", out), out[-3000:]
    kept = REPO / ".rayops" / "runs" / "tools-z3"
    try:
        metrics = json.loads((kept / "metrics.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    assert metrics["params"]["num_boost_round"] == 60, metrics["params"]
