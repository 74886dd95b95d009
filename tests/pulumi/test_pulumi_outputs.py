"""Stack outputs: exactly contract v1, valid for any worker count, nothing secret; the example stack file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_harness import PULUMI_DIR, REGION, AwsMocks, RunStack, StackRun, openssh_ed25519_public_key

from rayops.contract import head, load_schema, validate

INSTANCE = "aws:ec2/instance:Instance"


def test_outputs_are_exactly_the_contract_keys(run_stack: RunStack) -> None:
    outputs = run_stack().outputs
    schema = load_schema()
    assert set(outputs) == set(schema["required"]) | {"s3_endpoint_url"}
    assert set(outputs) <= set(schema["properties"])


@pytest.mark.parametrize("workers", [0, 1, 2, 5])
def test_outputs_validate_against_the_contract(run_stack: RunStack, workers: int) -> None:
    outputs = run_stack({"rayops:workerCount": workers}).outputs
    assert validate(outputs) == outputs
    assert len(outputs["nodes"]) == 1 + workers
    assert head(outputs)["name"] == "rayops-dev-head"
    assert outputs["nodes"][0]["role"] == "head"


def test_output_values(run_stack: RunStack) -> None:
    run = run_stack({"rayops:sshUser": "admin", "rayops:clusterName": "ml-lab"})
    outputs = run.outputs
    assert outputs["rayops_contract"] == 1
    assert outputs["provider"] == "aws"
    assert outputs["region"] == REGION
    assert outputs["ssh_user"] == "admin"
    assert outputs["cluster_name"] == "ml-lab"
    assert outputs["s3_endpoint_url"] is None


def test_nodes_describe_the_instances(run_stack: RunStack) -> None:
    run = run_stack({"rayops:workerCount": 2, "rayops:spotWorkers": True, "rayops:secondAz": True})
    validate(run.outputs)
    instances = {i.name: i for i in run.of_type(INSTANCE)}
    # Registration order of the instances depends on the engine's scheduling: compare as sets.
    names = [n["name"] for n in run.outputs["nodes"]]
    assert len(names) == len(instances) == 3 and set(names) == set(instances)
    elastic_ip = run.one("aws:ec2/eip:Eip")
    for node in run.outputs["nodes"]:
        instance = instances[node["name"]]
        assert node["instance_id"] == instance.id
        assert node["private_ip"] == instance.state["privateIp"]
        # The head's address is its Elastic IP (it survives a stop/start), the workers' their own.
        public = elastic_ip.state["publicIp"] if node["role"] == "head" else instance.state["publicIp"]
        assert node["public_ip"] == public
        assert node["instance_type"] == instance.inputs["instanceType"]


def test_a_node_without_public_ip_is_exported_as_null(run_stack: RunStack, mocks: AwsMocks) -> None:
    mocks.public_ips = False
    outputs = run_stack().outputs
    # The head keeps its Elastic IP; workers without a public IP are exported as null.
    assert [n["public_ip"] for n in outputs["nodes"] if n["role"] == "worker"] == [None, None]
    validate(outputs)


def test_nothing_exported_is_secret_or_key_material(run_stack: RunStack) -> None:
    key = openssh_ed25519_public_key("someone@laptop")
    run = run_stack({"rayops:sshPublicKey": key})
    assert run.secret_outputs == []
    text = repr(run.outputs)
    assert key.split()[1] not in text
    assert "arn:aws:iam" not in text


def test_what_the_engine_stores(run_stack: RunStack) -> None:
    """The outputs after the SDK serialised them for the engine (`pulumi stack output --json` prints these).

    The Python SDK drops a top-level output whose value is None (pulumi/pulumi#13806), so
    s3_endpoint_url (null on AWS) does not reach the engine: readers must take a missing
    s3_endpoint_url as null. Every other key arrives unchanged, nested nulls included.
    """
    run = run_stack()
    stored = run.engine_outputs
    assert "s3_endpoint_url" not in stored
    expected = {key: value for key, value in run.outputs.items() if key != "s3_endpoint_url"}
    assert stored == expected
    # What the inventory plugin reads from the AWS stack validates, with s3_endpoint_url taken as null.
    assert validate(dict(stored))["s3_endpoint_url"] is None
    assert validate(dict(stored)) == {**stored, "s3_endpoint_url": None}


def _example_config() -> dict[str, Any]:
    document = yaml.safe_load(Path(PULUMI_DIR, "Pulumi.example.yaml").read_text(encoding="utf-8"))
    config: dict[str, Any] = document["config"]
    return config


def test_example_stack_file_documents_every_setting() -> None:
    from rayops_aws.settings import KNOWN_KEYS

    text = Path(PULUMI_DIR, "Pulumi.example.yaml").read_text(encoding="utf-8")
    for key in KNOWN_KEYS:
        assert f"rayops:{key}:" in text, f"rayops:{key} is not documented in Pulumi.example.yaml"
    assert _example_config()["aws:region"] == "ap-southeast-1"


def _inventory(run: StackRun) -> list[tuple[str, str, str]]:
    # Resources register concurrently, so compare them in a stable order.
    return sorted((r.typ, r.name, json.dumps(r.inputs, sort_keys=True)) for r in run.resources)


def test_example_stack_file_holds_the_defaults(run_stack: RunStack) -> None:
    example = {**_example_config(), "rayops:sshPublicKey": openssh_ed25519_public_key()}
    from_example = run_stack(config=example)
    validate(from_example.outputs)
    minimal = run_stack(
        config={key: example[key] for key in ("aws:region", "rayops:allowedSshCidrs", "rayops:sshPublicKey")}
    )
    assert _inventory(from_example) == _inventory(minimal)
    assert from_example.outputs == minimal.outputs
