"""The filters in plugins/filter/rayops_filters.py, as plain functions and through Ansible's templating."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import pytest

from rayops.ansible_env import REPO, run_ansible


def _filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rayops_filters", REPO / "plugins" / "filter" / "rayops_filters.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


F = _filters()


def test_requirement_lines_drops_comments_and_blanks() -> None:
    text = "# header\n\nray[default]==2.60.0  # the cluster\n  xgboost==3.1.2\n#pandas==1\n"
    assert F.requirement_lines(text) == ["ray[default]==2.60.0", "xgboost==3.1.2"]


def test_requirement_lines_of_the_repo_lock_are_exact_pins() -> None:
    pins = F.requirement_lines((REPO / "requirements-cluster.txt").read_text(encoding="utf-8"))
    assert pins and all("==" in p and "#" not in p for p in pins), pins


STATE_API = {
    "result": True,
    "data": {
        "result": {
            "total": 3,
            "result": [
                {"node_ip": "10.0.0.1", "state": "ALIVE", "resources_total": {"CPU": 1.0, "memory": 5.0}},
                {"node_ip": "10.0.0.2", "state": "DEAD", "resources_total": {"CPU": 4.0}},
                {"node_ip": "10.0.0.3", "state": "ALIVE", "resources_total": {"CPU": 2.0}},
                {"node_ip": "10.0.0.4", "state": "ALIVE", "resources_total": {}},
            ],
        }
    },
}


def test_ray_alive_nodes_and_cpus() -> None:
    alive = F.ray_alive_nodes(STATE_API)
    assert [n["node_ip"] for n in alive] == ["10.0.0.1", "10.0.0.3", "10.0.0.4"]
    assert F.ray_cpus(alive) == 3.0


@pytest.mark.parametrize("reply", [None, {}, {"data": None}, {"data": {"result": []}}, "<html>", 401])
def test_ray_alive_nodes_of_no_or_a_bad_reply_is_empty(reply: object) -> None:
    assert F.ray_alive_nodes(reply) == []


def test_glibc_and_manylinux_platforms() -> None:
    assert F.oldest_glibc_minor(["glibc 2.36", "glibc 2.31\n", "glibc 2.39"]) == 31
    assert F.manylinux_platforms(19, "x86_64") == [
        "--platform=manylinux_2_17_x86_64",
        "--platform=manylinux_2_18_x86_64",
        "--platform=manylinux_2_19_x86_64",
        "--platform=manylinux2014_x86_64",
    ]
    with pytest.raises(ValueError, match="not a `getconf GNU_LIBC_VERSION` output: 'musl'"):
        F.oldest_glibc_minor(["musl"])
    with pytest.raises(ValueError, match="no C library versions"):
        F.oldest_glibc_minor([])


def test_ssh_tunnel_forwards_every_port_with_the_hosts_ssh_settings() -> None:
    host = {
        "ansible_host": "10.213.7.10",
        "ansible_user": "admin",
        "ansible_ssh_private_key_file": "/x/my key",
        "ansible_port": 2222,
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/x/known_hosts -o StrictHostKeyChecking=yes",
    }
    assert F.ssh_tunnel(host, [8265, 8888]) == (
        "ssh -N -i '/x/my key' -p 2222 -o UserKnownHostsFile=/x/known_hosts -o StrictHostKeyChecking=yes"
        " -L 8265:127.0.0.1:8265 -L 8888:127.0.0.1:8888 admin@10.213.7.10"
    )
    assert F.ssh_tunnel({"inventory_hostname": "head"}, [1], "me") == "ssh -N -L 1:127.0.0.1:1 me@head"


def test_tunnel_lines_give_each_service_its_local_url_and_login() -> None:
    forwards = [
        {"name": "Ray dashboard", "port": 8265, "login": "it asks for the cluster token: paste /t"},
        {"name": "JupyterLab", "port": "8888", "path": "/lab", "login": "its token: /j on the controller"},
        {"name": "Prometheus", "port": 9090, "path": "/targets", "login": "no login"},
    ]
    assert F.tunnel_lines(forwards) == [
        "Ray dashboard: http://127.0.0.1:8265 - it asks for the cluster token: paste /t",
        "JupyterLab: http://127.0.0.1:8888/lab - its token: /j on the controller",
        "Prometheus: http://127.0.0.1:9090/targets - no login",
    ]


def test_ansible_finds_the_filters(tmp_path) -> None:
    """ansible.cfg's filter_plugins: a playbook in the repo can use them by their short names."""
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"{{ ['glibc 2.36'] | oldest_glibc_minor }} "
        '{{ reply | ray_alive_nodes | ray_cpus }}"\n',
        encoding="utf-8",
    )
    reply = json.dumps({"reply": STATE_API})
    proc = run_ansible(
        "ansible-playbook",
        "-i",
        "localhost,",
        "-c",
        "local",
        str(play),
        "-e",
        reply,
        ANSIBLE_CACHE_PLUGIN="memory",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"msg": "36 3.0"' in proc.stdout or "msg: 36 3.0" in proc.stdout, proc.stdout
