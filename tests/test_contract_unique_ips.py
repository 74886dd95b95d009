"""The contract's rule that no two nodes share an IP (a schema cannot say it; rayops/contract.py does)."""

from __future__ import annotations

import copy

import pytest

from rayops.contract import ContractError, validate

NODE = {"public_ip": None, "instance_id": "i-1", "instance_type": "t3.large"}
OUTPUTS = {
    "rayops_contract": 1,
    "cluster_name": "rayops",
    "provider": "aws",
    "region": "eu-west-1",
    "ssh_user": "ubuntu",
    "nodes": [
        {**NODE, "name": "rayops-head", "role": "head", "private_ip": "10.0.1.10"},
        {**NODE, "name": "rayops-worker-1", "role": "worker", "private_ip": "10.0.1.11"},
        {**NODE, "name": "rayops-worker-2", "role": "worker", "private_ip": "10.0.1.12"},
    ],
    "buckets": {"raw": "r-raw", "features": "r-features", "models": "r-models", "results": "r-results"},
    "s3_endpoint_url": None,
}


def test_distinct_ips_validate() -> None:
    assert [n["private_ip"] for n in validate(OUTPUTS)["nodes"]] == ["10.0.1.10", "10.0.1.11", "10.0.1.12"]


@pytest.mark.parametrize("index", [0, 1], ids=["same-as-head", "two-workers"])
def test_two_nodes_with_one_private_ip_are_refused_in_one_sentence(index: int) -> None:
    outputs = copy.deepcopy(OUTPUTS)
    outputs["nodes"][2]["private_ip"] = outputs["nodes"][index]["private_ip"]
    ip = outputs["nodes"][index]["private_ip"]
    with pytest.raises(ContractError) as err:
        validate(outputs)
    assert str(err.value) == f"outputs.nodes: private_ip '{ip}' appears more than once"
