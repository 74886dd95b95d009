"""The firewall role's nftables rules, rendered by Ansible for a 3-node inventory and checked by nft itself.

No machines: the role's own template and variables (its preflight included with public vars), then `nft -c`
(parse and check against the kernel's nf_tables, in a network namespace of its own; nothing is loaded).
The rules' effect on real traffic is tested on the cluster (tests/cluster/test_firewall.py, molecule/py39).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayops.ansible_env import REPO, run_ansible

MEMBERS = {"fw-head": "10.9.8.10", "fw-worker-1": "10.9.8.11", "fw-worker-2": "10.9.8.12"}
needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None,
    reason="nft -c needs root and nftables (make setup installs it)",
)


def _render(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run the role's template for every host of a fake cluster; the files' texts by host."""
    lines = [
        "[ray_head]",
        f"fw-head ray_node_ip={MEMBERS['fw-head']}",
        "[ray_workers]",
        *(f"{name} ray_node_ip={ip}" for name, ip in MEMBERS.items() if name != "fw-head"),
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
    template = REPO / "roles/firewall/templates/rayops.nft.j2"
    play = [
        {
            "name": "Render the firewall's rules",
            "hosts": "ray_cluster",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Render | The role's variables, through its preflight",
                    "ansible.builtin.include_role": {
                        "name": "firewall",
                        "tasks_from": "preflight.yml",
                        "public": True,
                    },
                },
                {
                    # configure.yml reads them from the node's passwd database (getent): root and a Ray user.
                    "name": "Render | The uids that may reach the metadata service",
                    "ansible.builtin.set_fact": {
                        "_firewall_metadata_uids": [0, 999],
                        # configure.yml: the head's Redis (GCS fault tolerance), once the Ray user exists.
                        "_firewall_gcs_store": "{{ inventory_hostname == 'fw-head' }}",
                        "_firewall_gcs_store_uids": [0, 999],
                    },
                },
                {
                    "name": "Render | The rules file",
                    "ansible.builtin.template": {
                        "src": str(template),
                        "dest": f"{out}/{{{{ inventory_hostname }}}}.nft",
                        "mode": "0644",
                    },
                },
            ],
        }
    ]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    proc = run_ansible(
        "ansible-playbook",
        "-i",
        str(tmp_path / "inventory.ini"),
        str(tmp_path / "render.yml"),
        *extra,
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_INVENTORY_ENABLED="ini",
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
    )
    return proc, {p.stem: p.read_text(encoding="utf-8") for p in out.glob("*.nft")}


def _nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    # A network namespace of its own: even a mistaken load could never touch this host's rules.
    return subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )


@needs_nft
def test_rules_render_for_every_member_and_nft_accepts_them(tmp_path: Path) -> None:
    proc, files = _render(tmp_path, "-e", '{"firewall_extra_sources": ["192.0.2.0/28"]}')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sorted(files) == sorted(MEMBERS)
    for host, text in files.items():
        path = tmp_path / f"{host}.nft"
        path.write_text(text, encoding="utf-8")
        check = _nft_check(path)
        assert check.returncode == 0, f"{host}: {check.stderr}"
        # Every node lets in exactly the members (itself included) and the extra source, on every port.
        elements = re.search(r"elements = \{ (.*) \}", text)
        assert elements, text
        assert elements.group(1).split(", ") == [*MEMBERS.values(), "192.0.2.0/28"]
        rules = [line.strip() for line in text.splitlines()]
        chain = rules[rules.index("type filter hook input priority filter; policy drop;") :]
        assert chain[1:5] == [
            'iif "lo" accept',
            "ct state established,related accept",
            "ct state invalid drop",
            "# ICMP and ICMPv6 (by number: a minimal image has no /etc/protocols to resolve their names).",
        ]
        assert "tcp dport { 22 } accept" in chain
        assert "ip saddr @members accept" in chain
        # Nothing else is opened: every accept is one of these.
        accepts = {r for r in chain if r.endswith("accept")}
        assert accepts == {
            'iif "lo" accept',
            "ct state established,related accept",
            "meta l4proto { 1, 58 } accept",
            "udp sport 67 udp dport 68 accept",
            "udp sport 547 udp dport 546 accept",
            "tcp dport { 22 } accept",
            "ip saddr @members accept",
        }, accepts
        # The metadata service: refused for every uid but the listed ones, counted (issue 15).
        output = rules[rules.index("type filter hook output priority filter; policy accept;") :]
        assert output[1].startswith("ip daddr { 169.254.169.254 } meta skuid != { 0, 999 } counter reject"), (
            output[1]
        )
        assert output[2].startswith("ip6 daddr { fd00:ec2::254 } meta skuid != { 0, 999 } counter reject")
        # The head's Redis on loopback (GCS fault tolerance, issue 16): root's and the Ray user's only.
        redis = "ip daddr 127.0.0.0/8 tcp dport 6390 meta skuid != { 0, 999 } counter reject"
        assert any(r.startswith(redis) for r in output) == (host == "fw-head"), output
        # The file replaces only its own table, never the whole ruleset.
        assert "flush ruleset" not in text
        assert rules.count("delete table inet rayops") == 1


@needs_nft
def test_nft_check_is_a_real_check(tmp_path: Path) -> None:
    """The same rules with one bad element fail `nft -c` (what the role's validate relies on)."""
    proc, files = _render(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    bad = tmp_path / "bad.nft"
    bad.write_text(files["fw-head"].replace("10.9.8.12", "10.9.8.312"), encoding="utf-8")
    check = _nft_check(bad)
    assert check.returncode != 0
    assert "10.9.8.312" in check.stderr


def test_bad_sources_stop_the_role_with_one_sentence(tmp_path: Path) -> None:
    proc, files = _render(tmp_path, "-e", '{"firewall_extra_sources": ["bastion.example.com"]}')
    flat = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert files == {}
    assert (
        "The firewall settings on fw-head are invalid (sources 10.9.8.10, 10.9.8.11, 10.9.8.12, "
        "bastion.example.com, public TCP ports 22): the members' ray_node_ip and firewall_extra_sources "
        "must be IPv4 addresses or networks like 10.0.5.7/32, and the public ports 1-65535."
    ) in flat, flat[-2000:]
