"""Node identity: two IAM roles and instance profiles, one for the head and one for the workers.

The nodes get temporary credentials from their instance profile through IMDSv2; there are no access
keys anywhere. Each role's only policy lists the bucket and object actions that kind of node needs,
on the cluster's four buckets, and nothing else: no ``*FullAccess`` managed policy, no ``s3:*``.

* head (the training job's driver, JupyterLab, MLflow, the promotion): reads and writes the four
  buckets' objects, tags the versions a promotion pins, deletes only by delete marker.
* workers (Ray Data blocks, Ray Train workers, Serve replicas): read the four buckets; write only the
  features' Parquet folders (``zone*/runs/*/data/``) and Ray Train's storage (``zone*/ray-train/``);
  delete only in Ray Train's storage; an explicit deny on the promotion pointers (``zone*/current.json``)
  and on tagging, so a worker can neither promote a model nor unpin one.

s3:DeleteObjectVersion is in neither: a delete only adds a delete marker, so no node can erase
history; the lifecycle rule expires unpinned noncurrent versions instead (storage.py). The bucket
policies add that both roles' requests must come through the VPC's S3 gateway endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from rayops.contract import BUCKET_KINDS

ROLES = ("head", "worker")
# Listing and locating a bucket, listing its object versions and its unfinished multipart uploads.
BUCKET_ACTIONS = (
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListBucketVersions",
)
# Reading an object (also an older version: a promoted model is pinned by version) and its tags.
READ_ACTIONS = (
    "s3:GetObject",
    "s3:GetObjectTagging",
    "s3:GetObjectVersion",
    "s3:GetObjectVersionTagging",
)
# Writing an object (the workflow tags every object it writes: s3:PutObjectTagging), in parts too.
WRITE_ACTIONS = (
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
)
# Pinning a version out of the lifecycle rule (the head only).
TAG_ACTIONS = ("s3:PutObjectTagging", "s3:PutObjectVersionTagging")
DELETE_ACTIONS = ("s3:DeleteObject",)
#: What a worker writes: Ray Data's feature blocks and Ray Train's storage (checkpoints, results).
WORKER_WRITE_PREFIXES = {"features": ("zone*/runs/*/data/*",), "models": ("zone*/ray-train/*",)}
#: Where a worker may delete (Ray Train removes its own old checkpoints).
WORKER_DELETE_PREFIXES = {"models": ("zone*/ray-train/*",)}
#: The promotion pointers: only the head writes them.
POINTER_PATTERN = "zone*/current.json"
# Kept for the policy tests of earlier versions: the head's object actions.
OBJECT_ACTIONS = tuple(sorted({*READ_ACTIONS, *WRITE_ACTIONS, *TAG_ACTIONS, *DELETE_ACTIONS}))

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


def _checked(buckets: Mapping[str, str]) -> dict[str, str]:
    arns = dict(buckets)
    if sorted(arns) != sorted(BUCKET_KINDS) or any(
        not str(arn).startswith("arn:") or "*" in str(arn) for arn in arns.values()
    ):
        raise ValueError(f"the node policies need the four buckets' plain ARNs by kind, got {arns!r}")
    return arns


def head_policy(buckets: Mapping[str, str]) -> str:
    """The head's S3 policy document (JSON): ``buckets`` maps raw/features/models/results to ARNs."""
    arns = sorted(_checked(buckets).values())
    objects = [f"{arn}/*" for arn in arns]
    document: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ClusterBuckets", "Effect": "Allow", "Action": list(BUCKET_ACTIONS), "Resource": arns},
            {
                "Sid": "ClusterObjects",
                "Effect": "Allow",
                "Action": [*READ_ACTIONS, *WRITE_ACTIONS, *DELETE_ACTIONS],
                "Resource": objects,
            },
            {"Sid": "PinVersions", "Effect": "Allow", "Action": list(TAG_ACTIONS), "Resource": objects},
        ],
    }
    return json.dumps(document)


def worker_policy(buckets: Mapping[str, str]) -> str:
    """The workers' S3 policy document (JSON): read everything, write and delete only their prefixes."""
    arns = _checked(buckets)
    every = sorted(arns.values())
    writable = [
        f"{arns[kind]}/{pattern}" for kind, patterns in WORKER_WRITE_PREFIXES.items() for pattern in patterns
    ]
    deletable = [
        f"{arns[kind]}/{pattern}" for kind, patterns in WORKER_DELETE_PREFIXES.items() for pattern in patterns
    ]
    document: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ClusterBuckets", "Effect": "Allow", "Action": list(BUCKET_ACTIONS), "Resource": every},
            {
                "Sid": "ReadObjects",
                "Effect": "Allow",
                "Action": list(READ_ACTIONS),
                "Resource": [f"{arn}/*" for arn in every],
            },
            {
                "Sid": "WriteOwnPrefixes",
                "Effect": "Allow",
                "Action": list(WRITE_ACTIONS),
                "Resource": writable,
            },
            {
                "Sid": "DeleteRayTrainStorage",
                "Effect": "Allow",
                "Action": list(DELETE_ACTIONS),
                "Resource": deletable,
            },
            {
                "Sid": "NeverPromote",
                "Effect": "Deny",
                "Action": ["s3:PutObject", *DELETE_ACTIONS],
                "Resource": [f"{arns['models']}/{POINTER_PATTERN}"],
            },
            {
                "Sid": "NeverUnpin",
                "Effect": "Deny",
                "Action": list(TAG_ACTIONS),
                "Resource": [f"{arn}/*" for arn in every],
            },
        ],
    }
    return json.dumps(document)


POLICIES = {"head": head_policy, "worker": worker_policy}


@dataclass(frozen=True)
class NodeIdentityArgs:
    """The buckets the nodes may use (their ARNs by kind: raw, features, models, results)."""

    cluster_name: str
    bucket_arns: dict[str, pulumi.Output[str]]
    tags: dict[str, str] = field(default_factory=dict)


class NodeIdentity(pulumi.ComponentResource):
    """Per kind of node (head, worker): an EC2 role with its bucket policy inline and its instance profile."""

    roles: dict[str, aws.iam.Role]
    instance_profiles: dict[str, aws.iam.InstanceProfile]

    def __init__(self, name: str, args: NodeIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rayops:aws:NodeIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        kinds = list(args.bucket_arns)
        arns = pulumi.Output.all(*args.bucket_arns.values()).apply(
            lambda values: dict(zip(kinds, values, strict=True))
        )
        self.roles, self.instance_profiles = {}, {}
        for role in ROLES:
            # The head keeps the logical names of the single role of earlier versions (an update, no
            # replacement of the head's profile); the workers get their own.
            prefix = f"{name}-node" if role == "head" else f"{name}-{role}"
            what = (
                "read and write the cluster's four buckets, promote models"
                if role == "head"
                else "read the cluster's buckets, write features and Ray Train storage only"
            )
            self.roles[role] = aws.iam.Role(
                f"{prefix}-role",
                description=f"rayops {args.cluster_name} {role}: {what}",
                assume_role_policy=ASSUME_ROLE_POLICY,
                tags={**args.tags, "rayops:role": role},
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-buckets" if role == "head" else f"{name}-{role}-buckets",
                role=self.roles[role].id,
                policy=arns.apply(POLICIES[role]),
                opts=child,
            )
            self.instance_profiles[role] = aws.iam.InstanceProfile(
                f"{prefix}-profile", role=self.roles[role].name, tags=args.tags, opts=child
            )
        self.register_outputs(
            {
                **{f"{role}_role_arn": r.arn for role, r in self.roles.items()},
                **{f"{role}_instance_profile": p.name for role, p in self.instance_profiles.items()},
            }
        )
