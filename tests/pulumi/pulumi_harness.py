"""Harness: run the real Pulumi program (pulumi/__main__.py) against Pulumi's mocks.

The Pulumi CLI and the AWS provider cannot run here, so ``pulumi.runtime.set_mocks`` stands in for
the engine: :class:`AwsMocks` plays the part of AWS (a region with three zones, the Ubuntu AMI,
instance type facts) and records every resource the program registers with its inputs. Each test
sets ``PULUMI_CONFIG`` (what the CLI hands a program) through :func:`run_stack` and gets back the
resolved stack outputs, the resources and the provider calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import runpy
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

PULUMI_DIR = Path(__file__).resolve().parents[2] / "pulumi"
if str(PULUMI_DIR) not in sys.path:
    # The Pulumi runtime runs the program from its directory, which puts rayops_aws on the path.
    sys.path.insert(0, str(PULUMI_DIR))

PROJECT = "rayops"
STACK = "dev"
REGION = "ap-southeast-1"
ACCOUNT = "123456789012"
ZONES = ("ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c")
UBUNTU_AMI = "ami-0a1b2c3d4e5f67890"
ARM_AMI = "ami-0fedcba9876543210"
USER_CIDR = "203.0.113.7/32"

# Instance type facts of the fake region: memory in MiB, architectures, zones that offer it.
INSTANCE_TYPES: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "m5.xlarge": (16384, ("x86_64",), ZONES),
    "m5.large": (8192, ("x86_64",), ZONES),
    "m5.2xlarge": (32768, ("x86_64",), ZONES),
    "t3.large": (8192, ("x86_64",), ZONES),
    "t3.medium": (4096, ("x86_64",), ZONES),
    "t3.small": (2048, ("x86_64",), ZONES),
    "m7g.xlarge": (16384, ("arm64",), ZONES),
    "z1d.large": (16384, ("x86_64",), ZONES[:1]),
}


def secret_value(value: Any) -> Any:
    """The plain value of an input the program marked secret (the mocks see Pulumi's secret wrapper)."""
    assert isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig, value
    return value["value"]


def openssh_ed25519_public_key(comment: str = "user@laptop") -> str:
    """A well-formed OpenSSH ed25519 public key line (key type, base64 blob, comment)."""
    key_type = b"ssh-ed25519"
    point = hashlib.sha256(comment.encode()).digest()
    blob = struct.pack(">I", len(key_type)) + key_type + struct.pack(">I", len(point)) + point
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def _suffix(name: str, length: int = 7) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:length]  # noqa: S324 - a name suffix, not security


_OPENSSH_PRIVATE: dict[str, str] = {}


@dataclass
class Resource:
    """One resource the program registered: type token, logical name, inputs, state, URN."""

    typ: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    id: str
    urn: str = ""
    opts: pulumi.ResourceOptions | None = None


class AwsMocks(pulumi.runtime.Mocks):
    """A small fake AWS: answers the program's lookups and gives resources provider-like state."""

    def __init__(self, public_ips: bool = True) -> None:
        self.public_ips = public_ips
        self.resources: list[Resource] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._instances = 0

    def reset(self) -> None:
        """Forget what an earlier run registered."""
        self.resources.clear()
        self.calls.clear()
        self._instances = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        state = dict(inputs)
        name = args.name
        typ = args.typ
        resource_id = f"{name}-id"
        if typ == "aws:ec2/instance:Instance":
            self._instances += 1
            resource_id = f"i-{_suffix(name, 17)}"
            # Addresses by node name (head .11, worker-N .11+N), not by the order the engine registers
            # the instances in: head and workers wait on different instance profiles, so that order varies.
            worker = re.search(r"-worker-([0-9]+)$", name)
            host = (
                11 + int(worker.group(1))
                if worker
                else 10 + self._instances
                if not name.endswith("-head")
                else 11
            )
            state["privateIp"] = f"10.0.0.{host}"
            # A node in a subnet without public IPs: the provider reports an empty string.
            state["publicIp"] = f"198.51.100.{host}" if self.public_ips else ""
            state["arn"] = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{resource_id}"
        elif typ == "aws:ec2/eip:Eip":
            # An Elastic IP from the documentation range the instances' own public IPs are not in.
            resource_id = f"eipalloc-{_suffix(name, 17)}"
            state["publicIp"] = f"203.0.113.{len([r for r in self.resources if r.typ == typ]) + 10}"
            state["allocationId"] = resource_id
        elif typ == "aws:s3/bucket:Bucket":
            # The provider's auto-name: the logical name plus 7 random hex characters.
            bucket = inputs.get("bucket") or f"{name}-{_suffix(name)}"
            resource_id = bucket
            state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
        elif typ == "aws:ec2/keyPair:KeyPair":
            state["keyName"] = inputs.get("keyName") or f"{name}-{_suffix(name)}"
            resource_id = state["keyName"]
        elif typ == "aws:iam/role:Role":
            state["name"] = inputs.get("name") or f"{name}-{_suffix(name)}"
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:role/{state['name']}"
            resource_id = state["name"]
        elif typ == "aws:iam/instanceProfile:InstanceProfile":
            state["name"] = inputs.get("name") or f"{name}-{_suffix(name)}"
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:instance-profile/{state['name']}"
            resource_id = state["name"]
        elif typ == "tls:index/privateKey:PrivateKey":
            # What the TLS provider does for algorithm ED25519: a key pair, both halves in OpenSSH form (here
            # derived from the name, so two runs of the program make the same stack and nodes differ).
            assert inputs.get("algorithm") == "ED25519", inputs
            key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())
            # OpenSSH's private format holds a random check number: one text per name, as the state keeps it.
            state["privateKeyOpenssh"] = _OPENSSH_PRIVATE.setdefault(
                name,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                ).decode(),
            )
            state["publicKeyOpenssh"] = (
                key.public_key()
                .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                .decode()
                + "\n"
            )
        self.resources.append(Resource(typ, name, inputs, state, resource_id))
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        token, call_args = args.token, dict(args.args)
        self.calls.append((token, call_args))
        if token == "aws:index/getRegion:getRegion":
            return {"region": REGION, "name": REGION, "id": REGION, "endpoint": f"ec2.{REGION}.amazonaws.com"}
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"id": REGION, "names": list(ZONES), "zoneIds": [f"apse1-az{i}" for i in (1, 2, 3)]}
        if token == "aws:ec2/getAmi:getAmi":
            filters = {f["name"]: f["values"] for f in call_args.get("filters", [])}
            image_id = (filters.get("image-id") or [UBUNTU_AMI])[0]
            architecture = "arm64" if image_id == ARM_AMI else "x86_64"
            return {"id": image_id, "imageId": image_id, "architecture": architecture}
        if token == "aws:ec2/getInstanceType:getInstanceType":
            instance_type = call_args["instanceType"]
            if instance_type not in INSTANCE_TYPES:
                raise ValueError(f"mock AWS: the instance type {instance_type} does not exist")
            memory, architectures, _ = INSTANCE_TYPES[instance_type]
            return {
                "id": instance_type,
                "instanceType": instance_type,
                "memorySize": memory,
                "supportedArchitectures": list(architectures),
            }
        if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            assert call_args["locationType"] == "availability-zone"
            wanted = next(f["values"] for f in call_args["filters"] if f["name"] == "instance-type")
            pairs = [(z, t) for t in wanted if t in INSTANCE_TYPES for z in INSTANCE_TYPES[t][2]]
            return {
                "id": REGION,
                "locations": [z for z, _ in pairs],
                "instanceTypes": [t for _, t in pairs],
                "locationTypes": ["availability-zone"] * len(pairs),
            }
        raise NotImplementedError(f"mock AWS has no answer for {token}")


@dataclass
class StackRun:
    """What one run of the program produced."""

    outputs: dict[str, Any]
    engine_outputs: dict[str, Any]
    secret_outputs: list[str]
    resources: list[Resource]
    calls: list[tuple[str, dict[str, Any]]]

    def of_type(self, typ: str) -> list[Resource]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Resource:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.name for r in found]}"
        return found[0]

    def named(self, name: str) -> Resource:
        return next(r for r in self.resources if r.name == name)

    def calls_to(self, token: str) -> list[dict[str, Any]]:
        return [args for t, args in self.calls if t == token]


def as_cli_config(config: dict[str, Any]) -> dict[str, str]:
    """Config values as the Pulumi CLI hands them to a program: strings, structured values as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    return out


def base_config() -> dict[str, Any]:
    """The least a user must set: the region, who may SSH in, an SSH public key."""
    return {
        "aws:region": REGION,
        "rayops:allowedSshCidrs": [USER_CIDR],
        "rayops:sshPublicKey": openssh_ed25519_public_key(),
    }


RunStack = Callable[..., StackRun]


def run_program(mocks: AwsMocks) -> StackRun:
    """Run pulumi/__main__.py under ``mocks`` with the config in PULUMI_CONFIG; return what it made."""
    mocks.reset()
    pulumi.runtime.set_all_config({})  # the config comes from PULUMI_CONFIG only
    pulumi.runtime.reset_options(project=PROJECT, stack=STACK, preview=False)
    monitor = pulumi_mocks.MockMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=False, monitor=monitor)
    options: dict[tuple[str, str], pulumi.ResourceOptions] = {}

    def record_options(args: pulumi.ResourceTransformationArgs) -> None:
        options[(args.type_, args.name)] = args.opts

    pulumi.runtime.register_stack_transformation(record_options)
    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[None]:
        runpy.run_path(str(PULUMI_DIR), run_name="__main__")
        root = pulumi.runtime.get_root_resource()
        assert isinstance(root, pulumi.runtime.stack.Stack)
        exported: dict[str, Any] = dict(root.outputs)

        async def engine_view() -> dict[str, Any]:
            # What the engine receives for the stack outputs (and `pulumi stack output` prints).
            struct_value = await rpc.serialize_properties(exported, {})
            secrets = [
                key
                for key, value in exported.items()
                if isinstance(value, pulumi.Output) and await value.is_secret()
            ]
            return {"engine": json_format.MessageToDict(struct_value), "secrets": secrets}

        return pulumi.Output.all(
            pulumi.Output.from_input(exported), pulumi.Output.from_input(engine_view())
        ).apply(lambda values: result.update(outputs=values[0], **values[1]))

    program()
    # URN: urn:pulumi:<stack>::<project>::<parent type>$<type>::<name>
    urns = {}
    for registration in monitor.resources.values():
        _, _, qualified_type, name = registration.urn.split("::")
        urns[(qualified_type.split("$")[-1], name)] = registration.urn
    for resource in mocks.resources:
        resource.urn = urns[(resource.typ, resource.name)]
        resource.opts = options.get((resource.typ, resource.name))
    return StackRun(
        outputs=result["outputs"],
        engine_outputs=result["engine"],
        secret_outputs=result["secrets"],
        resources=list(mocks.resources),
        calls=list(mocks.calls),
    )
