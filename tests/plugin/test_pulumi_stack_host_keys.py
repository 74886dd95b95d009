"""Host keys pinned from the stack outputs (issue 15, item 5): the nodes' ``ssh_host_key``s become a
known_hosts file of the plugin's own, pinned with strict checking for every host and the hop; no
trust on first use anywhere, also not in the AWS inventory config."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleError
from pulumi_stack_helpers import (
    REPO,
    host_public_key,
    hostvars,
    load_fixture,
    parse,
    ssh_config,
    write_config,
    write_outputs,
)


def _with_keys(outputs: dict[str, Any]) -> dict[str, Any]:
    for node in outputs["nodes"]:
        node["ssh_host_key"] = host_public_key()
    return outputs


def _parse(tmp_path: Path, outputs: dict[str, Any], **options: Any) -> Any:
    write_outputs(tmp_path, outputs)
    config = write_config(
        tmp_path, outputs_file="outputs.json", known_hosts_dir=str(tmp_path / "kh"), **options
    )
    return parse(config)


def test_the_nodes_keys_are_written_and_pinned_strictly(tmp_path: Path) -> None:
    outputs = _with_keys(load_fixture("aws_public.json"))
    inventory = _parse(tmp_path, outputs)

    files = list((tmp_path / "kh").iterdir())
    assert len(files) == 1 and files[0].name.startswith("rayops-dev-"), files
    lines = sorted(files[0].read_text(encoding="utf-8").splitlines())
    assert lines == sorted(
        f"{n['private_ip']},{n['public_ip']} {n['ssh_host_key']}" for n in outputs["nodes"]
    )
    for node in outputs["nodes"]:
        args = shlex.split(hostvars(inventory, node["name"])["ansible_ssh_common_args"])
        assert args == ["-o", f"UserKnownHostsFile={files[0]}", "-o", "StrictHostKeyChecking=yes"], args
        resolved = ssh_config([*args, node["public_ip"]])
        assert resolved["stricthostkeychecking"] == "true"
        assert resolved["userknownhostsfile"] == str(files[0])


def test_the_hop_to_the_head_is_pinned_too(tmp_path: Path) -> None:
    outputs = _with_keys(load_fixture("aws_public.json"))
    inventory = _parse(tmp_path, outputs, jump_via_head=True)
    (pinned,) = list((tmp_path / "kh").iterdir())
    worker = shlex.split(hostvars(inventory, "ray-worker-1")["ansible_ssh_common_args"])
    hop = shlex.split(ssh_config([*worker, "10.0.1.11"])["proxycommand"])
    assert hop[hop.index("-o") + 1 :][:3] == [
        f"UserKnownHostsFile={pinned}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    assert hop[-1] == "admin@203.0.113.10"


def test_the_keys_win_over_a_known_hosts_file_and_a_second_parse_keeps_the_file(tmp_path: Path) -> None:
    outputs = _with_keys(load_fixture("local.json"))  # it names ssh/known_hosts too
    _parse(tmp_path, outputs)
    (first,) = list((tmp_path / "kh").iterdir())
    before = first.stat().st_mtime_ns
    inventory = _parse(tmp_path, outputs)
    assert list((tmp_path / "kh").iterdir()) == [first] and first.stat().st_mtime_ns == before
    args = hostvars(inventory, "ray-head")["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={first}" in args and "ssh/known_hosts" not in args


def test_new_keys_get_a_new_file(tmp_path: Path) -> None:
    _parse(tmp_path, _with_keys(load_fixture("aws_public.json")))
    _parse(tmp_path, _with_keys(load_fixture("aws_public.json")))
    assert len(list((tmp_path / "kh").iterdir())) == 2


def test_keys_for_some_nodes_only_are_refused(tmp_path: Path) -> None:
    outputs = _with_keys(load_fixture("aws_public.json"))
    del outputs["nodes"][2]["ssh_host_key"]
    with pytest.raises(AnsibleError, match=r"ray-worker-2 carry no ssh_host_key while other nodes do"):
        _parse(tmp_path, outputs)


def test_a_malformed_key_is_refused(tmp_path: Path) -> None:
    outputs = _with_keys(load_fixture("aws_public.json"))
    outputs["nodes"][0]["ssh_host_key"] = "ssh-rsa AAAA"
    with pytest.raises(AnsibleError, match=r"outputs\.nodes\[0\]\.ssh_host_key"):
        _parse(tmp_path, outputs)


def test_the_aws_inventory_config_never_trusts_on_first_use() -> None:
    text = (REPO / "inventory" / "aws.pulumi_stack.yml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    assert "accept-new" not in text and "StrictHostKeyChecking" not in str(config)
    assert "ansible_ssh_common_args" not in (config.get("compose") or {})
