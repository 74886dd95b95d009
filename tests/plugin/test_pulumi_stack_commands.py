"""The plugin as users meet it: ansible-inventory and ansible-doc, run from the repository root."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from pulumi_stack_helpers import REPO, host_public_key, load_fixture, ssh_config, write_config, write_outputs

BIN = Path(sys.executable).parent


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    environment.pop("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", None)
    environment.pop("ANSIBLE_INVENTORY_UNPARSED_FAILED", None)
    environment.update(env or {})
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plain(value: Any) -> Any:
    """ansible-inventory's JSON with its untrusted-value markers ({"__ansible_unsafe": v}) taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_ansible_inventory_lists_the_cluster(tmp_path):
    write_outputs(tmp_path, load_fixture("local.json"))
    config = write_config(tmp_path, "local.pulumi_stack.yml", outputs_file="outputs.json")

    done = run("ansible-inventory", "-i", str(config), "--list")

    assert done.returncode == 0, done.stderr
    listing = plain(json.loads(done.stdout))
    assert listing["ray_cluster"]["children"] == ["ray_head", "ray_workers"]
    assert listing["ray_head"]["hosts"] == ["ray-head"]
    assert listing["ray_workers"]["hosts"] == ["ray-worker-1", "ray-worker-2"]
    worker = listing["_meta"]["hostvars"]["ray-worker-2"]
    assert worker["ansible_host"] == "10.77.0.12"
    assert worker["ray_head_ip"] == "10.77.0.10"
    assert worker["ansible_ssh_private_key_file"] == str(tmp_path / "ssh" / "id_ed25519")
    assert worker["rayops_buckets"]["raw"] == "rayops-local-raw"


def test_ansible_inventory_graph_of_a_head_only_cluster(tmp_path):
    write_outputs(tmp_path, load_fixture("head_only.json"))
    config = write_config(tmp_path, outputs_file="outputs.json")

    done = run("ansible-inventory", "-i", str(config), "--graph", "ray_cluster")

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["@ray_cluster:", "|--@ray_head:", "|", "|--ray-head", "|--@ray_workers:"]


def test_ansible_inventory_fails_on_a_bad_outputs_file(tmp_path):
    outputs = load_fixture("aws_public.json")
    outputs["nodes"][1]["role"] = "head"
    write_outputs(tmp_path, outputs)
    config = write_config(tmp_path, outputs_file="outputs.json")

    done = run(
        "ansible-inventory",
        "-i",
        str(config),
        "--list",
        env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"},
    )

    assert done.returncode != 0
    message = " ".join(done.stderr.split())  # ansible wraps long lines
    assert f"pulumi_stack inventory {config}:" in message
    assert "exactly one node with role 'head', found 2 (ray-head, ray-worker-1)" in message


def test_repository_ansible_cfg_makes_a_bad_inventory_fatal(tmp_path):
    """With the repo's ansible.cfg alone, a broken inventory must stop ansible instead of warning.

    ansible-core only warns about an inventory source no plugin could parse (and then runs against no
    hosts, exit 0) unless [inventory] any_unparsed_is_failed = True is set.
    """
    config = write_config(tmp_path, outputs_file="missing.json")

    done = run("ansible-inventory", "-i", str(config), "--list")

    message = " ".join(done.stderr.split())
    assert f"outputs_file {tmp_path / 'missing.json'} does not exist" in message
    assert done.returncode != 0, (
        "ansible-inventory exited 0 on a broken inventory: ansible.cfg needs "
        "`any_unparsed_is_failed = True` under [inventory]"
    )


def test_ansible_doc_renders_the_plugin():
    done = run("ansible-doc", "-t", "inventory", "pulumi_stack")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "> INVENTORY pulumi_stack" in text
    assert "Turns the outputs of a rayops stack" in text
    for option in ("outputs_file", "state_file", "jump_via_head", "keyed_groups", "cache_plugin"):
        assert option in text

    as_json = run("ansible-doc", "-t", "inventory", "--json", "pulumi_stack")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)["pulumi_stack"]["doc"]
    assert doc["short_description"] == "rayops cluster nodes from Pulumi stack outputs"
    options = set(doc["options"])
    own = {"plugin", "outputs_file", "stack", "project_dir", "state_file", "pulumi_timeout"}
    assert own | {"use_private_ip", "jump_via_head"} <= options
    assert {"compose", "groups", "keyed_groups", "strict"} <= options  # the constructed fragment
    assert {"cache", "cache_plugin", "cache_timeout", "cache_connection"} <= options  # inventory_cache
    assert doc["options"]["use_private_ip"]["default"] is False
    assert doc["options"]["plugin"]["choices"] == ["pulumi_stack"]


def test_the_aws_inventory_pins_the_stacks_host_keys_through_the_jump(tmp_path):
    """inventory/aws.pulumi_stack.yml on outputs with the nodes' host keys (what the stack exports) and
    `jump_via_head: true`: the head and the hop to it are pinned to the plugin's known_hosts file with strict
    checking (once this config composed accept-new, trust on first use, and that once replaced the jump)."""
    repo_config = (REPO / "inventory" / "aws.pulumi_stack.yml").read_text(encoding="utf-8")
    # The same config on saved outputs instead of the Pulumi CLI (as its own comments describe).
    text = repo_config.replace("stack: dev\n", "outputs_file: outputs.json\n").replace(
        "project_dir: ../pulumi\n", ""
    )
    config = tmp_path / "aws.pulumi_stack.yml"
    assert "\njump_via_head: true\n" in repo_config, "workers are reached through the head (stable addresses)"
    config.write_text(text + f"known_hosts_dir: {tmp_path / 'kh'}\n", encoding="utf-8")
    outputs = load_fixture("aws_public.json")
    for node in outputs["nodes"]:
        node["ssh_host_key"] = host_public_key()
    write_outputs(tmp_path, outputs)

    done = run("ansible-inventory", "-i", str(config), "--list")

    assert done.returncode == 0, done.stderr
    (pinned,) = list((tmp_path / "kh").iterdir())
    strict = ["-o", f"UserKnownHostsFile={pinned}", "-o", "StrictHostKeyChecking=yes"]
    hostvars = plain(json.loads(done.stdout))["_meta"]["hostvars"]
    assert shlex.split(hostvars["ray-head"]["ansible_ssh_common_args"]) == strict
    worker = hostvars["ray-worker-1"]
    resolved = ssh_config(
        [*shlex.split(worker["ansible_ssh_common_args"]), f"admin@{worker['ansible_host']}"]
    )
    assert resolved["hostname"] == "10.0.1.11"
    assert resolved["stricthostkeychecking"] == "true"
    assert shlex.split(resolved["proxycommand"]) == ["ssh", "-W", "%h:%p", *strict, "admin@203.0.113.10"]
