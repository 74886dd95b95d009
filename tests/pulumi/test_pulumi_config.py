"""Bad or missing stack configuration: one clear sentence naming the key and the fix, and nothing created."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi_harness import USER_CIDR, AwsMocks, RunStack, openssh_ed25519_public_key

from rayops_aws.settings import ConfigError, check_ssh_public_key, default_cluster_name, parse_ssh_cidrs

CIDRS = "rayops:allowedSshCidrs"


def _refused(run_stack: RunStack, mocks: AwsMocks, overrides: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        run_stack(overrides)
    message = str(caught.value)
    assert "\n" not in message, "the error must be one sentence on one line"
    assert "Traceback" not in message
    created = [r.name for r in mocks.resources]
    assert created == [], f"a refused configuration must create nothing, created {created}"
    return message


def test_config_error_is_a_pulumi_run_error() -> None:
    # pulumi up prints a RunError's message without a Python traceback.
    assert issubclass(ConfigError, pulumi.RunError)


BAD_CONFIG = [
    pytest.param(
        {CIDRS: None},
        "rayops:allowedSshCidrs is required",
        id="cidrs-missing",
    ),
    pytest.param(
        {CIDRS: "203.0.113.7/32"},
        "must be a list of CIDRs",
        id="cidrs-plain-string",
    ),
    pytest.param(
        {CIDRS: []},
        "is an empty list, so nobody could SSH",
        id="cidrs-empty",
    ),
    pytest.param(
        {CIDRS: ["not-a-network"]},
        "rayops:allowedSshCidrs[0] 'not-a-network' is not a CIDR",
        id="cidr-junk",
    ),
    pytest.param(
        {CIDRS: [USER_CIDR, "300.1.2.3/32"]},
        "rayops:allowedSshCidrs[1] '300.1.2.3/32' is not a CIDR",
        id="cidr-octet",
    ),
    pytest.param(
        {CIDRS: ["203.0.113.7/24"]},
        "has host bits set: write the network 203.0.113.0/24, or 203.0.113.7/32",
        id="cidr-host-bits",
    ),
    pytest.param(
        {CIDRS: ["203.0.113.7"]},
        "has no prefix length: write 203.0.113.7/32",
        id="cidr-no-prefix",
    ),
    pytest.param(
        {CIDRS: ["2001:db8::/64"]},
        "is IPv6, but the cluster's VPC is IPv4-only",
        id="cidr-ipv6",
    ),
    pytest.param(
        {CIDRS: [22]},
        "rayops:allowedSshCidrs[0] must be a CIDR string",
        id="cidr-number",
    ),
    pytest.param(
        {"rayops:sshPublicKey": None},
        "the nodes need an SSH key",
        id="key-missing",
    ),
    pytest.param(
        {"rayops:keyName": "mine"},
        "set either rayops:sshPublicKey or rayops:keyName, not both",
        id="key-both",
    ),
    pytest.param(
        {"rayops:sshPublicKey": "-----BEGIN OPENSSH PRIVATE KEY----- abc"},
        "holds a private key",
        id="key-private",
    ),
    pytest.param(
        {"rayops:sshPublicKey": "ecdsa-sha2-nistp256 AAAA me"},
        "must be an OpenSSH public key starting with ssh-ed25519 or ssh-rsa",
        id="key-ecdsa",
    ),
    pytest.param(
        {"rayops:sshPublicKey": "ssh-ed25519 AAAAnotbase64!! me"},
        "the base64 part is damaged",
        id="key-damaged",
    ),
    pytest.param(
        {"rayops:sshPublicKey": "  "},
        "rayops:sshPublicKey is set but empty",
        id="key-empty",
    ),
    pytest.param(
        {"rayops:workerCount": "two"},
        "rayops:workerCount must be a whole number between 0 and 64, got 'two'",
        id="workers-word",
    ),
    pytest.param(
        {"rayops:workerCount": -1},
        "rayops:workerCount must be a whole number between 0 and 64, got -1",
        id="workers-negative",
    ),
    pytest.param(
        {"rayops:workerCount": 65},
        "rayops:workerCount must be a whole number between 0 and 64, got 65: run "
        "`pulumi config set rayops:workerCount 2`",
        id="workers-too-many",
    ),
    pytest.param(
        {"rayops:vpcCidr": "10.0.0.0/24", "rayops:workerCount": 11},
        "rayops:vpcCidr 10.0.0.0/24 gives /28 subnets (11 usable addresses each), too small for the "
        "12 nodes of the first subnet with rayops:workerCount 11: run `pulumi config set rayops:vpcCidr "
        "10.0.0.0/23` (a /23) or lower rayops:workerCount",
        id="vpc-too-small-for-the-workers",
    ),
    pytest.param(
        {"rayops:spotWorkers": "yes"},
        "rayops:spotWorkers must be true or false, got 'yes'",
        id="spot-yes",
    ),
    pytest.param(
        {"rayops:rootVolumeSizeGb": 8},
        "rayops:rootVolumeSizeGb must be a whole number between 20 and 16384, got 8",
        id="disk-small",
    ),
    pytest.param(
        {"rayops:vpcCidr": "8.8.0.0/16"},
        "must be a private (RFC 1918) network from /16 to /24",
        id="vpc-public",
    ),
    pytest.param(
        {"rayops:vpcCidr": "10.0.0.0/8"},
        "must be a private (RFC 1918) network from /16 to /24",
        id="vpc-too-big",
    ),
    pytest.param(
        {"rayops:vpcCidr": "10.0.0.1/16"},
        "'10.0.0.1/16' is not an IPv4 network",
        id="vpc-host-bits",
    ),
    pytest.param(
        {"rayops:clusterName": "Ray_Cluster"},
        "rayops:clusterName must be 2 to 40 characters",
        id="name-chars",
    ),
    pytest.param(
        {"rayops:clusterName": "r" * 41},
        "rayops:clusterName must be 2 to 40 characters",
        id="name-long",
    ),
    pytest.param(
        {"rayops:workercount": 3},
        "rayops:workercount is not a rayops setting (did you mean rayops:workerCount?",
        id="unknown-key",
    ),
    pytest.param(
        {"rayops:amiId": "ubuntu-24.04"},
        "rayops:amiId 'ubuntu-24.04' is not an AMI id",
        id="ami-id",
    ),
    pytest.param(
        {"rayops:amiOwner": "canonical"},
        "rayops:amiOwner 'canonical' must be a 12-digit AWS account id",
        id="ami-owner",
    ),
    pytest.param(
        {"rayops:sshUser": "Ubuntu User"},
        "rayops:sshUser 'Ubuntu User' is not a Linux user name",
        id="ssh-user",
    ),
    pytest.param(
        {"rayops:headInstanceType": "big"},
        "rayops:headInstanceType 'big' is not an EC2 instance type",
        id="type-format",
    ),
    pytest.param(
        {"rayops:headInstanceType": "t3.medium"},
        "rayops:headInstanceType t3.medium has 4 GiB of memory, Ray needs at least 8 GiB",
        id="head-4gib",
    ),
    pytest.param(
        {"rayops:workerInstanceType": "t3.small"},
        "rayops:workerInstanceType t3.small has 2 GiB of memory, Ray needs at least 4 GiB",
        id="worker-2gib",
    ),
    pytest.param(
        {"rayops:headInstanceType": "m7g.xlarge"},
        "rayops:headInstanceType m7g.xlarge runs arm64, but the AMI is x86_64",
        id="head-arm",
    ),
    pytest.param(
        {"rayops:headInstanceType": "z1d.large", "rayops:secondAz": True},
        "1 availability zone(s) of this region offer m5.large and z1d.large, 2 needed",
        id="zones",
    ),
    pytest.param(
        {"rayops:noncurrentVersionDays": 0},
        "rayops:noncurrentVersionDays must be a whole number between 1 and 3650",
        id="lifecycle-days",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_CONFIG)
def test_bad_config_is_refused_with_one_clear_sentence(
    run_stack: RunStack, mocks: AwsMocks, overrides: dict[str, Any], expected: str
) -> None:
    message = _refused(run_stack, mocks, overrides)
    assert expected in message


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        ({CIDRS: None}, "pulumi config set --path 'rayops:allowedSshCidrs[0]'"),
        ({"rayops:sshPublicKey": None}, "pulumi config set rayops:sshPublicKey"),
        ({"rayops:workerCount": "two"}, "pulumi config set rayops:workerCount 2"),
        ({"rayops:workercount": 3}, "pulumi config rm rayops:workercount"),
        ({"rayops:headInstanceType": "t3.medium"}, "pulumi config set rayops:headInstanceType m5.xlarge"),
    ],
)
def test_errors_say_how_to_fix(
    run_stack: RunStack, mocks: AwsMocks, overrides: dict[str, Any], fix: str
) -> None:
    assert fix in _refused(run_stack, mocks, overrides)


def test_a_small_worker_type_is_fine_without_workers(run_stack: RunStack) -> None:
    run = run_stack({"rayops:workerCount": 0, "rayops:workerInstanceType": "t3.small"})
    assert [r.name for r in run.of_type("aws:ec2/instance:Instance")] == ["rayops-dev-head"]


def test_keys_of_other_namespaces_are_left_alone(run_stack: RunStack) -> None:
    run = run_stack({"aws:profile": "lab", "pulumi:tags": '{"team": "ml"}'})
    assert run.outputs["cluster_name"] == "rayops-dev"


@pytest.mark.parametrize(
    ("project", "stack", "expected"),
    [
        ("rayops", "dev", "rayops-dev"),
        ("rayops", "Team_A.prod", "rayops-team-a-prod"),
        ("rayops", "--x--", "rayops-x"),
    ],
)
def test_default_cluster_name_is_derived_from_the_stack(project: str, stack: str, expected: str) -> None:
    assert default_cluster_name(project, stack) == expected


def test_cluster_name_from_config_is_used(run_stack: RunStack) -> None:
    run = run_stack({"rayops:clusterName": "ml-lab"})
    assert run.outputs["cluster_name"] == "ml-lab"
    assert {n["name"] for n in run.outputs["nodes"]} == {"ml-lab-head", "ml-lab-worker-1", "ml-lab-worker-2"}


def test_cidrs_are_normalised_and_deduplicated() -> None:
    assert parse_ssh_cidrs('["203.0.113.0/24", " 198.51.100.9/32", "203.0.113.0/24"]') == (
        "203.0.113.0/24",
        "198.51.100.9/32",
    )


def test_public_key_check_accepts_real_key_lines() -> None:
    line = openssh_ed25519_public_key("me@host")
    assert check_ssh_public_key(line) == line
    with pytest.raises(ConfigError, match="base64 part is damaged"):
        # a valid base64 blob of another key type under the ed25519 label
        check_ssh_public_key("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== me")
