"""Hosts, groups and host vars the pulumi_stack plugin builds from stack outputs (real InventoryData)."""

from __future__ import annotations

import copy
import json
import shlex

import pytest
from ansible.errors import AnsibleError
from pulumi_stack_helpers import (
    REPO,
    group_hosts,
    hostvars,
    load_fixture,
    new_plugin,
    parse,
    plugin_module,
    ssh_config,
    write_config,
    write_outputs,
)

from rayops.localcloud import s3server
from rayops.localcloud.state import CloudSpec

AWS_BUCKETS = {k: f"rayops-dev-{k}-7f3a2c" for k in ("raw", "features", "models", "results")}


def test_aws_stack_with_public_ips(inventory_from):
    inventory = inventory_from(load_fixture("aws_public.json"))

    assert {g.name for g in inventory.groups["ray_cluster"].child_groups} == {"ray_head", "ray_workers"}
    assert group_hosts(inventory, "ray_head") == ["ray-head"]
    assert group_hosts(inventory, "ray_workers") == ["ray-worker-1", "ray-worker-2"]
    assert hostvars(inventory, "ray-head") == {
        "ansible_host": "203.0.113.10",
        "ansible_user": "admin",
        "ray_node_ip": "10.0.1.10",
        "ray_head_ip": "10.0.1.10",
        "rayops_buckets": AWS_BUCKETS,
        "s3_endpoint_url": None,
        "rayops_cluster_name": "rayops-dev",
        "rayops_provider": "aws",
        "rayops_region": "eu-west-1",
        "rayops_node_role": "head",
        "rayops_instance_id": "i-00000000000000001",
        "rayops_instance_type": "m7i.large",
        "rayops_private_ip": "10.0.1.10",
        "rayops_public_ip": "203.0.113.10",
        # The instance profile signs S3 requests: the nodes get the region, never a key.
        "rayops_s3_env": {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-1"},
    }
    worker = hostvars(inventory, "ray-worker-2")
    assert worker["ansible_host"] == "203.0.113.12"
    assert worker["ray_node_ip"] == "10.0.1.12"
    assert worker["ray_head_ip"] == "10.0.1.10"
    assert worker["rayops_node_role"] == "worker"
    assert "ansible_ssh_common_args" not in worker
    assert "ansible_ssh_private_key_file" not in worker


def test_aws_stack_as_the_pulumi_cli_prints_it_without_s3_endpoint_url(inventory_from):
    """The Pulumi SDK drops top-level None outputs: a real AWS stack has no s3_endpoint_url key."""
    outputs = load_fixture("aws_public.json")
    del outputs["s3_endpoint_url"]
    inventory = inventory_from(outputs)
    assert hostvars(inventory, "ray-worker-1")["s3_endpoint_url"] is None
    assert group_hosts(inventory, "ray_workers") == ["ray-worker-1", "ray-worker-2"]


def test_outputs_outside_the_contract_never_reach_the_inventory(inventory_from):
    outputs = load_fixture("aws_public.json")
    assert outputs["ray_auth_token"] == "tok-do-not-leak-0123456789"  # the fixture carries an extra output

    inventory = inventory_from(outputs)

    everything = json.dumps({h: hostvars(inventory, h) for h in inventory.hosts})
    assert "tok-do-not-leak" not in everything


def test_use_private_ip_connects_to_private_addresses(inventory_from):
    inventory = inventory_from(load_fixture("aws_public.json"), use_private_ip=True)

    for name, private in (
        ("ray-head", "10.0.1.10"),
        ("ray-worker-1", "10.0.1.11"),
        ("ray-worker-2", "10.0.1.12"),
    ):
        assert hostvars(inventory, name)["ansible_host"] == private
        assert hostvars(inventory, name)["rayops_public_ip"] is not None


def test_nodes_without_public_ips_are_reached_on_private_ones(inventory_from):
    inventory = inventory_from(load_fixture("aws_private_only.json"))

    for name, private in (
        ("ray-head", "10.0.1.10"),
        ("ray-worker-1", "10.0.1.11"),
        ("ray-worker-2", "10.0.1.12"),
    ):
        assert hostvars(inventory, name)["ansible_host"] == private
        assert hostvars(inventory, name)["rayops_public_ip"] is None


def test_head_only_cluster_keeps_an_empty_workers_group(inventory_from):
    inventory = inventory_from(load_fixture("head_only.json"))

    assert group_hosts(inventory, "ray_head") == ["ray-head"]
    assert "ray_workers" in inventory.groups
    assert group_hosts(inventory, "ray_workers") == []
    assert {g.name for g in inventory.groups["ray_cluster"].child_groups} == {"ray_head", "ray_workers"}
    assert hostvars(inventory, "ray-head")["rayops_instance_type"] == "m7i.xlarge"


def test_many_workers(inventory_from):
    inventory = inventory_from(load_fixture("many_workers.json"))

    workers = group_hosts(inventory, "ray_workers")
    assert workers == sorted(f"ray-worker-{n}" for n in range(1, 21))
    assert group_hosts(inventory, "ray_head") == ["ray-head"]
    assert hostvars(inventory, "ray-head")["ansible_host"] == "198.51.100.10"
    for n in range(1, 21):
        v = hostvars(inventory, f"ray-worker-{n}")
        assert v["ansible_host"] == v["ray_node_ip"] == f"10.0.2.{10 + n}"
        assert v["ray_head_ip"] == "10.0.2.10"
        assert v["rayops_instance_type"] == "c7i.large"


def test_local_cloud_key_and_known_hosts_resolve_against_the_outputs_folder(tmp_path, monkeypatch):
    outputs_dir = tmp_path / "state" / "local"
    write_outputs(outputs_dir, load_fixture("local.json"))
    config = write_config(tmp_path / "inventory", outputs_file="../state/local/outputs.json")
    monkeypatch.chdir(tmp_path / "state")  # the working folder must not matter

    inventory = parse(config)

    for name in ("ray-head", "ray-worker-1", "ray-worker-2"):
        v = hostvars(inventory, name)
        assert v["ansible_user"] == "rayops"
        assert v["rayops_provider"] == "local"
        assert v["rayops_region"] == "local"
        assert v["s3_endpoint_url"] == "http://10.77.0.1:9000"
        assert v["rayops_s3_env"] == {
            "AWS_ENDPOINT_URL_S3": "http://10.77.0.1:9000",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "rayops-local",  # moto takes any key: a placeholder, not a credential
            "AWS_SECRET_ACCESS_KEY": "rayops-local",
        }
        assert v["ansible_host"] == v["ray_node_ip"]
        assert v["ansible_ssh_private_key_file"] == str(outputs_dir / "ssh" / "id_ed25519")
        assert shlex.split(v["ansible_ssh_common_args"]) == [
            "-o",
            f"UserKnownHostsFile={outputs_dir / 'ssh' / 'known_hosts'}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
        # SSH masters live beside the cloud's known_hosts, so a removed cloud's are never reused.
        assert v["ansible_control_path_dir"] == str(outputs_dir / "ssh" / "cp")
    assert hostvars(inventory, "ray-worker-1")["rayops_buckets"]["models"] == "rayops-local-models"


def test_absolute_key_path_is_kept(inventory_from, tmp_path):
    outputs = load_fixture("local.json")
    outputs["ssh_private_key_file"] = "/etc/rayops/id_ed25519"
    del outputs["ssh_known_hosts_file"]

    inventory = inventory_from(outputs)

    assert hostvars(inventory, "ray-head")["ansible_ssh_private_key_file"] == "/etc/rayops/id_ed25519"
    assert "ansible_ssh_common_args" not in hostvars(inventory, "ray-head")


def test_jump_via_head_uses_proxyjump_for_workers(inventory_from):
    inventory = inventory_from(load_fixture("aws_public.json"), jump_via_head=True)

    head = hostvars(inventory, "ray-head")
    assert head["ansible_host"] == "203.0.113.10"
    assert "ansible_ssh_common_args" not in head
    for name, private in (("ray-worker-1", "10.0.1.11"), ("ray-worker-2", "10.0.1.12")):
        v = hostvars(inventory, name)
        assert v["ansible_host"] == private
        assert v["ansible_ssh_common_args"] == "-o ProxyJump=admin@203.0.113.10"
        resolved = ssh_config([*shlex.split(v["ansible_ssh_common_args"]), f"admin@{private}"])
        assert resolved["proxyjump"] in ("admin@203.0.113.10", "admin@[203.0.113.10]")
        assert resolved["hostname"] == private


def test_jump_via_private_head_when_use_private_ip(inventory_from):
    inventory = inventory_from(load_fixture("aws_public.json"), jump_via_head=True, use_private_ip=True)

    assert hostvars(inventory, "ray-head")["ansible_host"] == "10.0.1.10"
    assert hostvars(inventory, "ray-worker-1")["ansible_ssh_common_args"] == "-o ProxyJump=admin@10.0.1.10"


def test_jump_with_key_and_known_hosts_passes_both_to_the_hop(tmp_path):
    # a folder with a space checks the quoting through both shlex levels (Ansible's and ProxyCommand's shell)
    outputs_dir = tmp_path / "my cluster"
    write_outputs(outputs_dir, load_fixture("local.json"))
    config = write_config(outputs_dir, outputs_file="outputs.json", jump_via_head=True)

    inventory = parse(config)

    key = str(outputs_dir / "ssh" / "id_ed25519")
    known_hosts = str(outputs_dir / "ssh" / "known_hosts")
    # ssh reads UserKnownHostsFile as a list split on whitespace: the path travels in double quotes
    pinned = ["-o", f'UserKnownHostsFile="{known_hosts}"', "-o", "StrictHostKeyChecking=yes"]
    head = hostvars(inventory, "ray-head")
    assert shlex.split(head["ansible_ssh_common_args"]) == pinned
    worker = hostvars(inventory, "ray-worker-1")
    assert worker["ansible_host"] == "10.77.0.11"
    resolved = ssh_config(
        [
            *shlex.split(worker["ansible_ssh_common_args"]),
            "-i",
            worker["ansible_ssh_private_key_file"],
            "10.77.0.11",
        ]
    )
    assert resolved["userknownhostsfile"] == known_hosts
    assert resolved["stricthostkeychecking"] == "true"
    assert resolved["hostname"] == "10.77.0.11"
    assert resolved.get("proxyjump", "none") == "none"
    # the hop runs under /bin/sh: split it like the shell would
    assert shlex.split(resolved["proxycommand"]) == [
        "ssh",
        "-W",
        "%h:%p",
        "-i",
        key,
        *pinned,
        "rayops@10.77.0.10",
    ]


def test_state_export_secrets_are_revealed(tmp_path):
    state = load_fixture("state_export.json")
    stack = state["deployment"]["resources"][0]["outputs"]
    assert "plaintext" in stack["buckets"]  # the fixture really holds secret envelopes
    write_outputs(tmp_path, state, name="dev-state.json")

    inventory = parse(write_config(tmp_path, state_file="dev-state.json"))

    v = hostvars(inventory, "ray-worker-1")
    assert v["ansible_user"] == "admin"
    assert v["rayops_buckets"] == AWS_BUCKETS
    assert v["ansible_host"] == "203.0.113.11"
    assert group_hosts(inventory, "ray_workers") == ["ray-worker-1", "ray-worker-2"]


def test_reveal_secrets_decodes_nested_envelopes():
    module = plugin_module()
    sig = {module.SECRET_SIG_KEY: module.SECRET_SIG_VALUE}
    inner = {**sig, "plaintext": json.dumps("10.0.0.1")}
    value = {"a": [1, {**sig, "plaintext": json.dumps({"b": inner})}], "c": "plain"}

    assert module.reveal_secrets(value) == {"a": [1, {"b": "10.0.0.1"}], "c": "plain"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("aws.pulumi_stack.yml", True),
        ("local.pulumi_stack.yaml", True),
        ("pulumi_stack.yml", True),
        ("pulumi_stack.yaml", True),
        ("hosts.yml", False),
        ("aws.pulumi_stack.json", False),
        ("aws.pulumi_stack.yml.bak", False),
        ("aws-pulumi_stack.yml", False),
        ("aws.pulumi-stack.yml", False),
        ("aws_ec2.yml", False),
    ],
)
def test_verify_file_accepts_only_pulumi_stack_configs(tmp_path, name, expected):
    path = tmp_path / name
    path.write_text("plugin: pulumi_stack\n", encoding="utf-8")

    assert new_plugin().verify_file(str(path)) is expected


def test_verify_file_refuses_a_missing_file(tmp_path):
    assert new_plugin().verify_file(str(tmp_path / "gone.pulumi_stack.yml")) is False


def test_constructed_compose_groups_and_keyed_groups(inventory_from):
    inventory = inventory_from(
        load_fixture("many_workers.json"),
        strict=True,
        compose={"ray_dashboard_url": "'http://' ~ ray_head_ip ~ ':8265'"},
        groups={"public_nodes": "rayops_public_ip is not none"},
        keyed_groups=[{"prefix": "type", "key": "rayops_instance_type"}],
    )

    assert hostvars(inventory, "ray-worker-7")["ray_dashboard_url"] == "http://10.0.2.10:8265"
    assert group_hosts(inventory, "public_nodes") == ["ray-head"]
    assert group_hosts(inventory, "type_m7i_2xlarge") == ["ray-head"]
    assert len(group_hosts(inventory, "type_c7i_large")) == 20


def test_constructed_strict_fails_on_an_undefined_variable(inventory_from):
    from ansible.errors import AnsibleError

    with pytest.raises(AnsibleError, match="no_such_var"):
        inventory_from(load_fixture("aws_public.json"), strict=True, compose={"x": "no_such_var + 1"})


def test_constructed_not_strict_skips_an_undefined_variable(inventory_from):
    inventory = inventory_from(
        load_fixture("aws_public.json"), strict=False, compose={"x": "no_such_var + 1"}
    )

    assert "x" not in hostvars(inventory, "ray-head")
    assert hostvars(inventory, "ray-head")["ansible_host"] == "203.0.113.10"


def test_cache_hit_serves_the_cached_outputs_and_miss_reads_the_source(tmp_path):
    cache_dir = tmp_path / "cache"
    outputs = load_fixture("aws_public.json")
    outputs_file = write_outputs(tmp_path, outputs)
    config = write_config(
        tmp_path,
        outputs_file="outputs.json",
        cache=True,
        cache_plugin="jsonfile",
        cache_connection=str(cache_dir),
    )

    first = parse(config)  # miss: reads the file, fills the cache
    cached = list(cache_dir.iterdir())
    assert len(cached) == 1
    assert "tok-do-not-leak" not in cached[0].read_text(encoding="utf-8")  # only contract keys are cached
    assert "ray-worker-2" in cached[0].read_text(encoding="utf-8")

    changed = copy.deepcopy(outputs)
    changed["nodes"][2]["name"] = "ray-worker-9"
    write_outputs(tmp_path, changed)
    second = parse(config)  # hit: the cache still says ray-worker-2
    assert sorted(second.hosts) == sorted(first.hosts) == ["ray-head", "ray-worker-1", "ray-worker-2"]

    third = parse(config, cache=False)  # --flush-cache / refresh_inventory: read the source, refresh
    assert sorted(third.hosts) == ["ray-head", "ray-worker-1", "ray-worker-9"]
    assert sorted(parse(config).hosts) == ["ray-head", "ray-worker-1", "ray-worker-9"]

    outputs_file.unlink()
    assert sorted(parse(config).hosts) == ["ray-head", "ray-worker-1", "ray-worker-9"]  # still a hit


def test_cache_is_keyed_by_source(tmp_path):
    cache_dir = tmp_path / "cache"
    write_outputs(tmp_path, load_fixture("aws_public.json"), name="a.json")
    write_outputs(tmp_path, load_fixture("head_only.json"), name="b.json")
    cache = {"cache": True, "cache_plugin": "jsonfile", "cache_connection": str(cache_dir)}

    assert len(parse(write_config(tmp_path, outputs_file="a.json", **cache)).hosts) == 3
    # same config file, other source: a miss, not the first source's hosts
    assert len(parse(write_config(tmp_path, outputs_file="b.json", **cache)).hosts) == 1
    assert len(list(cache_dir.iterdir())) == 2


def test_without_cache_every_parse_reads_the_source(tmp_path):
    write_outputs(tmp_path, load_fixture("aws_public.json"))
    config = write_config(tmp_path, outputs_file="outputs.json")
    assert len(parse(config).hosts) == 3

    write_outputs(tmp_path, load_fixture("head_only.json"))
    assert list(parse(config).hosts) == ["ray-head"]


def test_plugin_reads_the_real_local_config_shape(tmp_path):
    """inventory/local.pulumi_stack.yml, copied into a tree shaped like the repo, finds .rayops/local."""
    repo_inventory = REPO / "inventory" / "local.pulumi_stack.yml"
    (tmp_path / "inventory").mkdir()
    config = tmp_path / "inventory" / "local.pulumi_stack.yml"
    config.write_text(repo_inventory.read_text(encoding="utf-8"), encoding="utf-8")
    write_outputs(tmp_path / ".rayops" / "local", load_fixture("local.json"))

    inventory = parse(config)

    assert group_hosts(inventory, "ray_workers") == ["ray-worker-1", "ray-worker-2"]
    assert hostvars(inventory, "ray-head")["ansible_ssh_private_key_file"] == str(
        tmp_path / ".rayops" / "local" / "ssh" / "id_ed25519"
    )


def test_s3_endpoint_of_another_provider_gets_no_placeholder_key(inventory_from):
    """Only the local cloud's S3 takes any key; an endpoint elsewhere keeps the instance profile."""
    outputs = load_fixture("aws_public.json")
    outputs["s3_endpoint_url"] = "https://s3.internal.example:9000"
    env = hostvars(inventory_from(outputs), "ray-head")["rayops_s3_env"]
    assert env == {
        "AWS_ENDPOINT_URL_S3": "https://s3.internal.example:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }


def test_s3_env_of_the_outputs_is_passed_on_and_the_plugin_adds_no_provider_quirks(inventory_from):
    """The local cloud writes what its nodes need into the contract (s3_env); the plugin knows no provider."""
    outputs = load_fixture("local.json")
    spec = CloudSpec(name="rayops-local", subnet="10.77.0.0/24", s3_port=9000)
    assert outputs["s3_env"] == s3server.node_env(spec), "the fixture must be what the local cloud writes"
    del outputs["s3_env"]

    env = hostvars(inventory_from(outputs), "ray-head")["rayops_s3_env"]

    assert env == {"AWS_ENDPOINT_URL_S3": "http://10.77.0.1:9000", "AWS_DEFAULT_REGION": "local"}


def test_ssh_common_args_option_is_merged_after_the_pinning_and_reaches_the_hop(tmp_path):
    write_outputs(tmp_path, load_fixture("local.json"))
    extra = "-o ServerAliveInterval=15 -o StrictHostKeyChecking=no"
    inventory = parse(
        write_config(tmp_path, outputs_file="outputs.json", jump_via_head=True, ssh_common_args=extra)
    )

    pinned = [
        "-o",
        f"UserKnownHostsFile={tmp_path / 'ssh' / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    head = hostvars(inventory, "ray-head")
    assert shlex.split(head["ansible_ssh_common_args"]) == [*pinned, *shlex.split(extra)]
    worker = hostvars(inventory, "ray-worker-1")
    resolved = ssh_config([*shlex.split(worker["ansible_ssh_common_args"]), "10.77.0.11"])
    assert resolved["stricthostkeychecking"] == "true", "ssh takes the first value: the pinning stays"
    assert resolved["serveraliveinterval"] == "15"
    assert shlex.split(resolved["proxycommand"]) == [
        "ssh",
        "-W",
        "%h:%p",
        "-i",
        str(tmp_path / "ssh" / "id_ed25519"),
        *pinned,
        *shlex.split(extra),
        "rayops@10.77.0.10",
    ]


def test_compose_of_ssh_args_is_merged_after_the_option_and_never_doubles_the_plugins(inventory_from):
    inventory = inventory_from(
        load_fixture("aws_public.json"),
        jump_via_head=True,
        ssh_common_args="-o ServerAliveInterval=15",
        compose={
            # a template that extends the plugin's value adds only its own part
            "ansible_ssh_common_args": "(ansible_ssh_common_args | default('')) ~ ' -C'",
            "ray_dashboard_url": "'http://' ~ ray_head_ip ~ ':8265'",
        },
    )

    head = hostvars(inventory, "ray-head")
    assert head["ansible_ssh_common_args"] == "-o ServerAliveInterval=15 -C"
    assert head["ray_dashboard_url"] == "http://10.0.1.10:8265"  # the rest of compose still applies
    worker = shlex.split(hostvars(inventory, "ray-worker-1")["ansible_ssh_common_args"])
    assert worker == [
        "-o",
        "ProxyCommand=ssh -W %h:%p -o ServerAliveInterval=15 -C admin@203.0.113.10",
        "-o",
        "ServerAliveInterval=15",
        "-C",
    ]


def test_compose_of_ssh_args_that_fails_keeps_the_plugins_unless_strict(inventory_from):
    compose = {"ansible_ssh_common_args": "no_such_variable ~ ' -C'"}
    inventory = inventory_from(load_fixture("aws_public.json"), jump_via_head=True, compose=compose)
    assert hostvars(inventory, "ray-worker-1")["ansible_ssh_common_args"] == "-o ProxyJump=admin@203.0.113.10"

    with pytest.raises(AnsibleError, match="Could not set ansible_ssh_common_args for host ray-head"):
        inventory_from(load_fixture("aws_public.json"), compose=compose, strict=True)
