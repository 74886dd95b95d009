"""The stack: look up what depends on the account and region, build the components, return the contract.

:func:`build` returns the stack outputs, exactly the keys of contract v1
(``rayops/contract.schema.json``); ``__main__.py`` exports each one as a top-level output, so
``pulumi stack output --json`` prints the contract object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from rayops.contract import CONTRACT_VERSION

from .cluster import Cluster, ClusterArgs
from .iam import NodeIdentity, NodeIdentityArgs
from .network import Network, NetworkArgs
from .settings import (
    MIN_HEAD_MEMORY_MIB,
    MIN_WORKER_MEMORY_MIB,
    ConfigError,
    Settings,
)
from .storage import Storage, StorageArgs


def lookup_ami(settings: Settings) -> aws.ec2.AwaitableGetAmiResult:
    """The configured AMI, or the newest one matching the owner and name filter (Ubuntu 24.04 amd64)."""
    if settings.ami_id is not None:
        return aws.ec2.get_ami(
            filters=[aws.ec2.GetAmiFilterArgs(name="image-id", values=[settings.ami_id])],
        )
    return aws.ec2.get_ami(
        most_recent=True,
        owners=[settings.ami_owner],
        filters=[
            aws.ec2.GetAmiFilterArgs(name="name", values=[settings.ami_name_filter]),
            aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
            aws.ec2.GetAmiFilterArgs(name="virtualization-type", values=["hvm"]),
            aws.ec2.GetAmiFilterArgs(name="root-device-type", values=["ebs"]),
        ],
    )


def check_instance_type(key: str, instance_type: str, min_memory_mib: int, architecture: str) -> None:
    """Refuse an instance type too small for its Ray role or unable to boot the AMI's architecture."""
    info = aws.ec2.get_instance_type(instance_type=instance_type)
    if architecture not in info.supported_architectures:
        raise ConfigError(
            f"rayops:{key} {instance_type} runs {'/'.join(info.supported_architectures)}, but the AMI is "
            f"{architecture}: choose an {architecture} instance type such as m5.xlarge"
        )
    if info.memory_size < min_memory_mib:
        raise ConfigError(
            f"rayops:{key} {instance_type} has {info.memory_size / 1024:g} GiB of memory, Ray needs at "
            f"least {min_memory_mib // 1024} GiB there: run `pulumi config set rayops:{key} m5.xlarge`"
        )


def choose_zones(instance_types: Sequence[str], count: int) -> tuple[str, ...]:
    """The first ``count`` default (not opt-in) availability zones that offer every instance type."""
    zones = aws.get_availability_zones(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
    )
    offerings = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[
            aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=list(instance_types))
        ],
    )
    offered: dict[str, set[str]] = {}
    for location, offered_type in zip(offerings.locations, offerings.instance_types, strict=True):
        offered.setdefault(location, set()).add(offered_type)
    usable = [zone for zone in sorted(zones.names) if offered.get(zone, set()) >= set(instance_types)]
    if len(usable) < count:
        types = " and ".join(sorted(set(instance_types)))
        fix = "choose other instance types (rayops:headInstanceType, rayops:workerInstanceType)"
        if count > 1:
            fix += " or run `pulumi config set rayops:secondAz false`"
        raise ConfigError(
            f"{len(usable)} availability zone(s) of this region offer {types}, {count} needed: {fix}"
        )
    return tuple(usable[:count])


def build(settings: Settings) -> dict[str, Any]:
    """Create every resource of the stack and return the stack outputs (contract v1)."""
    tags = {"rayops:cluster": settings.cluster_name}
    region = aws.get_region().region

    ami = lookup_ami(settings)
    check_instance_type(
        "headInstanceType", settings.head_instance_type, MIN_HEAD_MEMORY_MIB, ami.architecture
    )
    needed_types = [settings.head_instance_type]
    if settings.worker_count > 0:
        check_instance_type(
            "workerInstanceType", settings.worker_instance_type, MIN_WORKER_MEMORY_MIB, ami.architecture
        )
        needed_types.append(settings.worker_instance_type)
    zones = choose_zones(needed_types, 2 if settings.second_az else 1)

    network = Network(
        settings.cluster_name,
        NetworkArgs(
            cluster_name=settings.cluster_name,
            vpc_cidr=settings.vpc_cidr,
            availability_zones=zones,
            allowed_ssh_cidrs=settings.allowed_ssh_cidrs,
            region=region,
            tags=tags,
        ),
    )
    storage = Storage(
        settings.cluster_name,
        StorageArgs(
            cluster_name=settings.cluster_name,
            noncurrent_version_days=settings.noncurrent_version_days,
            force_destroy=settings.force_destroy_buckets,
            tags=tags,
        ),
    )
    identity = NodeIdentity(
        settings.cluster_name,
        NodeIdentityArgs(
            cluster_name=settings.cluster_name,
            bucket_arns={kind: bucket.arn for kind, bucket in storage.buckets.items()},
            tags=tags,
        ),
    )
    # The bucket policies: TLS only, and the nodes' roles only through the VPC's S3 gateway endpoint.
    storage.restrict(network.s3_endpoint.id, [role.arn for role in identity.roles.values()])
    cluster = Cluster(
        settings.cluster_name,
        ClusterArgs(
            cluster_name=settings.cluster_name,
            ami_id=ami.id,
            subnet_ids=[subnet.id for subnet in network.subnets],
            security_group_id=network.security_group.id,
            instance_profiles={role: profile.name for role, profile in identity.instance_profiles.items()},
            ssh_public_key=settings.ssh_public_key,
            key_name=settings.key_name,
            head_instance_type=settings.head_instance_type,
            worker_instance_type=settings.worker_instance_type,
            worker_count=settings.worker_count,
            spot_workers=settings.spot_workers,
            root_volume_size_gb=settings.root_volume_size_gb,
            tags=tags,
            internet_gateway=network.internet_gateway,
        ),
    )
    return {
        "rayops_contract": CONTRACT_VERSION,
        "cluster_name": settings.cluster_name,
        "provider": "aws",
        "region": region,
        "ssh_user": settings.ssh_user,
        "nodes": pulumi.Output.all(*[node.contract_entry() for node in cluster.nodes]),
        "buckets": {kind: bucket.bucket for kind, bucket in storage.buckets.items()},
        # The SDK's default endpoint. Note: Pulumi's Python SDK drops a top-level output whose value
        # is None, so `pulumi stack output --json` omits this key; consumers read a missing key as null.
        "s3_endpoint_url": None,
    }
