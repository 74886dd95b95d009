"""Storage: the four private, versioned, encrypted S3 buckets of a cluster (raw, features, models, results).

Bucket names are Pulumi auto-names of the logical name ``<cluster>-<kind>``: the provider appends
7 random hex characters once and keeps them in the stack's state, so a name is derived from the
stack, stable across updates, unique across stacks and accounts, and not guessable (a predictable
name can be registered first by someone else, or re-registered by them after a destroy).

Nothing pinned expires. The workflow tags every object version it writes ``rayops-pinned=false`` and
sets ``rayops-pinned=true`` on the versions a promoted pointer or a features manifest pins (model,
metadata, manifest, raw data; rayops/workflow/promotion.py). S3 lifecycle filters can only include
(a prefix, tags, sizes), never exclude, so the noncurrent-expiry rule includes exactly the versions
tagged ``rayops-pinned=false``: a pinned version, and anything written without the tag (Ray Train's
checkpoints, Parquet blocks, MLflow's artifacts: all under keys that are written once), is never
expired by it. Incomplete multipart uploads are aborted by a rule of their own (S3 refuses that action
in a rule with a tag filter).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from rayops.contract import BUCKET_KINDS

ABORT_INCOMPLETE_UPLOAD_DAYS = 7
#: The tag the workflow writes (rayops/workflow/s3.py PIN_TAG) and the value the expiry rule matches.
PIN_TAG = "rayops-pinned"
EXPIRABLE_VALUE = "false"
EXPIRY_RULE_ID = "expire-unpinned-noncurrent-versions"
ABORT_RULE_ID = "abort-incomplete-multipart-uploads"


def tls_only_policy(bucket_arn: str) -> str:
    """A bucket policy that denies every request not made over TLS."""
    return bucket_policy(bucket_arn, None, [])


def bucket_policy(bucket_arn: str, s3_endpoint_id: str | None, node_role_arns: list[str]) -> str:
    """The bucket's policy: no request without TLS; the nodes' roles only through the VPC's endpoint.

    The second statement names the node roles (``aws:PrincipalArn``), not every principal, so the
    account's operators (``pulumi up``, ``aws s3 cp`` from a laptop) keep their access."""
    resources = [bucket_arn, f"{bucket_arn}/*"]
    statements: list[dict[str, object]] = [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    if s3_endpoint_id is not None and node_role_arns:
        statements.append(
            {
                "Sid": "NodesOnlyThroughTheVpcEndpoint",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": resources,
                "Condition": {
                    "StringNotEquals": {"aws:SourceVpce": s3_endpoint_id},
                    "ArnEquals": {"aws:PrincipalArn": sorted(node_role_arns)},
                },
            }
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


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
        self._public_access: dict[str, aws.s3.BucketPublicAccessBlock] = {}
        for kind in BUCKET_KINDS:
            self.buckets[kind] = self._bucket(f"{args.cluster_name}-{kind}", kind, args)
        self._cluster_name = args.cluster_name
        self.register_outputs({kind: bucket.bucket for kind, bucket in self.buckets.items()})

    def restrict(self, s3_endpoint_id: pulumi.Output[str], node_role_arns: list[pulumi.Output[str]]) -> None:
        """Each bucket's policy (:func:`bucket_policy`), once the endpoint and the node roles exist."""
        for kind, bucket in self.buckets.items():
            logical_name = f"{self._cluster_name}-{kind}"
            aws.s3.BucketPolicy(
                f"{logical_name}-policy",
                bucket=bucket.id,
                policy=pulumi.Output.all(bucket.arn, s3_endpoint_id, *node_role_arns).apply(
                    lambda values: bucket_policy(str(values[0]), str(values[1]), [str(v) for v in values[2:]])
                ),
                # S3 refuses bucket policies until the public access block is settled. The alias keeps
                # the policy of earlier versions (TLS only) and updates it in place.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[self._public_access[kind]],
                    aliases=[pulumi.Alias(name=f"{logical_name}-tls-only")],
                ),
            )

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
                    id=EXPIRY_RULE_ID,
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(
                        tag=aws.s3.BucketLifecycleConfigurationRuleFilterTagArgs(
                            key=PIN_TAG, value=EXPIRABLE_VALUE
                        )
                    ),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_days
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id=ABORT_RULE_ID,
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=ABORT_INCOMPLETE_UPLOAD_DAYS
                    ),
                ),
            ],
            # A lifecycle rule on noncurrent versions needs versioning in place first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        self._public_access[kind] = public_access
        return bucket
