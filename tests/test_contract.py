"""The stack-output contract v1: the one definition every producer and consumer is checked against."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rayops.contract import ContractError, head, validate

GOOD: dict[str, Any] = {
    "rayops_contract": 1,
    "cluster_name": "rayops",
    "provider": "local",
    "region": "local",
    "ssh_user": "rayops",
    "nodes": [
        {
            "name": "rayops-head",
            "role": "head",
            "private_ip": "10.213.7.10",
            "public_ip": None,
            "instance_id": "nspawn-rayops-head",
            "instance_type": "nspawn",
        },
        {
            "name": "rayops-worker-1",
            "role": "worker",
            "private_ip": "10.213.7.11",
            "public_ip": None,
            "instance_id": "nspawn-rayops-worker-1",
            "instance_type": "nspawn",
        },
    ],
    "buckets": {
        "raw": "rayops-raw",
        "features": "rayops-features",
        "models": "rayops-models",
        "results": "rayops-results",
    },
    "s3_endpoint_url": "http://10.213.7.1:5599",
}


def changed(**top: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data.update(top)
    return data


def test_good_outputs_validate_and_name_the_head() -> None:
    assert validate(GOOD) == GOOD
    assert head(validate(GOOD))["private_ip"] == "10.213.7.10"


def test_absent_s3_endpoint_is_null_as_pulumi_exports_it() -> None:
    data = changed()
    del data["s3_endpoint_url"]
    assert validate(data)["s3_endpoint_url"] is None
    assert "s3_endpoint_url" not in data, "validate must not change its input"


def test_optional_s3_env_is_kept_as_given() -> None:
    env = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "rayops-local"}
    assert validate(changed(s3_env=env))["s3_env"] == env


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([], "must be a JSON object, got list"),
        (changed(rayops_contract=2), "'rayops_contract' is 2, this rayops reads version 1"),
        (changed(provider="gcp"), r"outputs.provider: 'gcp' is not one of"),
        (changed(buckets={"raw": "a-raw"}), "outputs.buckets: 'features' is a required property"),
        (changed(nodes=[{**GOOD["nodes"][0], "private_ip": None}]), r"outputs.nodes\[0\].private_ip"),
        (changed(nodes=[GOOD["nodes"][1]]), "exactly one node with role 'head', found 0"),
        (
            changed(nodes=[GOOD["nodes"][0], {**GOOD["nodes"][0], "private_ip": "10.213.7.12"}]),
            "exactly one node with role 'head', found 2",
        ),
        (
            changed(nodes=[GOOD["nodes"][0], {**GOOD["nodes"][1], "name": "rayops-head"}]),
            "name 'rayops-head' appears more than once",
        ),
        (changed(s3_endpoint_url="ftp://x"), "outputs.s3_endpoint_url"),
        (changed(s3_env={"AWS_REGION": 1}), r"outputs.s3_env.AWS_REGION: 1 is not of type 'string'"),
        (changed(s3_env={"aws region": "x"}), "outputs.s3_env: 'aws region' does not match"),
    ],
)
def test_bad_outputs_are_one_sentence_naming_the_key(outputs: Any, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        validate(outputs)
