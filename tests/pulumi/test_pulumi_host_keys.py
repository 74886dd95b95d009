"""Host keys pinned before the first connection (issue 15, item 5): one generated ed25519 host key per node,
installed by cloud-init as the node's only host key, its public half exported in the contract."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from pulumi_harness import RunStack, secret_value

from rayops.contract import validate

INSTANCE = "aws:ec2/instance:Instance"
HOST_KEY = "tls:index/privateKey:PrivateKey"


def _cloud_config(user_data: str) -> dict[str, object]:
    first, _, rest = user_data.partition("\n")
    assert first == "#cloud-config", user_data[:40]
    document: dict[str, object] = json.loads(rest)  # JSON is YAML: what cloud-init reads
    return document


def test_every_node_gets_its_own_generated_host_key(run_stack: RunStack) -> None:
    run = run_stack({"rayops:workerCount": 3})
    keys = run.of_type(HOST_KEY)
    assert sorted(k.name for k in keys) == sorted(f"{i.name}-host-key" for i in run.of_type(INSTANCE))
    assert all(k.inputs["algorithm"] == "ED25519" for k in keys)
    assert len({k.state["publicKeyOpenssh"] for k in keys}) == 4, "nodes share a host key"


def test_user_data_installs_exactly_that_key_and_no_other(run_stack: RunStack) -> None:
    run = run_stack({"rayops:workerCount": 2})
    exported = {n["name"]: n["ssh_host_key"] for n in run.outputs["nodes"]}
    for instance in run.of_type(INSTANCE):
        config = _cloud_config(secret_value(instance.inputs["userData"]))  # a secret input
        assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == [], config.keys()
        ssh_keys = config["ssh_keys"]
        assert isinstance(ssh_keys, dict) and set(ssh_keys) == {"ed25519_private", "ed25519_public"}
        private = serialization.load_ssh_private_key(ssh_keys["ed25519_private"].encode(), password=None)
        public = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        assert public.decode() == ssh_keys["ed25519_public"] == exported[instance.name], instance.name


def test_the_contract_carries_every_public_key_and_no_private_one(run_stack: RunStack) -> None:
    run = run_stack()
    assert validate(run.outputs) == run.outputs
    assert all(n["ssh_host_key"].startswith("ssh-ed25519 ") for n in run.outputs["nodes"])
    text = json.dumps(run.outputs)
    assert "PRIVATE KEY" not in text
    for key in run.of_type(HOST_KEY):
        body = "".join(key.state["privateKeyOpenssh"].splitlines()[1:-1])
        assert body[:40] not in text


def test_the_private_key_is_a_secret_of_the_key_resource(run_stack: RunStack) -> None:
    run = run_stack()
    for key in run.of_type(HOST_KEY):
        assert key.opts is not None, key.name
        assert "private_key_openssh" in (key.opts.additional_secret_outputs or []), key.name


def test_a_new_host_key_replaces_the_instance(run_stack: RunStack) -> None:
    """cloud-init installs ssh_keys at the first boot only: changed user data on a running node would leave
    the old key, which the pinned one then refuses."""
    for instance in run_stack().of_type(INSTANCE):
        assert instance.inputs["userDataReplaceOnChange"] is True, instance.name
