"""IAM policy: the nodes reach their four buckets and their objects, nothing more; no static keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi_harness import RunStack, StackRun

from rayops_aws.iam import bucket_access_policy

ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
# The reviewed permission set, written out here so that a change to the program shows up as a diff.
BUCKET_ACTIONS = {
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListBucketVersions",
}
OBJECT_ACTIONS = {
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
}


def _node_policy(run: StackRun) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(run.one(ROLE_POLICY).inputs["policy"])
    return document


def _bucket_arns(run: StackRun) -> set[str]:
    return {b.state["arn"] for b in run.of_type("aws:s3/bucket:Bucket")}


def test_policy_resources_are_the_four_buckets_and_their_objects(run_stack: RunStack) -> None:
    run = run_stack()
    arns = _bucket_arns(run)
    assert len(arns) == 4
    resources = {r for s in _node_policy(run)["Statement"] for r in s["Resource"]}
    assert resources == arns | {f"{arn}/*" for arn in arns}


def test_bucket_actions_on_buckets_object_actions_on_objects(run_stack: RunStack) -> None:
    run = run_stack()
    arns = _bucket_arns(run)
    statements = _node_policy(run)["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    for statement in statements:
        actions = set(statement["Action"])
        if set(statement["Resource"]) == arns:
            assert actions == BUCKET_ACTIONS
        else:
            assert set(statement["Resource"]) == {f"{arn}/*" for arn in arns}
            assert actions == OBJECT_ACTIONS


def test_bucket_statement_allows_listing_locating_and_versions(run_stack: RunStack) -> None:
    actions = {a for s in _node_policy(run_stack())["Statement"] for a in s["Action"]}
    assert {"s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketVersions"} <= actions
    assert {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"} <= actions


def test_no_wildcards_and_no_way_to_erase_history(run_stack: RunStack) -> None:
    for statement in _node_policy(run_stack())["Statement"]:
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in statement["Action"]:
            assert action.startswith("s3:") and "*" not in action, action
        assert "s3:DeleteObjectVersion" not in statement["Action"]
        assert not any(not arn.startswith("arn:aws:s3:::") for arn in statement["Resource"])
        assert "*" not in statement["Resource"] and "arn:aws:s3:::*" not in statement["Resource"]


def test_role_is_only_for_ec2_and_has_no_managed_policies(run_stack: RunStack) -> None:
    run = run_stack()
    role = run.one("aws:iam/role:Role")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert [(s["Effect"], s["Principal"], s["Action"]) for s in trust["Statement"]] == [
        ("Allow", {"Service": "ec2.amazonaws.com"}, "sts:AssumeRole")
    ]
    assert not role.inputs.get("managedPolicyArns")
    assert run.one(ROLE_POLICY).inputs["role"] == role.id


def test_no_static_keys_users_or_full_access_anywhere(run_stack: RunStack) -> None:
    run = run_stack()
    forbidden = {
        "aws:iam/accessKey:AccessKey",
        "aws:iam/user:User",
        "aws:iam/userPolicy:UserPolicy",
        "aws:iam/userPolicyAttachment:UserPolicyAttachment",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:iam/policyAttachment:PolicyAttachment",
    }
    assert not forbidden & {r.typ for r in run.resources}
    everything = json.dumps([r.inputs for r in run.resources])
    assert "FullAccess" not in everything
    assert "AKIA" not in everything and "aws_secret_access_key" not in everything.lower()


def test_every_node_runs_with_the_instance_profile(run_stack: RunStack) -> None:
    run = run_stack({"rayops:workerCount": 3})
    profile = run.one("aws:iam/instanceProfile:InstanceProfile")
    assert profile.inputs["role"] == run.one("aws:iam/role:Role").state["name"]
    instances = run.of_type("aws:ec2/instance:Instance")
    assert len(instances) == 4
    assert {i.inputs["iamInstanceProfile"] for i in instances} == {profile.state["name"]}


@pytest.mark.parametrize("arns", [[], ["*"], ["arn:aws:s3:::*"], ["my-bucket"]])
def test_policy_builder_refuses_anything_but_plain_bucket_arns(arns: list[str]) -> None:
    with pytest.raises(ValueError, match="needs plain bucket ARNs"):
        bucket_access_policy(arns)
