"""The local cloud as a user sees it: real machines over real SSH, a real S3 API, a clean teardown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from localcloud_helpers import CLI, leftovers, spec_for

from rayops import contract
from rayops.localcloud import image, s3server, system
from rayops.localcloud.cloud import NSPAWN_PROPAGATE, LocalCloud
from rayops.localcloud.errors import LocalCloudError

pytestmark = pytest.mark.localcloud


def ssh(cloud: LocalCloud, machine: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cloud.ssh_command(cloud.machine(machine), *cmd, timeout=10),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ------------------------------------------------------------------------------------- a running cloud
def test_contract_file_validates_and_describes_the_machines(local_cloud: LocalCloud) -> None:
    outputs = json.loads(local_cloud.outputs_path.read_text())
    contract.validate(outputs)
    assert outputs["provider"] == "local" and outputs["region"] == "local"
    assert [n["role"] for n in outputs["nodes"]] == ["head", "worker", "worker"]
    assert outputs["s3_endpoint_url"] == "http://10.213.50.1:5650"
    assert set(outputs["buckets"]) == set(contract.BUCKET_KINDS)
    assert Path(outputs["ssh_private_key_file"]).stat().st_mode & 0o077 == 0, "private key must be 0600"
    assert outputs["s3_env"] == s3server.node_env(local_cloud.spec)


def test_the_s3_server_carries_its_clouds_name(local_cloud: LocalCloud) -> None:
    """What lets `down` find it without the state file and never take another cloud's."""
    state = json.loads((local_cloud.spec.state_path / "state.json").read_text())
    assert s3server.server_pids("rtest", None) == [state["s3_pid"]]
    assert s3server.server_pids("rtes", None) == []


@pytest.mark.parametrize("machine", ["rtest-head", "rtest-worker-1", "rtest-worker-2"])
def test_every_machine_boots_systemd_and_takes_ssh_as_sudo_user(
    local_cloud: LocalCloud, machine: str
) -> None:
    proc = ssh(local_cloud, machine, "systemctl is-system-running; cat /proc/1/comm; id -un; sudo -n id -u")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["running", "systemd", "rayops", "0"]


def test_nodes_resolve_each_other_by_name_quickly(local_cloud: LocalCloud) -> None:
    script = (
        "import socket,time; t=time.monotonic(); "
        "ips=[socket.gethostbyname(n) for n in ('rtest-head','rtest-worker-1','rtest-worker-2')]; "
        "fq=socket.getfqdn(); print(' '.join(ips), fq, round(time.monotonic()-t, 2))"
    )
    proc = ssh(local_cloud, "rtest-worker-1", "python3", "-c", f'"{script}"')
    assert proc.returncode == 0, proc.stderr
    ips_and_fqdn = proc.stdout.split()[:4]
    assert ips_and_fqdn == ["10.213.50.10", "10.213.50.11", "10.213.50.12", "rtest-worker-1"]
    # getfqdn() hanging on DNS is what makes Ansible fact gathering crawl: every name must come from
    # /etc/hosts alone (the mechanism; the lookup time is printed, not asserted).
    print(f"name lookups and getfqdn() took {proc.stdout.split()[4]} s")
    files = ssh(
        local_cloud, "rtest-worker-1", "getent", "-s", "files", "hosts", "rtest-head", "rtest-worker-1"
    )
    assert files.returncode == 0, files.stderr
    assert [line.split()[:2] for line in files.stdout.splitlines()] == [
        ["10.213.50.10", "rtest-head"],
        ["10.213.50.11", "rtest-worker-1"],
    ]


def test_machines_have_nat_route_and_trust_the_host_ca_bundle(local_cloud: LocalCloud) -> None:
    route = ssh(local_cloud, "rtest-head", "ip", "-4", "route", "show", "default")
    assert "via 10.213.50.1" in route.stdout
    nat = subprocess.run(
        ["iptables", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True
    ).stdout
    assert "-s 10.213.50.0/24 ! -o rb-rtest" in nat and "MASQUERADE" in nat
    bundle = ssh(local_cloud, "rtest-head", "sha256sum", "/etc/ssl/certs/ca-certificates.crt")
    host = subprocess.run(["sha256sum", "/etc/ssl/certs/ca-certificates.crt"], capture_output=True, text=True)
    assert bundle.stdout.split()[0] == host.stdout.split()[0]
    pipconf = ssh(local_cloud, "rtest-head", "cat", "/etc/pip.conf")
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in pipconf.stdout


def test_buckets_exist_versioned_and_reachable_from_controller_and_machines(local_cloud: LocalCloud) -> None:
    s3 = local_cloud.s3_client()
    for bucket in local_cloud.spec.buckets().values():
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    bucket = local_cloud.spec.buckets()["raw"]
    v1 = s3.put_object(Bucket=bucket, Key="probe.txt", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="probe.txt", Body=b"two")["VersionId"]
    assert v1 != v2
    old = s3.get_object(Bucket=bucket, Key="probe.txt", VersionId=v1)["Body"].read()
    assert old == b"one", "versioning must keep the overwritten object"
    # A machine reaches the same endpoint over the bridge (a presigned GET: no credentials on the node).
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "probe.txt"}, ExpiresIn=60)
    script = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=5).read().decode())"
    proc = ssh(local_cloud, "rtest-worker-2", "python3", "-c", f'"{script}"')
    assert proc.stdout.strip() == "two", proc.stderr


def test_known_hosts_is_exact_so_ssh_never_trusts_on_first_use(local_cloud: LocalCloud) -> None:
    lines = local_cloud.known_hosts_path.read_text().splitlines()
    assert len(lines) == 3
    proc = ssh(local_cloud, "rtest-head", "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
    assert proc.stdout.split()[1] == lines[0].split()[2]
    # The contract carries the same keys, as the AWS stack does for its nodes (the plugin pins them).
    nodes = json.loads(local_cloud.outputs_path.read_text())["nodes"]
    assert [n["ssh_host_key"] for n in nodes] == [" ".join(line.split()[1:3]) for line in lines]


def test_up_twice_changes_nothing(local_cloud: LocalCloud) -> None:
    before = json.loads((local_cloud.spec.state_path / "state.json").read_text())
    outputs = local_cloud.up()
    after = json.loads((local_cloud.spec.state_path / "state.json").read_text())
    assert before == after
    assert outputs == json.loads(local_cloud.outputs_path.read_text())


def test_status_shows_machines_ips_state_memory_s3_and_contract(local_cloud: LocalCloud) -> None:
    proc = subprocess.run(
        [*CLI, "status", "--json", "--state-dir", local_cloud.spec.state_dir],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert [(m["name"], m["ip"], m["state"]) for m in status["machines"]] == [
        ("rtest-head", "10.213.50.10", "running"),
        ("rtest-worker-1", "10.213.50.11", "running"),
        ("rtest-worker-2", "10.213.50.12", "running"),
    ]
    # Memory is the RSS of the machine's processes: the same sum read inside the machine agrees (that reading
    # also counts this SSH session's sshd, shell and ps, a few MiB; the band allows 48 MiB for them).
    for m in status["machines"]:
        inside = ssh(local_cloud, m["name"], "ps -e -o rss= | awk '{s += $1} END {print s / 1024}'")
        assert inside.returncode == 0, inside.stderr
        seen = float(inside.stdout.strip())
        print(f"{m['name']}: status {m['memory_mib']} MiB, ps inside {seen:.1f} MiB")
        assert 0.8 * m["memory_mib"] <= seen <= m["memory_mib"] + 48, (m["memory_mib"], seen)
    assert status["s3_endpoint_url"] == "http://10.213.50.1:5650"
    assert status["contract"].endswith("outputs.json")


@pytest.mark.parametrize("hard", [False, True], ids=["orderly", "power-cut"])
def test_stop_and_start_a_machine_keeps_its_disk(local_cloud: LocalCloud, hard: bool) -> None:
    """An orderly stop and a power cut (every process of the machine killed at once, the chaos rows' failed
    instance): the machine is stopped, boots again, and its disk is kept."""
    worker = f"{local_cloud.spec.name}-worker-2"
    assert ssh(local_cloud, worker, "sudo", "touch", "/var/tmp/kept").returncode == 0
    started = time.monotonic()
    local_cloud.stop_machine(worker, hard=hard)
    print(f"{'power cut' if hard else 'orderly stop'} of {worker}: {time.monotonic() - started:.1f} s")
    assert local_cloud.status()["machines"][2]["state"] == "stopped"
    local_cloud.start_machine(worker)
    proc = ssh(local_cloud, worker, "systemctl is-system-running; ls /var/tmp/kept")
    assert proc.stdout.split() == ["running", "/var/tmp/kept"]


# ------------------------------------------------------------------- lifecycle: up, crash, down
def test_down_leaves_nothing_even_after_a_crash(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "rcrash", "10.213.51.0/24", 5651)
    cloud = LocalCloud(spec)
    try:
        cloud.up()
        state = json.loads((spec.state_path / "state.json").read_text())
        # Crash: the worker's nspawn and the S3 server die without any cleanup.
        crashed = [state["launcher_pids"]["rcrash-worker-1"], state["s3_pid"]]
        for pid in crashed:
            os.kill(pid, 9)
        # SIGKILL is delivered asynchronously: on a loaded host the processes can still be in
        # /proc for a moment after kill() returns (CI saw up() find them alive).
        assert system.wait_gone(crashed, 30), f"{crashed} still alive 30 s after SIGKILL"
        with pytest.raises(
            LocalCloudError, match=r"half up .*machine rcrash-worker-1 is not running.*local-down"
        ):
            LocalCloud(spec).up()
        # The state file lost too: down must still find everything by name.
        (spec.state_path / "state.json").unlink()
        with pytest.raises(LocalCloudError, match="leftovers of an earlier run"):
            LocalCloud(spec).up()
    finally:
        LocalCloud(spec).down()
    assert leftovers(spec) == []


def test_nspawn_folders_of_earlier_machines_are_removed(tmp_path: Path) -> None:
    """nspawn removes /run/systemd/nspawn/propagate/<machine> only from a tmpfs (this host's /run: disk)."""
    spec = spec_for(tmp_path, "rprop", "10.213.58.0/24", 5658, workers=0)
    stale = NSPAWN_PROPAGATE / "rprop-head"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "left-over").write_text("from an earlier machine\n")
    try:
        LocalCloud(spec).up()
        assert LocalCloud(spec).status()["machines"][0]["state"] == "running"
    finally:
        LocalCloud(spec).down(quiet=True)
    assert leftovers(spec) == []


def test_cli_finds_and_removes_a_cloud_whose_state_dir_is_gone(tmp_path: Path) -> None:
    """What a killed test run leaves: `list` names the cloud, `down --name` removes all of it."""
    spec = spec_for(tmp_path, "rlost", "10.213.56.0/24", 5656)
    try:
        LocalCloud(spec).up()
        shutil.rmtree(spec.state_path)  # the run that made it is gone, and its tmp folder with it
        listed = subprocess.run([*CLI, "list"], capture_output=True, text=True, check=False)
        assert listed.returncode == 0, listed.stderr
        assert "rlost          10.213.56.0/24" in listed.stdout.splitlines()
        # No spec at all: the subnet comes from the bridge, the S3 server is found by its name mark.
        down = subprocess.run(
            [*CLI, "down", "--name", "rlost", "--state-dir", str(tmp_path / "elsewhere")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert down.returncode == 0, down.stderr
    finally:
        LocalCloud(spec).down(quiet=True)
    assert leftovers(spec) == []
    listed = subprocess.run([*CLI, "list"], capture_output=True, text=True, check=False)
    assert "rlost" not in listed.stdout


def test_another_clouds_state_dir_is_never_read_or_removed(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "rown", "10.213.55.0/24", 5655)
    cloud = LocalCloud(spec)
    try:
        cloud.up()
        state_dir = ["--state-dir", spec.state_dir]
        for argv, message in (
            (["up", "--name", "rother", "--subnet", "10.213.57.0/24", "--s3-port", "5657"], "up"),
            (["status", "--name", "rother"], "status"),
        ):
            proc = subprocess.run([*CLI, *argv, *state_dir], capture_output=True, text=True, check=False)
            assert proc.returncode == 1, message
            assert "holds the state of cloud 'rown', not 'rother'" in proc.stderr, proc.stderr
        down = subprocess.run(
            [*CLI, "down", "--name", "rother", *state_dir], capture_output=True, text=True, check=False
        )
        assert down.returncode == 0, down.stderr
        # rown's machines, S3 server and state dir are untouched.
        assert cloud.status()["machines"][1]["state"] == "running"
        assert cloud.status()["s3_endpoint_url"] == "http://10.213.55.1:5655"
        assert (spec.state_path / "state.json").exists()
        assert leftovers(spec_for(tmp_path / "other", "rother", "10.213.57.0/24", 5657)) == []
    finally:
        cloud.down()
    assert leftovers(spec) == []


def test_complete_image_is_reused_without_building(local_cloud: LocalCloud) -> None:
    cached = local_cloud.image_cache / image.image_id()
    assert image.missing_files(cached) == []
    messages: list[str] = []
    assert image.ensure_image(local_cloud.image_cache, messages.append) == cached
    assert messages == []
