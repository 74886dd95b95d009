"""The local cloud's checks, its host side and `down`'s ownership rules, with no machine booted.

Not marked `localcloud` (that marker means machines): these run in `make test-unit`. Those that create
a bridge, read iptables or other processes' /proc need root and skip without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from localcloud_helpers import CLI, alive, cli, leftovers, needs_root, spec_for, stand_in

from rayops import contract
from rayops.localcloud import image, machines, s3server
from rayops.localcloud.cloud import RUNTIME_ROOT, CloudSpec, LocalCloud
from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.state import CloudState, Machine


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad_Name"}, "cloud name 'Bad_Name' is invalid"),
        ({"workers": -1}, "WORKERS=-1 is out of range"),
        ({"subnet": "10.213.7.0/33"}, "is not an IPv4 network"),
        ({"subnet": "10.213.7.0/29"}, "too small"),
        ({"s3_port": 80}, "S3 port 80 is out of range"),
    ],
)
def test_bad_spec_is_rejected_before_anything_happens(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LocalCloudError, match=message):
        LocalCloud(CloudSpec(**kwargs))  # type: ignore[arg-type]


def test_corrupt_cached_image_is_detected_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / image.image_id()
    (root / "usr/bin").mkdir(parents=True)
    (root / ".rayops-image").write_text("x")
    built: list[Path] = []

    def fake_build(path: Path, log: object, release: str) -> None:  # debootstrap runs in the cloud fixture
        built.append(path)

    monkeypatch.setattr(image, "build_image", fake_build)
    messages: list[str] = []
    image.ensure_image(tmp_path, messages.append)
    assert built == [root]
    assert not root.exists(), "the corrupt image must be removed before the rebuild"
    assert messages and "is corrupt (it lacks usr/lib/systemd/systemd" in messages[0]


def test_machines_are_owned_by_exact_name_never_by_prefix() -> None:
    spec = CloudSpec(name="rst")
    assert all(spec.owns_machine(m.name) for m in spec.machines())
    assert spec.owns_machine("rst-worker-7")  # a worker of an earlier, larger run of this cloud
    for other in ("rst-x-head", "rst-worker-1-head", "rstx-head", "rst-head2", "rst-"):
        assert not spec.owns_machine(other), other


def test_the_nodes_s3_environment_is_part_of_the_contract_the_cloud_writes() -> None:
    spec = CloudSpec(name="rc", subnet="10.213.70.0/24", s3_port=5670)
    env = s3server.node_env(spec)
    assert env == {
        "AWS_ENDPOINT_URL_S3": "http://10.213.70.1:5670",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance metadata service to ask
        "AWS_ACCESS_KEY_ID": "rayops-local",  # moto takes any key: a placeholder, not a credential
        "AWS_SECRET_ACCESS_KEY": "rayops-local",
    }
    outputs = {
        "rayops_contract": 1,
        "cluster_name": "rc",
        "provider": "local",
        "region": "local",
        "ssh_user": "rayops",
        "nodes": [
            dict(
                name="rc-head",
                role="head",
                private_ip="10.213.70.10",
                public_ip=None,
                instance_id="nspawn-rc-head",
                instance_type="nspawn",
            )
        ],
        "buckets": spec.buckets(),
        "s3_endpoint_url": spec.s3_endpoint_url,
        "s3_env": env,
    }
    assert contract.validate(outputs)["s3_env"] == env


# ------------------------------------------------------------------- the host: root, no machines
@needs_root
def test_cli_refuses_non_root_with_one_sentence(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *CLI,
            "up",
            "--name",
            "rnoroot",
            "--state-dir",
            str(tmp_path / "st"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("rayops-local: error: the local cloud needs root")
    assert "Traceback" not in proc.stderr


@needs_root
def test_cli_names_missing_host_packages(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "iptables", "ssh", "ssh-keygen"):  # everything but nspawn and debootstrap
        (bindir / tool).symlink_to(
            subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        )
    proc = subprocess.run(
        [*CLI, "up", "--name", "rmiss", "--state-dir", str(tmp_path / "st")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": str(bindir)},
    )
    assert proc.returncode == 1
    assert "missing host packages debootstrap, systemd-container: run `make setup`" in proc.stderr


@needs_root
def test_down_is_safe_on_a_cloud_that_is_not_there(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "rnone", "10.213.52.0/24", 5652)
    LocalCloud(spec).down()
    assert leftovers(spec) == []


@needs_root
def test_taken_subnet_is_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "rsub", "10.213.53.0/24", 5653)
    subprocess.run(["ip", "link", "add", "rtest-taken", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.213.53.200/24", "dev", "rtest-taken"], check=True)
        with pytest.raises(LocalCloudError, match=r"subnet 10.213.53.0/24 is already taken .*SUBNET="):
            LocalCloud(spec).up()
    finally:
        subprocess.run(["ip", "link", "delete", "rtest-taken"], check=True)
    assert leftovers(spec) == []


@needs_root
def test_taken_s3_port_is_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "rport", "10.213.54.0/24", 5654)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 5654))
        sock.listen()
        with pytest.raises(
            LocalCloudError, match=r"port 5654 for the S3 endpoint is already in use.*S3_PORT=5655"
        ):
            LocalCloud(spec).up()
    assert leftovers(spec) == []


# ----------------------------------------------------- a stale cloud acts only on what is its own
@needs_root
def test_down_of_a_stale_cloud_spares_what_it_cannot_prove_is_its_own(tmp_path: Path) -> None:
    """No state file, no bridge: the subnet in its spec is a guess (the CLI used to guess the default
    cloud's), so an S3 server on that gateway, or another cloud's machine with a longer name, must
    survive; what carries the stale cloud's own name goes."""
    spec = spec_for(tmp_path, "rstale", "10.213.62.0/24", 5662)
    gateway = ["-H", "10.213.62.1", "-p", "5662"]
    others = [
        stand_in("moto_server", *gateway),  # an unmarked server (an older rayops) of whoever owns .62
        stand_in("moto_server", *gateway, env={s3server.CLOUD_ENV: "rother"}),
        stand_in("systemd-nspawn", "--boot", "--machine=rstale-x-head"),  # cloud 'rstale-x'
    ]
    own = [
        stand_in("moto_server", "-H", "10.213.99.1", "-p", "5699", env={s3server.CLOUD_ENV: "rstale"}),
        stand_in("systemd-nspawn", "--boot", "--machine=rstale-worker-3"),
    ]
    try:
        LocalCloud(spec).down(quiet=True)
        assert [alive(p) for p in others] == [True, True, True], "down removed another cloud's process"
        assert [alive(p) for p in own] == [False, False], "down left a process that carries its name"
    finally:
        for p in others + own:
            p.kill()
            p.wait()


def test_a_reused_pid_in_the_state_file_is_neither_a_machine_nor_signalled(tmp_path: Path) -> None:
    """The state file keeps the launcher and S3 pids; a stopped machine's pid may be reused by another process
    (pid_max is 32768 here, and a CI session wraps it every few minutes). Such a pid must not make
    start_machine skip the boot ("already running"), status show the machine running, or stop kill it."""
    spec = spec_for(tmp_path, "rreuse", "10.213.63.0/24", 5663)
    spec.state_path.mkdir(parents=True)
    (spec.state_path / "logs").mkdir()
    worker = "rreuse-worker-1"
    strangers = [stand_in("python3"), stand_in("moto_server", env={s3server.CLOUD_ENV: "rother"})]
    launcher = stand_in("systemd-nspawn", "--boot", f"--machine={worker}")
    # launch()'s shell before it execs nspawn (it waits on stdin here, so it has no child)
    wrapper = subprocess.Popen(
        ["sh", "-c", f"read x; exec systemd-nspawn --boot --machine={worker} --register=no"],
        stdin=subprocess.PIPE,
    )
    try:
        CloudState(spec, {"rreuse-head": strangers[0].pid, worker: strangers[0].pid}, strangers[1].pid).save()
        status = LocalCloud(spec).status()
        assert [m["state"] for m in status["machines"]] == ["stopped", "stopped"]
        assert status["s3_endpoint_url"] is None
        assert machines.is_launcher(launcher.pid, worker)
        assert machines.is_launcher(wrapper.pid, worker)
        assert not machines.is_launcher(launcher.pid, "rreuse-worker-11")
        assert not machines.is_launcher(strangers[0].pid, worker)
        machines.stop(spec, Machine(worker, "worker", "", spec.name), strangers[0].pid, timeout=0)
        assert [alive(p) for p in strangers] == [True, True], "stop signalled a process that is not its own"
        assert launcher.wait(timeout=10) is not None  # stop signalled the machine's own launcher
    finally:
        for p in [*strangers, launcher, wrapper]:
            p.kill()
            p.wait()


@needs_root
def test_down_of_a_stale_cloud_trusts_the_gateway_its_bridge_still_carries(tmp_path: Path) -> None:
    """An unmarked S3 server (started by an older rayops) goes when the cloud's bridge proves its gateway."""
    spec = spec_for(tmp_path, "rbridged", "10.213.64.0/24", 5664)
    subprocess.run(["ip", "link", "add", spec.bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.213.64.1/24", "dev", spec.bridge], check=True)
    legacy = stand_in("moto_server", "-H", "10.213.64.1", "-p", "5664")
    elsewhere = stand_in("moto_server", "-H", "10.213.65.1", "-p", "5665")
    try:
        # The state dir is gone: the CLI finds the cloud by its bridge, with the subnet it carries.
        listed = cli("list")
        assert "rbridged       10.213.64.0/24" in listed.stdout.splitlines(), listed.stdout
        down = cli("down", "--name", "rbridged", "--state-dir", str(tmp_path / "elsewhere"))
        assert down.returncode == 0, down.stderr
        assert not alive(legacy)
        assert alive(elsewhere)
    finally:
        for p in (legacy, elsewhere):
            p.kill()
            p.wait()
        subprocess.run(["ip", "link", "delete", spec.bridge], check=False, capture_output=True)
    assert leftovers(spec) == []


@needs_root
def test_cli_lists_a_cloud_without_bridge_with_no_subnet_and_removes_it(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "rgone", "10.213.66.0/24", 5666)
    (RUNTIME_ROOT / "clouds" / "rgone").mkdir(parents=True)  # what a killed run leaves: its folder
    try:
        listed = cli("list")
        assert "rgone          - (bridge gone)" in listed.stdout.splitlines(), listed.stdout
        down = cli("down", "--name", "rgone", "--state-dir", str(tmp_path / "elsewhere"))
        assert down.returncode == 0, down.stderr
    finally:
        LocalCloud(spec).down(quiet=True)
    assert leftovers(spec) == []
    assert "rgone" not in cli("list").stdout
