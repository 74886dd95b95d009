"""Storage: the four private, versioned, encrypted S3 buckets of a cluster (raw, features, models, results).

Bucket names are Pulumi auto-names of the logical name ``<cluster>-<kind>``: the provider appends
7 random hex characters once and keeps them in the stack's state, so a name is derived from the
stack, stable across updates, unique across stacks and accounts, and not guessable (a predictable
name can be registered first by someone else, or re-registered by them after a destroy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from rayops.contract import BUCKET_KINDS

ABORT_INCOMPLETE_UPLOAD_DAYS = 7


def tls_only_policy(bucket_arn: str) -> str:
    """A bucket policy that denies every request not made over TLS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


@dataclass(frozen=True)
class StorageArgs:
    """Bucket settings: keep noncurrent versions this many days; let destroy empty the buckets or not."""

    cluster_name: str
    noncurrent_version_days: int
    force_destroy: bool = False
    tags: dict[str, str] = field(default_factory=dict)


class Storage(pulumi.ComponentResource):
    """Four buckets, each with versioning, SSE, a lifecycle rule, ownership controls and no public access."""

    buckets: dict[str, aws.s3.Bucket]

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rayops:aws:Storage", name, None, opts)
        self.buckets = {}
        for kind in BUCKET_KINDS:
            self.buckets[kind] = self._bucket(f"{args.cluster_name}-{kind}", kind, args)
        self.register_outputs({kind: bucket.bucket for kind, bucket in self.buckets.items()})

    def _bucket(self, logical_name: str, kind: str, args: StorageArgs) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(
            logical_name,
            force_destroy=args.force_destroy,
            tags={**args.tags, "rayops:bucket": kind},
            opts=child,
        )
        # Everything below refers to the bucket, so it is created after it.
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{logical_name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{logical_name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{logical_name}-sse",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                )
            ],
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{logical_name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{logical_name}-lifecycle",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=ABORT_INCOMPLETE_UPLOAD_DAYS
                    ),
                )
            ],
            # A lifecycle rule on noncurrent versions needs versioning in place first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        aws.s3.BucketPolicy(
            f"{logical_name}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(tls_only_policy),
            # S3 refuses bucket policies until the public access block is settled.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        return bucket
