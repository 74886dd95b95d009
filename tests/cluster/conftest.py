"""A converged rayops cluster on a local cloud of its own, for the fault tests; always torn down."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lanes  # tests/lanes.py: the gate `make test` opens when Molecule has ended
import pytest
from cluster_helpers import (
    DASHBOARD_PORT,
    DATASET,
    REPO,
    SESSION_GROUP_VARS,
    RayCluster,
    ServeApi,
    open_tunnel,
)

from rayops.localcloud.cloud import CloudSpec, LocalCloud

# The session cluster's modules in this order: the quiet checks of the converged cluster and train.yml,
# then the faults (they leave it healthy), then what builds on trained models: tracking, serving, monitoring
# (its dashboards need serving traffic), the head's chaos at the very end. Modules not named run first.
MODULE_ORDER = (
    # Quiet checks first (no bound that a loaded host could miss): under `make test` they run while Molecule's
    # last scenarios still run (tests/lanes.py); their relative order is the one they always had.
    "test_cluster_contract",  # Molecule's cluster scenario's verify, on the freshly converged cluster
    "test_firewall",
    "test_security",
    "test_tools",
    "test_browser",
    "test_train_flow",
    # From here on, under `make test`, only once Molecule has ended (GATED_FROM): fault bounds, chaos rows,
    # alert timings, rollouts under load. The faults leave the cluster healthy for what follows.
    "test_faults",
    "test_node_security",  # issue 15: venv, Ray's files, metadata service (a 1 s wait), Jupyter terminals
    "test_chaos_train",  # issue 16: training faults, zone 3 only; leaves 3 nodes alive and S3 running
    "test_mlflow",
    "test_serve",
    "test_model_quality",  # after test_serve's rollouts: the model served from then on; before the panels
    "test_unit_hardening",  # issue 15: after serve.yml, whose keeper unit it measures too
    "test_monitoring",
    "test_chaos_head",  # issue 16: GCS killed, head rebooted, head disk full (the same cluster after each)
    "test_serve_heal",  # the head's Ray restarted under Serve load on a worker's proxy
)
GATED_FROM = "test_faults"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else -1

    items.sort(key=rank)  # stable: the order inside a module stays


# `make test` (tests/lanes.py) starts this session while Molecule's last scenarios still run: the session
# cluster boots and converges beside them and the quiet modules run; the modules from GATED_FROM on (fault
# bounds, chaos rows, alert timings) wait until the Molecule lane has ended, which the lane runner marks by
# creating the file RAYOPS_QUIET_GATE names.
# Unset (`make test-cluster`, pytest by hand): no wait.
def wait_for_quiet_host(config: pytest.Config) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:  # past pytest's capture: the lane's log shows why the lane stands still
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            sys.stdout.write(f"\n{line}\n")
            sys.stdout.flush()

    try:
        lanes.wait_for_gate(say)
    except TimeoutError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """Three machines of its own (name, subnet and port apart from every other cloud), site.yml applied with
    the variables of Molecule's cluster scenario (cluster_helpers.SESSION_GROUP_VARS).

    One per session: the fault tests leave it healthy, and the training tests run on it after them.
    """
    state = tmp_path_factory.mktemp("fault") / "state"
    # RAYOPS_TEST_CLUSTER="name subnet port": a second engineer's run gets a cloud of its own on this host.
    name, subnet, port = os.environ.get("RAYOPS_TEST_CLUSTER", "rfault 10.213.171.0/24 5771").split()
    spec = CloudSpec(name=name, workers=2, subnet=subnet, s3_port=int(port), state_dir=str(state))
    cloud = LocalCloud(spec)
    cloud.up()  # cleans up after itself on failure; never touches a cloud of the same name it did not make
    try:
        inventory = state / "cluster.pulumi_stack.yml"
        inventory.write_text(f"plugin: pulumi_stack\noutputs_file: {cloud.outputs_path.resolve()}\n")
        # Beside the inventory, Molecule's cluster scenario's group_vars (a venv and a dashboard port of its
        # own): this session is that scenario's converge, idempotence and verify (test_cluster_contract.py).
        (state / "group_vars").symlink_to(SESSION_GROUP_VARS, target_is_directory=True)
        cluster = RayCluster(cloud, inventory)
        site = cluster.playbook("site.yml")
        assert site.returncode == 0, f"site.yml failed:\n{site.stdout[-4000:]}\n{site.stderr[-2000:]}"
        yield cluster
    finally:
        cloud.down()


@pytest.fixture(scope="module", autouse=True)
def _quiet_host_for_timed_modules(request: pytest.FixtureRequest) -> None:
    """The modules from GATED_FROM on wait for Molecule's end under `make test` (no-op elsewhere)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    if name in MODULE_ORDER and MODULE_ORDER.index(name) >= MODULE_ORDER.index(GATED_FROM):
        wait_for_quiet_host(request.config)


@pytest.fixture(scope="session")
def runs_dir() -> Iterator[Path]:
    """The controller's copies of the runs (.rayops/runs/<id>/); the ones this session made go after it."""
    runs = REPO / ".rayops" / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    yield runs
    for run in set(runs.iterdir()) - before if runs.is_dir() else ():
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="session")
def first_run(ray_cluster: RayCluster, runs_dir: Path) -> dict[str, Any]:
    """train.yml's first run on the session cluster (promoted); the serving and tracking tests use it too."""
    if not DATASET.exists():
        pytest.fail(f"{DATASET} is missing: CI must run with ../shared beside the repo")
    proc = ray_cluster.playbook("train.yml", "-e", f"dataset={DATASET}", "-e", "train_run_id=e2e-first")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    metrics: dict[str, Any] = json.loads((runs_dir / "e2e-first" / "metrics.json").read_text())
    metrics["_play_output"] = proc.stdout
    return metrics


@pytest.fixture(scope="session")
def site_rerun(ray_cluster: RayCluster) -> str:
    """The output of the session's one no-change site.yml on the converged cluster (~100 s under CI's load):
    the idempotence check, the printed tunnel and the printed addresses all read this one run."""
    run = ray_cluster.playbook("site.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    return run.stdout


@pytest.fixture(scope="session")
def site_output(site_rerun: str) -> str:
    """That output, whitespace folded to single spaces."""
    return " ".join(site_rerun.split())


# The services site.yml's tunnel forwards, by their port on the head (roles/rayops's defaults).
TUNNEL_NAMES = {
    DASHBOARD_PORT: "dashboard",  # the session's (Molecule's cluster scenario's), not 8265
    8888: "jupyterlab",
    8000: "serve",
    9090: "prometheus",
    9093: "alertmanager",
    3000: "grafana",
    5000: "mlflow",
}


@pytest.fixture(scope="session")
def tunnel(site_output: str) -> Iterator[dict[str, int]]:
    """site.yml's printed tunnel, run as printed but each forward on a free local port: {"dashboard": port}.

    Others run tunnels on this host at the same time, so no printed local port is used as is (a taken one
    would stop the tunnel: ExitOnForwardFailure).
    """
    match = re.search(r"Tunnel \(leave it running\): (ssh -N .*?@\d+\.\d+\.\d+\.\d+)", site_output)
    assert match, site_output[-3000:]
    forwards = re.findall(r"-L (\d+):127\.0\.0\.1:(\d+)", match.group(1))
    assert forwards and all(local == remote for local, remote in forwards), match.group(1)
    assert int(forwards[0][1]) == DASHBOARD_PORT, match.group(
        1
    )  # the dashboard first: open_tunnel waits for it
    with open_tunnel(match.group(1), [int(remote) for _, remote in forwards]) as ports:
        named = {TUNNEL_NAMES.get(remote, str(remote)): local for remote, local in ports.items()}
        assert {"dashboard", "jupyterlab", "serve"} <= set(named), match.group(1)
        yield named


@pytest.fixture(scope="session")
def served(ray_cluster: RayCluster, first_run: dict[str, Any]) -> dict[str, Any]:
    """serve.yml once; the run it must serve is zone 1's promoted pointer (earlier tests of the session may
    have promoted runs after first_run)."""
    proc = ray_cluster.playbook("serve.yml")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    bucket, _, key = first_run["current_uri"].removeprefix("s3://").partition("/")
    pointer = json.loads(ray_cluster.cloud.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    return {"output": " ".join(proc.stdout.split()), "run_id": pointer["run_id"]}


@pytest.fixture(scope="session")
def serve_api(ray_cluster: RayCluster, served: dict[str, Any]) -> Iterator[ServeApi]:
    """serve.yml's printed tunnel, run as printed but on a free local port."""
    match = re.search(r"Tunnel \(leave it running\): (ssh -N .*?@\d+\.\d+\.\d+\.\d+)", served["output"])
    assert match, served["output"][-3000:]
    with open_tunnel(match.group(1), [8000]) as ports:
        yield ServeApi(f"http://127.0.0.1:{ports[8000]}", ray_cluster.secret("serve_token"))


CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's chromium and chromium-driver, from make setup), driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which("chromium") and Path(CHROMEDRIVER).exists(), (
        "the browser tests need Debian's chromium and chromium-driver: run `make setup` (as root)"
    )
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
