"""The head's memory reserve (roles/ray_service, issue 16 item 4): Ray's facts-derived task memory and object
store on the head leave 25 % (at least 2 GiB) of the node's memory to the GCS, Redis, the driver, JupyterLab,
MLflow and Prometheus; a worker keeps none; explicit sizes (the local cloud's ray_resources) win. The role's
own variables, through its preflight, with this host's real facts. No machines; ~10 s."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from rayops.ansible_env import run_ansible

GIB = 1024**3


def _sizes(tmp_path: Path, *extra: str) -> dict[str, dict[str, int]]:
    lines = [
        "[ray_head]",
        "sz-head ray_node_ip=10.9.7.10",
        "[ray_workers]",
        "sz-worker ray_node_ip=10.9.7.11 ray_head_ip=10.9.7.10",
        "[ray_cluster:children]",
        "ray_head",
        "ray_workers",
        "[ray_cluster:vars]",
        "ansible_connection=local",
        f"ansible_python_interpreter={sys.executable}",
    ]
    (tmp_path / "inventory.ini").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    play = [
        {
            "name": "Sizes",
            "hosts": "ray_cluster",
            "gather_facts": True,
            "tasks": [
                {
                    "name": "Sizes | The role's variables, through its preflight",
                    "ansible.builtin.include_role": {
                        "name": "ray_service",
                        "tasks_from": "preflight.yml",
                        "public": True,
                    },
                },
                {
                    "name": "Sizes | Write them",
                    "ansible.builtin.copy": {
                        "content": (
                            "{{ {'total': _ray_service_mem_total | int, 'memory': _ray_service_memory | int,"
                            " 'object_store': _ray_service_object_store_memory | int} | to_json }}"
                        ),
                        "dest": f"{out}/{{{{ inventory_hostname }}}}.json",
                        "mode": "0644",
                    },
                },
            ],
        }
    ]
    (tmp_path / "sizes.yml").write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    proc = run_ansible(
        "ansible-playbook",
        "-i",
        str(tmp_path / "inventory.ini"),
        str(tmp_path / "sizes.yml"),
        *extra,
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_INVENTORY_ENABLED="ini",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in out.glob("*.json")}


def test_the_head_keeps_a_reserve_and_explicit_sizes_win(tmp_path: Path) -> None:
    sizes = _sizes(tmp_path)
    head, worker = sizes["sz-head"], sizes["sz-worker"]
    total = head["total"]
    left = total - max(2 * GIB, int(total * 0.25))
    assert head["memory"] == int(left * 0.6) and head["object_store"] == int(left * 0.3), head
    assert worker["memory"] == int(total * 0.6) and worker["object_store"] == int(total * 0.3), worker
    assert total - head["memory"] - head["object_store"] >= max(2 * GIB, total * 0.25)

    (tmp_path / "explicit").mkdir()
    explicit = _sizes(
        tmp_path / "explicit",
        "-e",
        json.dumps(
            {"rayops_ray_resources": {"num_cpus": 1, "memory": 2 * GIB, "object_store_memory": GIB // 2}}
        ),
    )
    assert explicit["sz-head"]["memory"] == 2 * GIB and explicit["sz-head"]["object_store"] == GIB // 2
