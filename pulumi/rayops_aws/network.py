"""Network: a VPC with public subnet(s), an internet gateway, an S3 gateway endpoint and the cluster's
security group.

The nodes reach S3 through the gateway endpoint (a route in the subnets' route table, no NAT, no
charge); the bucket policies refuse the nodes' roles any request that does not come through it
(``aws:SourceVpce``), so credentials taken from a node's metadata service are useless elsewhere.

Inbound traffic is SSH from ``allowed_ssh_cidrs`` and traffic between members of the security
group (Ray's GCS, object manager and worker ports). Nothing else: the Ray dashboard and JupyterLab
(and every service bound to the head's loopback) are reached through an SSH tunnel, never an open port
(ShadowRay, CVE-2023-48022, came from Ray ports open to the internet).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

SSH_PORT = 22


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    """The first ``count`` subnets of ``vpc_cidr``, each 1/16 of it (a /16 gives /20 subnets)."""
    network = ipaddress.IPv4Network(vpc_cidr)
    subnets = network.subnets(prefixlen_diff=4)
    return [str(next(subnets)) for _ in range(count)]


@dataclass(frozen=True)
class NetworkArgs:
    """What the network needs: the VPC range, one AZ per public subnet, who may SSH in."""

    cluster_name: str
    vpc_cidr: str
    availability_zones: tuple[str, ...]
    allowed_ssh_cidrs: tuple[str, ...]
    region: str = "us-east-1"  # for the S3 endpoint's service name
    tags: dict[str, str] = field(default_factory=dict)


class Network(pulumi.ComponentResource):
    """VPC, internet gateway, public subnets with their route table, and the cluster security group."""

    vpc: aws.ec2.Vpc
    subnets: list[aws.ec2.Subnet]
    security_group: aws.ec2.SecurityGroup
    s3_endpoint: aws.ec2.VpcEndpoint

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rayops:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def tags(resource_name: str) -> dict[str, str]:
            return {**args.tags, "Name": resource_name}

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=tags(f"{name}-vpc"),
            opts=child,
        )
        # The VPC's default security group admits its members and egress everywhere; strip every rule
        # so that a resource created in this VPC without a group is unreachable (CIS AWS 5.4).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=self.vpc.id,
            tags=tags(f"{name}-default-sg"),
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=tags(f"{name}-igw"), opts=child
        )
        self.internet_gateway = gateway
        route_table = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags=tags(f"{name}-public-rt"),
            opts=child,
        )
        self.subnets = []
        cidrs = subnet_cidrs(args.vpc_cidr, len(args.availability_zones))
        for index, (zone, cidr) in enumerate(zip(args.availability_zones, cidrs, strict=True), start=1):
            subnet = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=True,
                tags=tags(f"{name}-public-{index}"),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}-rta",
                subnet_id=subnet.id,
                route_table_id=route_table.id,
                opts=child,
            )
            self.subnets.append(subnet)
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[route_table.id],
            tags=tags(f"{name}-s3-endpoint"),
            opts=child,
        )

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-nodes-sg",
            description=f"rayops {args.cluster_name}: SSH from allowed CIDRs, all traffic between nodes",
            vpc_id=self.vpc.id,
            ingress=[
                *[
                    aws.ec2.SecurityGroupIngressArgs(
                        description=f"SSH from {cidr} (rayops:allowedSshCidrs)",
                        protocol="tcp",
                        from_port=SSH_PORT,
                        to_port=SSH_PORT,
                        cidr_blocks=[cidr],
                    )
                    for cidr in args.allowed_ssh_cidrs
                ],
                aws.ec2.SecurityGroupIngressArgs(
                    description="All traffic between cluster nodes (Ray, node exporters)",
                    protocol="-1",
                    from_port=0,
                    to_port=0,
                    self=True,
                ),
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    description="All outbound (apt, PyPI, S3, AWS APIs)",
                    protocol="-1",
                    from_port=0,
                    to_port=0,
                    cidr_blocks=["0.0.0.0/0"],
                )
            ],
            tags=tags(f"{name}-nodes-sg"),
            opts=child,
        )

        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "subnet_ids": [subnet.id for subnet in self.subnets],
                "security_group_id": self.security_group.id,
                "s3_endpoint_id": self.s3_endpoint.id,
            }
        )
