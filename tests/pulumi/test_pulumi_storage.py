"""Storage policy: four private, versioned, encrypted, TLS-only buckets named after the stack."""

from __future__ import annotations

import json

import pulumi_aws as aws
import pytest
from pulumi_harness import RunStack, StackRun

from rayops.contract import BUCKET_KINDS

BUCKET = "aws:s3/bucket:Bucket"


def _for_each_bucket(run: StackRun, typ: str) -> dict[str, dict[str, object]]:
    """The inputs of the one ``typ`` resource attached to each bucket, by bucket id."""
    found: dict[str, dict[str, object]] = {}
    for resource in run.of_type(typ):
        bucket_id = resource.inputs["bucket"]
        assert bucket_id not in found, f"two {typ} on {bucket_id}"
        found[bucket_id] = resource.inputs
    assert sorted(found) == sorted(b.id for b in run.of_type(BUCKET)), f"not every bucket has a {typ}"
    return found


def test_four_buckets_named_after_the_cluster(run_stack: RunStack) -> None:
    run = run_stack({"rayops:clusterName": "ml-lab"})
    buckets = run.of_type(BUCKET)
    assert sorted(b.name for b in buckets) == sorted(f"ml-lab-{kind}" for kind in BUCKET_KINDS)
    # No fixed name: the provider auto-names each bucket (logical name + random suffix), so the
    # name is unique and cannot be registered by someone else in advance.
    for bucket in buckets:
        assert "bucket" not in bucket.inputs and "bucketPrefix" not in bucket.inputs
    exported = run.outputs["buckets"]
    assert set(exported) == set(BUCKET_KINDS)
    for kind, name in exported.items():
        assert name == run.named(f"ml-lab-{kind}").state["bucket"]
        assert name.startswith(f"ml-lab-{kind}-")
    assert len(set(exported.values())) == 4


def test_longest_bucket_name_fits_s3_limit(run_stack: RunStack) -> None:
    run = run_stack({"rayops:clusterName": "c" * 40})
    assert max(len(name) for name in run.outputs["buckets"].values()) <= 63


def test_versioning_is_enabled(run_stack: RunStack) -> None:
    for inputs in _for_each_bucket(run_stack(), "aws:s3/bucketVersioning:BucketVersioning").values():
        assert inputs["versioningConfiguration"] == {"status": "Enabled"}


def test_public_access_is_blocked_in_every_way(run_stack: RunStack) -> None:
    for inputs in _for_each_bucket(
        run_stack(), "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
    ).values():
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            assert inputs[flag] is True, flag


def test_bucket_owner_enforced(run_stack: RunStack) -> None:
    for inputs in _for_each_bucket(
        run_stack(), "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
    ).values():
        assert inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_server_side_encryption(run_stack: RunStack) -> None:
    typ = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    for inputs in _for_each_bucket(run_stack(), typ).values():
        [rule] = inputs["rules"]
        assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in {"AES256", "aws:kms"}


@pytest.mark.parametrize(("configured", "days"), [(None, 30), (7, 7)])
def test_lifecycle_expires_noncurrent_versions(
    run_stack: RunStack, configured: int | None, days: int
) -> None:
    run = run_stack({"rayops:noncurrentVersionDays": configured})
    typ = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    for inputs in _for_each_bucket(run, typ).values():
        [rule] = inputs["rules"]
        assert rule["status"] == "Enabled"
        assert rule["filter"] == {"prefix": ""}, "the rule must cover the whole bucket"
        assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": days}
        assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}


def test_lifecycle_waits_for_versioning(run_stack: RunStack) -> None:
    run = run_stack()
    for lifecycle in run.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"):
        assert lifecycle.opts is not None and lifecycle.opts.depends_on is not None
        [dependency] = lifecycle.opts.depends_on
        assert isinstance(dependency, aws.s3.BucketVersioning)
        assert dependency._name == lifecycle.name.replace("-lifecycle", "-versioning")


def test_only_tls_requests_are_served(run_stack: RunStack) -> None:
    run = run_stack()
    arns = {b.id: b.state["arn"] for b in run.of_type(BUCKET)}
    for bucket_id, inputs in _for_each_bucket(run, "aws:s3/bucketPolicy:BucketPolicy").items():
        [statement] = json.loads(str(inputs["policy"]))["Statement"]
        assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert statement["Resource"] == [arns[bucket_id], f"{arns[bucket_id]}/*"]


@pytest.mark.parametrize(("configured", "expected"), [(None, False), (False, False), (True, True)])
def test_force_destroy_only_when_asked(run_stack: RunStack, configured: bool | None, expected: bool) -> None:
    run = run_stack({"rayops:forceDestroyBuckets": configured})
    assert {b.inputs["forceDestroy"] for b in run.of_type(BUCKET)} == {expected}


def test_no_acl_no_website_no_public_policy(run_stack: RunStack) -> None:
    run = run_stack()
    types = {r.typ for r in run.resources}
    assert types.isdisjoint(
        {"aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketWebsiteConfiguration:BucketWebsiteConfiguration"}
    )
    assert not any(t.startswith("aws:s3/bucketV2") or "V2:" in t for t in types), "deprecated V2 resources"
    for bucket in run.of_type(BUCKET):
        assert not {"acl", "grants", "policy", "website"} & set(bucket.inputs)
