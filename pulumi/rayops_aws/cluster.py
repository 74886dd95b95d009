"""Cluster: the head node and the workers, all hardened the same way.

Every node: the given AMI, the cluster security group, the node instance profile, IMDSv2 only
with a hop limit of 1 (containers on the node cannot reach the instance credentials), an
encrypted gp3 root volume, tags naming the cluster and the role. Workers may be spot instances.

Host keys are pinned before the first connection: the program generates an ed25519 host key per node
(a ``tls.PrivateKey``, kept as a secret in the stack's state), cloud-init installs it at first boot as
the node's only host key (user data: ``ssh_keys``, no other key types generated), and the contract
exports each node's public key (``nodes[].ssh_host_key``), which the inventory plugin pins. Ansible
configures the nodes afterwards; the user data holds nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

HEAD = "head"
WORKER = "worker"


@dataclass(frozen=True)
class Node:
    """One node of the cluster: its contract name, its role and its instance."""

    name: str
    role: str
    instance: aws.ec2.Instance
    host_key: tls.PrivateKey
    elastic_ip: aws.ec2.Eip | None = None

    def contract_entry(self) -> pulumi.Output[dict[str, Any]]:
        """The node as the stack-output contract describes it (public_ip null when it has none).

        A node with an Elastic IP exports that address: it stays the same when the instance is stopped and
        started, which gives an instance a new public IP (and the contract a stale one) otherwise."""
        public_ip = self.elastic_ip.public_ip if self.elastic_ip is not None else self.instance.public_ip
        return pulumi.Output.all(
            self.instance.private_ip,
            public_ip,
            self.instance.id,
            self.instance.instance_type,
            self.host_key.public_key_openssh,
        ).apply(
            lambda values: {
                "name": self.name,
                "role": self.role,
                "private_ip": values[0],
                "public_ip": values[1] or None,
                "instance_id": values[2],
                "instance_type": values[3],
                "ssh_host_key": " ".join(values[4].split()[:2]),
            }
        )


def host_key_user_data(private_openssh: str, public_openssh: str) -> str:
    """cloud-config that makes the given ed25519 key the node's only SSH host key (before sshd starts)."""
    document = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": private_openssh,
            "ed25519_public": " ".join(public_openssh.split()[:2]),
        },
    }
    # JSON is YAML: cloud-init reads it after the #cloud-config line.
    return "#cloud-config\n" + json.dumps(document, indent=2) + "\n"


@dataclass(frozen=True)
class ClusterArgs:
    """Sizes, image and placement of the nodes. Workers are spread over the subnets in turn."""

    cluster_name: str
    ami_id: str
    subnet_ids: list[pulumi.Output[str]]
    security_group_id: pulumi.Output[str]
    instance_profiles: dict[str, pulumi.Output[str]]  # head/worker -> instance profile name
    ssh_public_key: str | None
    key_name: str | None
    head_instance_type: str
    worker_instance_type: str
    worker_count: int
    spot_workers: bool
    root_volume_size_gb: int
    tags: dict[str, str] = field(default_factory=dict)
    # The head's Elastic IP is associated once the VPC has its internet gateway (AWS requires it).
    internet_gateway: pulumi.Resource | None = None


class Cluster(pulumi.ComponentResource):
    """``<cluster>-head`` and ``<cluster>-worker-1`` ... ``<cluster>-worker-N``.

    The head has an Elastic IP, so a stop and start of the instances keeps every address Ansible uses:
    the head's public one (the Elastic IP) and the workers' private ones (EC2 keeps a VPC instance's
    private IP across stop/start), reached through the head (``jump_via_head`` in inventory/aws). The
    workers' own public IPs (egress only, no NAT gateway) change on a stop/start.
    """

    nodes: list[Node]
    key_name: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rayops:aws:Cluster", name, None, opts)
        if args.ssh_public_key is not None:
            key_pair = aws.ec2.KeyPair(
                f"{args.cluster_name}-key",
                public_key=args.ssh_public_key,
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.key_name = key_pair.key_name
        elif args.key_name is not None:
            self.key_name = pulumi.Output.from_input(args.key_name)
        else:
            raise ValueError("ClusterArgs needs ssh_public_key or key_name")
        head = self._node(f"{args.cluster_name}-head", HEAD, args, args.subnet_ids[0])
        elastic_ip = aws.ec2.Eip(
            f"{args.cluster_name}-head-eip",
            domain="vpc",
            instance=head.instance.id,
            tags={**args.tags, "Name": f"{args.cluster_name}-head"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.internet_gateway] if args.internet_gateway is not None else None,
            ),
        )
        self.nodes = [replace(head, elastic_ip=elastic_ip)]
        for index in range(1, args.worker_count + 1):
            subnet_id = args.subnet_ids[index % len(args.subnet_ids)]
            self.nodes.append(self._node(f"{args.cluster_name}-worker-{index}", WORKER, args, subnet_id))
        self.register_outputs(
            {"key_name": self.key_name, **{node.name: node.instance.id for node in self.nodes}}
        )

    def _node(self, node_name: str, role: str, args: ClusterArgs, subnet_id: pulumi.Output[str]) -> Node:
        spot = role == WORKER and args.spot_workers
        market = (
            aws.ec2.InstanceInstanceMarketOptionsArgs(
                market_type="spot",
                spot_options=aws.ec2.InstanceInstanceMarketOptionsSpotOptionsArgs(
                    instance_interruption_behavior="terminate",
                    spot_instance_type="one-time",
                ),
            )
            if spot
            else None
        )
        host_key = tls.PrivateKey(
            f"{node_name}-host-key",
            algorithm="ED25519",
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["private_key_openssh"]),
        )
        user_data: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh).apply(
                lambda keys: host_key_user_data(str(keys[0]), str(keys[1]))
            )
        )
        instance = aws.ec2.Instance(
            node_name,
            ami=args.ami_id,
            instance_type=args.head_instance_type if role == HEAD else args.worker_instance_type,
            subnet_id=subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            iam_instance_profile=args.instance_profiles[role],
            key_name=self.key_name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                instance_metadata_tags="disabled",
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3",
                volume_size=args.root_volume_size_gb,
                encrypted=True,
                delete_on_termination=True,
                tags={**args.tags, "Name": f"{node_name}-root"},
            ),
            instance_market_options=market,
            user_data=user_data,
            # cloud-init installs the host key at the first boot only: a new key needs a new instance.
            user_data_replace_on_change=True,
            tags={**args.tags, "Name": node_name, "rayops:role": role},
            # A newer AMI (most_recent lookup) must not replace running nodes on the next `pulumi up`.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"]),
        )
        return Node(node_name, role, instance, host_key)
