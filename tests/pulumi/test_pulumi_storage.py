"""Storage policy: four private, versioned, encrypted, TLS-only buckets named after the stack, reached by the
nodes only through the VPC's S3 endpoint, whose pinned versions never expire."""

from __future__ import annotations

import json
from typing import Any

import pulumi_aws as aws
import pytest
from pulumi_harness import RunStack, StackRun

from rayops.contract import BUCKET_KINDS
from rayops.workflow import s3 as workflow_s3
from rayops_aws import storage

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


def _expires_noncurrent(rule: dict[str, Any], key: str, tags: dict[str, str]) -> bool:
    """Whether S3 would expire a noncurrent version of ``key`` with ``tags`` under ``rule`` (the rule as
    the program registers it, camelCase): an enabled rule with a noncurrent expiration whose filter
    matches. S3's filter semantics (lifecycle configuration elements): ``prefix``, one ``tag``, or
    ``and`` of a prefix and tags; every named condition must hold; an empty filter matches everything."""
    if rule["status"] != "Enabled" or "noncurrentVersionExpiration" not in rule:
        return False
    spec = rule.get("filter") or {}
    both = spec.get("and") or {}
    prefix = spec.get("prefix") or both.get("prefix") or ""
    wanted = dict(both.get("tags") or {})
    if "tag" in spec:
        wanted[spec["tag"]["key"]] = spec["tag"]["value"]
    return key.startswith(prefix) and all(tags.get(k) == v for k, v in wanted.items())


@pytest.mark.parametrize(("configured", "days"), [(None, 30), (7, 7)])
def test_lifecycle_expires_unpinned_noncurrent_versions_only(
    run_stack: RunStack, configured: int | None, days: int
) -> None:
    """A rule-level evaluation (moto stores lifecycle rules but never runs them): of the versions the
    workflow writes (tests/workflow/test_pipeline.py checks their tags on a real run), the pinned
    ones (model, metadata, manifest and raw data a pointer or manifest names) survive, an unpinned
    one (an old current.json, a report) expires, and untagged ones (Ray Train, Parquet) are kept."""
    run = run_stack({"rayops:noncurrentVersionDays": configured})
    typ = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    assert storage.PIN_TAG == workflow_s3.PIN_TAG  # the tag the workflow writes is the one the rule reads
    for inputs in _for_each_bucket(run, typ).values():
        rules = {rule["id"]: rule for rule in inputs["rules"]}
        assert set(rules) == {"expire-unpinned-noncurrent-versions", "abort-incomplete-multipart-uploads"}
        expiry = rules["expire-unpinned-noncurrent-versions"]
        assert expiry["status"] == "Enabled"
        assert expiry["noncurrentVersionExpiration"] == {"noncurrentDays": days}
        assert expiry["filter"] == {"tag": {"key": "rayops-pinned", "value": "false"}}
        # S3 refuses an abort-incomplete-uploads action in a rule with a tag filter: its own rule,
        # over the whole bucket, and that rule expires nothing.
        abort = rules["abort-incomplete-multipart-uploads"]
        assert abort["filter"] == {"prefix": ""}
        assert abort["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}
        assert "noncurrentVersionExpiration" not in abort
        for tags, expires in (
            ({"rayops-pinned": "true"}, False),
            ({"rayops-pinned": "false"}, True),
            ({}, False),
            ({"rayops-pinned": "true", "other": "false"}, False),
        ):
            for key in ("zone1/runs/r1/model.ubj", "datasets/sha256/ab.csv", "zone1/current.json"):
                assert any(_expires_noncurrent(rule, key, tags) for rule in rules.values()) is expires, (
                    key,
                    tags,
                )


def test_lifecycle_waits_for_versioning(run_stack: RunStack) -> None:
    run = run_stack()
    for lifecycle in run.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"):
        assert lifecycle.opts is not None and lifecycle.opts.depends_on is not None
        [dependency] = lifecycle.opts.depends_on
        assert isinstance(dependency, aws.s3.BucketVersioning)
        assert dependency._name == lifecycle.name.replace("-lifecycle", "-versioning")


def test_only_tls_requests_are_served_and_nodes_only_through_the_vpc_endpoint(run_stack: RunStack) -> None:
    run = run_stack()
    arns = {b.id: b.state["arn"] for b in run.of_type(BUCKET)}
    [endpoint] = run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    roles = sorted(r.state["arn"] for r in run.of_type("aws:iam/role:Role"))
    assert len(roles) == 2
    policies = _for_each_bucket(run, "aws:s3/bucketPolicy:BucketPolicy")
    assert len(policies) == 4
    for bucket_id, inputs in policies.items():
        tls, vpce = json.loads(str(inputs["policy"]))["Statement"]
        resources = [arns[bucket_id], f"{arns[bucket_id]}/*"]
        assert (tls["Effect"], tls["Principal"], tls["Action"], tls["Resource"]) == (
            "Deny",
            "*",
            "s3:*",
            resources,
        )
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert (vpce["Effect"], vpce["Principal"], vpce["Action"], vpce["Resource"]) == (
            "Deny",
            "*",
            "s3:*",
            resources,
        )
        # The node roles (head and worker), and only they, are refused anything not through the endpoint:
        # the operators' own access (pulumi, aws s3 cp) is left alone.
        assert vpce["Condition"] == {
            "StringNotEquals": {"aws:SourceVpce": endpoint.id},
            "ArnEquals": {"aws:PrincipalArn": roles},
        }


def test_policy_of_earlier_versions_is_updated_in_place(run_stack: RunStack) -> None:
    for policy in run_stack().of_type("aws:s3/bucketPolicy:BucketPolicy"):
        assert policy.opts is not None
        assert [a.name for a in policy.opts.aliases] == [policy.name.replace("-policy", "-tls-only")]


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
