"""Cluster policy: node count and names, IMDSv2, encrypted gp3 roots, tags, AMI lookup, spot, key pair."""

from __future__ import annotations

import json

import pytest
from pulumi_harness import ARM_AMI, UBUNTU_AMI, Resource, RunStack, openssh_ed25519_public_key, secret_value

from rayops_aws.settings import ConfigError

INSTANCE = "aws:ec2/instance:Instance"


def _instances(run_stack: RunStack, **overrides: object) -> list[Resource]:
    return run_stack(dict(overrides)).of_type(INSTANCE)


@pytest.mark.parametrize("workers", [0, 1, 5])
def test_head_plus_worker_count_nodes(run_stack: RunStack, workers: int) -> None:
    run = run_stack({"rayops:workerCount": workers})
    # Instances register once their host keys exist, in no fixed order: compare by name.
    instances = sorted(run.of_type(INSTANCE), key=lambda i: i.name)
    names = [i.name for i in instances]
    assert names == ["rayops-dev-head"] + [f"rayops-dev-worker-{n}" for n in range(1, workers + 1)]
    roles = [i.inputs["tags"]["rayops:role"] for i in instances]
    assert roles == ["head"] + ["worker"] * workers


def test_the_head_has_an_elastic_ip_so_a_stop_and_start_keeps_its_address(run_stack: RunStack) -> None:
    """EC2 gives a stopped and started instance a new public IP, so the contract (and the inventory, and the
    pinned known_hosts line) would name a stale address; the head's Elastic IP stays. Workers keep their
    private IPs across a stop/start and are reached through the head (inventory/aws.pulumi_stack.yml)."""
    run = run_stack({"rayops:workerCount": 2})
    eip = run.one("aws:ec2/eip:Eip")
    head = run.named("rayops-dev-head")
    assert eip.inputs["domain"] == "vpc"
    assert eip.inputs["instance"] == head.id
    (exported,) = [n for n in run.outputs["nodes"] if n["role"] == "head"]
    assert exported["public_ip"] == eip.state["publicIp"] != head.state["publicIp"]


def test_two_workers_by_default(run_stack: RunStack) -> None:
    assert len(_instances(run_stack)) == 3


def test_imdsv2_required_with_hop_limit_one(run_stack: RunStack) -> None:
    for instance in _instances(run_stack, **{"rayops:workerCount": 2}):
        metadata = instance.inputs["metadataOptions"]
        assert metadata["httpTokens"] == "required", instance.name
        assert metadata["httpPutResponseHopLimit"] == 1, instance.name
        assert metadata["httpEndpoint"] == "enabled", "the instance profile's credentials come from IMDS"


@pytest.mark.parametrize(("configured", "size"), [(None, 100), (250, 250)])
def test_root_volume_is_encrypted_gp3(run_stack: RunStack, configured: int | None, size: int) -> None:
    for instance in _instances(run_stack, **{"rayops:rootVolumeSizeGb": configured}):
        root = instance.inputs["rootBlockDevice"]
        assert root["encrypted"] is True
        assert root["volumeType"] == "gp3"
        assert root["volumeSize"] == size
        assert root["deleteOnTermination"] is True
    run = run_stack()
    assert not any(i.inputs.get("ebsBlockDevices") for i in run.of_type(INSTANCE)), "unencrypted extra disks"


def test_tags_name_the_cluster_and_the_role(run_stack: RunStack) -> None:
    for instance in _instances(run_stack, **{"rayops:clusterName": "ml-lab"}):
        tags = instance.inputs["tags"]
        assert tags["rayops:cluster"] == "ml-lab"
        assert tags["Name"] == instance.name
        assert tags["rayops:role"] == ("head" if instance.name == "ml-lab-head" else "worker")


def test_every_tagged_resource_names_the_cluster(run_stack: RunStack) -> None:
    run = run_stack()
    tagged = [r for r in run.resources if r.typ.startswith("aws:") and "tags" in r.inputs]
    assert len(tagged) >= 10
    for resource in tagged:
        assert resource.inputs["tags"]["rayops:cluster"] == "rayops-dev", resource.name


BIGGER = {"rayops:headInstanceType": "m5.2xlarge", "rayops:workerInstanceType": "t3.large"}


@pytest.mark.parametrize(
    ("overrides", "head", "worker"),
    [({}, "m5.xlarge", "m5.large"), (BIGGER, "m5.2xlarge", "t3.large")],
)
def test_instance_types(run_stack: RunStack, overrides: dict[str, object], head: str, worker: str) -> None:
    run = run_stack(overrides)
    types = {i.name: i.inputs["instanceType"] for i in run.of_type(INSTANCE)}
    assert types == {"rayops-dev-head": head, "rayops-dev-worker-1": worker, "rayops-dev-worker-2": worker}
    assert {n["name"]: n["instance_type"] for n in run.outputs["nodes"]} == types


def test_default_ami_is_the_newest_canonical_ubuntu_noble_amd64(run_stack: RunStack) -> None:
    run = run_stack()
    [lookup] = run.calls_to("aws:ec2/getAmi:getAmi")
    assert lookup["owners"] == ["099720109477"]
    assert lookup["mostRecent"] is True
    filters = {f["name"]: f["values"] for f in lookup["filters"]}
    assert filters["name"] == ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
    assert filters["architecture"] == ["x86_64"]
    assert {i.inputs["ami"] for i in run.of_type(INSTANCE)} == {UBUNTU_AMI}


def test_ami_can_be_pinned(run_stack: RunStack) -> None:
    run = run_stack({"rayops:amiId": "ami-0123456789abcdef0"})
    [lookup] = run.calls_to("aws:ec2/getAmi:getAmi")
    assert lookup["filters"] == [{"name": "image-id", "values": ["ami-0123456789abcdef0"]}]
    assert {i.inputs["ami"] for i in run.of_type(INSTANCE)} == {"ami-0123456789abcdef0"}


def test_ami_owner_and_filter_can_be_changed(run_stack: RunStack) -> None:
    run = run_stack({"rayops:amiOwner": "self", "rayops:amiNameFilter": "golden-ray-*"})
    [lookup] = run.calls_to("aws:ec2/getAmi:getAmi")
    assert lookup["owners"] == ["self"]
    assert {"name": "name", "values": ["golden-ray-*"]} in lookup["filters"]


def test_an_arm_ami_needs_arm_instance_types(run_stack: RunStack) -> None:

    with pytest.raises(
        ConfigError, match=r"rayops:headInstanceType m5\.xlarge runs x86_64, but the AMI is arm64"
    ):
        run_stack({"rayops:amiId": ARM_AMI})
    run = run_stack(
        {"rayops:amiId": ARM_AMI, "rayops:headInstanceType": "m7g.xlarge", "rayops:workerCount": 0}
    )
    assert run.one(INSTANCE).inputs["ami"] == ARM_AMI


def test_a_newer_ami_never_replaces_running_nodes(run_stack: RunStack) -> None:
    for instance in _instances(run_stack):
        assert instance.opts is not None and instance.opts.ignore_changes == ["ami"]


def test_on_demand_by_default(run_stack: RunStack) -> None:
    assert not any(i.inputs.get("instanceMarketOptions") for i in _instances(run_stack))


def test_spot_workers_keep_an_on_demand_head(run_stack: RunStack) -> None:
    instances = _instances(run_stack, **{"rayops:spotWorkers": True, "rayops:workerCount": 2})
    head = [i for i in instances if i.name.endswith("-head")]
    workers = [i for i in instances if "-worker-" in i.name]
    assert not head[0].inputs.get("instanceMarketOptions")
    for worker in workers:
        market = worker.inputs["instanceMarketOptions"]
        assert market["marketType"] == "spot"
        assert market["spotOptions"]["spotInstanceType"] == "one-time"


def test_key_pair_is_imported_from_the_public_key(run_stack: RunStack) -> None:
    key = openssh_ed25519_public_key("ml@team")
    run = run_stack({"rayops:sshPublicKey": key})
    pair = run.one("aws:ec2/keyPair:KeyPair")
    assert pair.inputs["publicKey"] == key
    assert {i.inputs["keyName"] for i in run.of_type(INSTANCE)} == {pair.state["keyName"]}


def test_an_existing_key_pair_can_be_named(run_stack: RunStack) -> None:
    run = run_stack({"rayops:sshPublicKey": None, "rayops:keyName": "team-key"})
    assert run.of_type("aws:ec2/keyPair:KeyPair") == []
    assert {i.inputs["keyName"] for i in run.of_type(INSTANCE)} == {"team-key"}


def test_user_data_holds_the_host_key_only(run_stack: RunStack) -> None:
    """The one thing the user data carries is the node's SSH host key (test_pulumi_host_keys.py)."""
    for instance in _instances(run_stack):
        assert not instance.inputs.get("userDataBase64")
        header, _, body = secret_value(instance.inputs["userData"]).partition("\n")
        assert header == "#cloud-config"
        assert set(json.loads(body)) == {"ssh_deletekeys", "ssh_genkeytypes", "ssh_keys"}, instance.name


def test_every_resource_belongs_to_one_of_the_four_components(run_stack: RunStack) -> None:
    run = run_stack()
    components = {"rayops:aws:Network", "rayops:aws:Storage", "rayops:aws:NodeIdentity", "rayops:aws:Cluster"}
    assert {r.typ for r in run.resources if r.typ.startswith("rayops:")} == components
    for resource in run.resources:
        parent_type = resource.urn.split("::")[2].split("$")[0]
        if resource.typ in components:
            assert parent_type == "pulumi:pulumi:Stack"
        else:
            assert parent_type in components, f"{resource.name} is not inside a component"
