"""Node identity: the IAM role and instance profile every node runs with.

The nodes get temporary credentials from the instance profile through IMDSv2; there are no
access keys anywhere. The role's only policy allows the bucket and object actions the training
job (its data, features, models and results) needs, on the cluster's four buckets and their
objects, and nothing else: no ``*FullAccess`` managed policy, no ``s3:*``, no wildcard resource.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

# Listing and locating a bucket, listing its object versions and its unfinished multipart uploads.
BUCKET_ACTIONS = (
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListBucketVersions",
)
# Reading (also an older version: a promoted model is pinned by version), writing and deleting
# objects. s3:DeleteObjectVersion is left out on purpose: a delete only adds a delete marker, so a
# node can never erase history; the lifecycle rule expires noncurrent versions instead.
OBJECT_ACTIONS = (
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
)

ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Ec2AssumeRole",
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def bucket_access_policy(bucket_arns: Sequence[str]) -> str:
    """The nodes' S3 policy document (JSON) for exactly these buckets and the objects in them."""
    arns = sorted(bucket_arns)
    if not arns or any(not arn.startswith("arn:") or "*" in arn for arn in arns):
        raise ValueError(f"bucket_access_policy needs plain bucket ARNs, got {arns!r}")
    document: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ClusterBuckets",
                "Effect": "Allow",
                "Action": list(BUCKET_ACTIONS),
                "Resource": arns,
            },
            {
                "Sid": "ClusterObjects",
                "Effect": "Allow",
                "Action": list(OBJECT_ACTIONS),
                "Resource": [f"{arn}/*" for arn in arns],
            },
        ],
    }
    return json.dumps(document)


@dataclass(frozen=True)
class NodeIdentityArgs:
    """The buckets the nodes may use (their ARNs)."""

    cluster_name: str
    bucket_arns: list[pulumi.Output[str]]
    tags: dict[str, str] = field(default_factory=dict)


class NodeIdentity(pulumi.ComponentResource):
    """An EC2 role with the bucket policy inline, and the instance profile that carries it."""

    role: aws.iam.Role
    instance_profile: aws.iam.InstanceProfile

    def __init__(self, name: str, args: NodeIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rayops:aws:NodeIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-node-role",
            description=f"rayops {args.cluster_name} nodes: read and write the cluster's four buckets",
            assume_role_policy=ASSUME_ROLE_POLICY,
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-buckets",
            role=self.role.id,
            policy=pulumi.Output.all(*args.bucket_arns).apply(bucket_access_policy),
            opts=child,
        )
        self.instance_profile = aws.iam.InstanceProfile(
            f"{name}-node-profile", role=self.role.name, tags=args.tags, opts=child
        )
        self.register_outputs({"role_arn": self.role.arn, "instance_profile": self.instance_profile.name})
