"""Network policy: SSH only from the configured CIDRs, nodes talk to each other, nothing else inbound."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from pulumi_harness import USER_CIDR, ZONES, Resource, RunStack, StackRun

from rayops_aws.network import subnet_cidrs

SG = "aws:ec2/securityGroup:SecurityGroup"


def _ingress(run: StackRun) -> list[dict[str, object]]:
    return list(run.one(SG).inputs["ingress"])


def test_ssh_is_open_only_to_the_configured_cidrs(run_stack: RunStack) -> None:
    run = run_stack({"rayops:allowedSshCidrs": [USER_CIDR, "198.51.100.0/24"]})
    cidr_rules = [rule for rule in _ingress(run) if rule.get("cidrBlocks")]
    assert sorted(cidr for rule in cidr_rules for cidr in rule["cidrBlocks"]) == [
        "198.51.100.0/24",
        USER_CIDR,
    ]
    for rule in cidr_rules:
        assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 22, 22)


def test_the_only_other_inbound_rule_is_the_group_itself(run_stack: RunStack) -> None:
    run = run_stack()
    others = [rule for rule in _ingress(run) if not rule.get("cidrBlocks")]
    assert len(others) == 1
    rule = others[0]
    assert rule["self"] is True
    assert rule["protocol"] == "-1"
    assert not rule.get("ipv6CidrBlocks") and not rule.get("prefixListIds") and not rule.get("securityGroups")


@pytest.mark.parametrize("cidrs", [[USER_CIDR], ["0.0.0.0/0"], ["10.20.0.0/16", "192.0.2.0/24"]])
def test_no_port_but_22_is_reachable_from_outside(run_stack: RunStack, cidrs: list[str]) -> None:
    run = run_stack({"rayops:allowedSshCidrs": cidrs})
    for rule in _ingress(run):
        if rule.get("cidrBlocks") or rule.get("ipv6CidrBlocks"):
            assert (rule["fromPort"], rule["toPort"]) == (22, 22), f"port range open to the outside: {rule}"
        else:
            assert rule.get("self") is True, f"rule neither SSH nor self-referencing: {rule}"


def test_the_world_is_never_let_in_unless_asked(run_stack: RunStack) -> None:
    run = run_stack()
    for rule in _ingress(run):
        assert "0.0.0.0/0" not in rule.get("cidrBlocks", [])
        assert "::/0" not in rule.get("ipv6CidrBlocks", [])


def test_asking_for_the_world_opens_only_ssh_and_warns(
    run_stack: RunStack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        run = run_stack({"rayops:allowedSshCidrs": ["0.0.0.0/0"]})
    world = [rule for rule in _ingress(run) if "0.0.0.0/0" in rule.get("cidrBlocks", [])]
    assert [(r["protocol"], r["fromPort"], r["toPort"]) for r in world] == [("tcp", 22, 22)]
    assert any("0.0.0.0/0" in record.getMessage() for record in caplog.records)


def test_egress_is_open(run_stack: RunStack) -> None:
    run = run_stack()
    egress = run.one(SG).inputs["egress"]
    assert [(r["protocol"], r["fromPort"], r["toPort"], r["cidrBlocks"]) for r in egress] == [
        ("-1", 0, 0, ["0.0.0.0/0"])
    ]


def test_no_other_rule_resources_can_add_ports(run_stack: RunStack) -> None:
    run = run_stack()
    types = {r.typ for r in run.resources}
    assert types.isdisjoint(
        {
            "aws:ec2/securityGroupRule:SecurityGroupRule",
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "aws:ec2/networkAclRule:NetworkAclRule",
        }
    )
    assert len(run.of_type(SG)) == 1


def test_default_security_group_is_stripped(run_stack: RunStack) -> None:
    default = run_stack().one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert not default.inputs.get("ingress") and not default.inputs.get("egress")


def test_every_node_uses_the_cluster_group(run_stack: RunStack) -> None:
    run = run_stack()
    sg_id = run.one(SG).id
    for instance in run.of_type("aws:ec2/instance:Instance"):
        assert instance.inputs["vpcSecurityGroupIds"] == [sg_id]


def test_vpc_has_dns_and_the_configured_range(run_stack: RunStack) -> None:
    vpc = run_stack({"rayops:vpcCidr": "10.42.0.0/16"}).one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.42.0.0/16"
    assert vpc.inputs["enableDnsSupport"] is True and vpc.inputs["enableDnsHostnames"] is True


def test_public_subnet_routes_to_the_internet_gateway(run_stack: RunStack) -> None:
    run = run_stack()
    vpc = run.one("aws:ec2/vpc:Vpc")
    gateway = run.one("aws:ec2/internetGateway:InternetGateway")
    table = run.one("aws:ec2/routeTable:RouteTable")
    subnet = run.one("aws:ec2/subnet:Subnet")
    association = run.one("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert gateway.inputs["vpcId"] == vpc.id and table.inputs["vpcId"] == vpc.id
    assert table.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "gatewayId": gateway.id}]
    assert subnet.inputs["mapPublicIpOnLaunch"] is True
    assert subnet.inputs["availabilityZone"] == ZONES[0]
    assert ipaddress.ip_network(subnet.inputs["cidrBlock"]).subnet_of(ipaddress.ip_network("10.0.0.0/16"))
    assert (association.inputs["subnetId"], association.inputs["routeTableId"]) == (subnet.id, table.id)


def test_s3_gateway_endpoint_on_the_subnets_route_table(run_stack: RunStack) -> None:
    """The nodes' S3 traffic goes through the VPC's gateway endpoint (the bucket policies require it for
    the node roles: test_pulumi_storage.py)."""
    from pulumi_harness import REGION

    run = run_stack({"rayops:secondAz": True})
    endpoint = run.one("aws:ec2/vpcEndpoint:VpcEndpoint")
    table = run.one("aws:ec2/routeTable:RouteTable")
    assert endpoint.inputs["vpcId"] == run.one("aws:ec2/vpc:Vpc").id
    assert endpoint.inputs["serviceName"] == f"com.amazonaws.{REGION}.s3"
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"
    assert endpoint.inputs["routeTableIds"] == [table.id]
    associations = run.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert len(associations) == 2 and {a.inputs["routeTableId"] for a in associations} == {table.id}


def _subnet_of(run: StackRun, instance: Resource) -> Resource:
    return next(s for s in run.of_type("aws:ec2/subnet:Subnet") if s.id == instance.inputs["subnetId"])


def test_second_az_adds_a_subnet_and_spreads_the_workers(run_stack: RunStack) -> None:
    run = run_stack({"rayops:secondAz": True, "rayops:workerCount": 3})
    subnets = run.of_type("aws:ec2/subnet:Subnet")
    assert sorted(s.inputs["availabilityZone"] for s in subnets) == list(ZONES[:2])
    assert len({s.inputs["cidrBlock"] for s in subnets}) == 2
    assert len(run.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")) == 2
    zones = {
        i.name: _subnet_of(run, i).inputs["availabilityZone"]
        for i in run.of_type("aws:ec2/instance:Instance")
    }
    assert zones == {
        "rayops-dev-head": ZONES[0],
        "rayops-dev-worker-1": ZONES[1],
        "rayops-dev-worker-2": ZONES[0],
        "rayops-dev-worker-3": ZONES[1],
    }


def test_one_az_by_default(run_stack: RunStack) -> None:
    run = run_stack({"rayops:workerCount": 3})
    subnet = run.one("aws:ec2/subnet:Subnet")
    assert {i.inputs["subnetId"] for i in run.of_type("aws:ec2/instance:Instance")} == {subnet.id}


@pytest.mark.parametrize(
    ("vpc", "count", "expected"),
    [("10.0.0.0/16", 2, ["10.0.0.0/20", "10.0.16.0/20"]), ("192.168.8.0/24", 1, ["192.168.8.0/28"])],
)
def test_subnet_cidrs_are_carved_from_the_vpc(vpc: str, count: int, expected: list[str]) -> None:
    assert subnet_cidrs(vpc, count) == expected


def test_zones_are_default_zones_that_offer_the_instance_types(run_stack: RunStack) -> None:
    run = run_stack()
    [zones_call] = run.calls_to("aws:index/getAvailabilityZones:getAvailabilityZones")
    assert zones_call["state"] == "available"
    assert {"name": "opt-in-status", "values": ["opt-in-not-required"]} in zones_call["filters"]
    [offerings_call] = run.calls_to("aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings")
    assert offerings_call["filters"] == [{"name": "instance-type", "values": ["m5.xlarge", "m5.large"]}]
