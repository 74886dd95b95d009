"""IAM policy by role: the head reads and writes the four buckets and promotes; the workers read them and
write only the features' Parquet folders and Ray Train's storage; no static keys, no managed policies.

Each statement of both documents is checked here as the Pulumi program attaches it (mocks); what the
statements mean to S3 is checked against moto with IAM enforced in tests/workflow/test_s3_iam_policy.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi_harness import RunStack, StackRun

from rayops_aws.iam import head_policy, worker_policy

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"
# The reviewed permission sets, written out here so that a change to the program shows up as a diff.
BUCKET_ACTIONS = [
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListBucketVersions",
]
READ = ["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectVersion", "s3:GetObjectVersionTagging"]
WRITE = ["s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:PutObject"]
TAG = ["s3:PutObjectTagging", "s3:PutObjectVersionTagging"]


def _arns(run: StackRun) -> dict[str, str]:
    return {b.inputs["tags"]["rayops:bucket"]: b.state["arn"] for b in run.of_type("aws:s3/bucket:Bucket")}


def _roles(run: StackRun) -> dict[str, Any]:
    return {r.inputs["tags"]["rayops:role"]: r for r in run.of_type(ROLE)}


def _policies(run: StackRun) -> dict[str, dict[str, Any]]:
    """role (head/worker) -> its policy document, matched through the role's id."""
    by_id = {role.id: kind for kind, role in _roles(run).items()}
    return {by_id[p.inputs["role"]]: json.loads(p.inputs["policy"]) for p in run.of_type(ROLE_POLICY)}


def _statements(document: dict[str, Any]) -> dict[str, tuple[str, list[str], list[str]]]:
    return {s["Sid"]: (s["Effect"], s["Action"], s["Resource"]) for s in document["Statement"]}


def test_the_head_statements(run_stack: RunStack) -> None:
    run = run_stack()
    arns = sorted(_arns(run).values())
    objects = [f"{arn}/*" for arn in arns]
    assert _statements(_policies(run)["head"]) == {
        "ClusterBuckets": ("Allow", BUCKET_ACTIONS, arns),
        "ClusterObjects": ("Allow", [*READ, *WRITE, "s3:DeleteObject"], objects),
        "PinVersions": ("Allow", TAG, objects),
    }


def test_the_worker_statements(run_stack: RunStack) -> None:
    run = run_stack()
    arns = _arns(run)
    every = sorted(arns.values())
    assert _statements(_policies(run)["worker"]) == {
        "ClusterBuckets": ("Allow", BUCKET_ACTIONS, every),
        "ReadObjects": ("Allow", READ, [f"{arn}/*" for arn in every]),
        # Ray Data's feature blocks and Ray Train's storage, nothing else.
        "WriteOwnPrefixes": (
            "Allow",
            WRITE,
            [f"{arns['features']}/zone*/runs/*/data/*", f"{arns['models']}/zone*/ray-train/*"],
        ),
        "DeleteRayTrainStorage": ("Allow", ["s3:DeleteObject"], [f"{arns['models']}/zone*/ray-train/*"]),
        # Explicit denies: they hold even if an allow above is widened one day.
        "NeverPromote": (
            "Deny",
            ["s3:PutObject", "s3:DeleteObject"],
            [f"{arns['models']}/zone*/current.json"],
        ),
        "NeverUnpin": ("Deny", TAG, [f"{arn}/*" for arn in every]),
    }


def test_no_wildcard_actions_and_no_way_to_erase_history(run_stack: RunStack) -> None:
    for role, document in _policies(run_stack()).items():
        for statement in document["Statement"]:
            assert "NotAction" not in statement and "NotResource" not in statement, role
            for action in statement["Action"]:
                assert action.startswith("s3:") and "*" not in action, (role, action)
            assert "s3:DeleteObjectVersion" not in statement["Action"], role
            assert all(arn.startswith("arn:aws:s3:::") for arn in statement["Resource"]), role
            assert "*" not in statement["Resource"] and "arn:aws:s3:::*" not in statement["Resource"], role


def test_two_roles_only_for_ec2_without_managed_policies(run_stack: RunStack) -> None:
    run = run_stack()
    roles = _roles(run)
    assert sorted(roles) == ["head", "worker"]
    for role in roles.values():
        trust = json.loads(role.inputs["assumeRolePolicy"])
        assert [(s["Effect"], s["Principal"], s["Action"]) for s in trust["Statement"]] == [
            ("Allow", {"Service": "ec2.amazonaws.com"}, "sts:AssumeRole")
        ]
        assert not role.inputs.get("managedPolicyArns")
    assert len(run.of_type(ROLE_POLICY)) == 2


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


def test_the_head_runs_with_the_head_profile_and_workers_with_theirs(run_stack: RunStack) -> None:
    run = run_stack({"rayops:workerCount": 3})
    roles = _roles(run)
    profiles = {p.inputs["role"]: p.state["name"] for p in run.of_type(PROFILE)}
    head_profile, worker_profile = (
        profiles[roles["head"].state["name"]],
        profiles[roles["worker"].state["name"]],
    )
    by_role: dict[str, set[str]] = {}
    for instance in run.of_type("aws:ec2/instance:Instance"):
        by_role.setdefault(instance.inputs["tags"]["rayops:role"], set()).add(
            instance.inputs["iamInstanceProfile"]
        )
    assert by_role == {"head": {head_profile}, "worker": {worker_profile}}


def test_the_head_keeps_the_logical_names_of_the_single_role_of_earlier_versions(run_stack: RunStack) -> None:
    """An update of an existing stack changes the head's role in place instead of replacing it."""
    run = run_stack()
    cluster = run.outputs["cluster_name"]
    names = {r.name for r in run.resources if r.typ in (ROLE, ROLE_POLICY, PROFILE)}
    assert names == {
        *(f"{cluster}-{suffix}" for suffix in ("node-role", "buckets", "node-profile")),
        *(f"{cluster}-worker-{suffix}" for suffix in ("role", "buckets", "profile")),
    }


ARNS = {kind: f"arn:aws:s3:::b-{kind}" for kind in ("raw", "features", "models", "results")}


@pytest.mark.parametrize(
    "arns",
    [
        {},
        {**ARNS, "raw": "*"},
        {**ARNS, "raw": "arn:aws:s3:::*"},
        {**ARNS, "raw": "my-bucket"},
        dict(list(ARNS.items())[:3]),
    ],
)
@pytest.mark.parametrize("builder", [head_policy, worker_policy])
def test_policy_builders_refuse_anything_but_the_four_plain_bucket_arns(
    arns: dict[str, str], builder: Any
) -> None:
    with pytest.raises(ValueError, match="need the four buckets' plain ARNs by kind"):
        builder(arns)
