"""Stack configuration: every ``rayops:*`` key, read once, typed and checked.

Each problem raises :class:`ConfigError` with one sentence that names the key, says what is wrong
and gives the ``pulumi config set`` line that fixes it. ``ConfigError`` is a ``pulumi.RunError``,
so ``pulumi up`` prints that sentence without a Python traceback.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

NAMESPACE = "rayops"

# Ubuntu 24.04 LTS (noble) for amd64, published by Canonical's AWS account.
CANONICAL_OWNER = "099720109477"
UBUNTU_NOBLE_AMD64 = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"

# Ray's head runs the GCS, the dashboard, the job drivers, JupyterLab and the monitoring stack:
# 16 GiB (m5.xlarge: 4 vCPU, 16 GiB). A 4 GiB head fails to start Ray (ray#62883).
DEFAULT_HEAD_INSTANCE_TYPE = "m5.xlarge"
# Workers run one Ray Train worker each plus the object store (30 % of memory by default):
# m5.large (2 vCPU, 8 GiB) leaves ~2.4 GiB of object store and room for XGBoost's DMatrix.
DEFAULT_WORKER_INSTANCE_TYPE = "m5.large"
MIN_HEAD_MEMORY_MIB = 8 * 1024
MIN_WORKER_MEMORY_MIB = 4 * 1024

DEFAULT_WORKER_COUNT = 2
#: More workers than this is a typo or a new kind of cluster (the security group's all-to-all rule,
#: one head, one subnet per zone): refused with a sentence.
MAX_WORKER_COUNT = 64
#: Addresses AWS keeps in every subnet (network, router, DNS, reserved, broadcast).
AWS_RESERVED_PER_SUBNET = 5
DEFAULT_ROOT_VOLUME_GB = 100
MIN_ROOT_VOLUME_GB = 20
MAX_ROOT_VOLUME_GB = 16384
DEFAULT_VPC_CIDR = "10.0.0.0/16"
DEFAULT_SSH_USER = "ubuntu"
DEFAULT_NONCURRENT_VERSION_DAYS = 30

# Bucket names are Pulumi auto-names, "<cluster>-<kind>-" plus 7 random hex characters: a cluster
# name of at most 40 characters keeps the longest ("<cluster>-features-xxxxxxx") within S3's 63.
CLUSTER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$")
SSH_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
AMI_ID_RE = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")
ACCOUNT_ID_RE = re.compile(r"^([0-9]{12}|self|amazon|aws-marketplace)$")
KEY_NAME_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")

KNOWN_KEYS = frozenset(
    {
        "allowedSshCidrs",
        "amiId",
        "amiNameFilter",
        "amiOwner",
        "clusterName",
        "forceDestroyBuckets",
        "headInstanceType",
        "keyName",
        "noncurrentVersionDays",
        "rootVolumeSizeGb",
        "secondAz",
        "spotWorkers",
        "sshPublicKey",
        "sshUser",
        "vpcCidr",
        "workerCount",
        "workerInstanceType",
    }
)


class ConfigError(pulumi.RunError):
    """The stack configuration is missing a value or holds one that cannot work."""


@dataclass(frozen=True)
class Settings:
    """Everything the program needs from the stack configuration, already checked."""

    cluster_name: str
    allowed_ssh_cidrs: tuple[str, ...]
    ssh_public_key: str | None
    key_name: str | None
    worker_count: int
    head_instance_type: str
    worker_instance_type: str
    spot_workers: bool
    root_volume_size_gb: int
    vpc_cidr: str
    second_az: bool
    ami_id: str | None
    ami_owner: str
    ami_name_filter: str
    ssh_user: str
    force_destroy_buckets: bool
    noncurrent_version_days: int


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def default_cluster_name(project: str, stack: str) -> str:
    """``<project>-<stack>`` lower-cased, with anything outside [a-z0-9-] turned into '-'."""
    raw = re.sub(r"[^a-z0-9-]+", "-", f"{project}-{stack}".lower())
    return re.sub(r"-{2,}", "-", raw).strip("-")


def _check_unknown_keys(configured: Mapping[str, Any]) -> None:
    for full_key in sorted(configured):
        namespace, _, name = full_key.partition(":")
        if namespace != NAMESPACE or name in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(name, sorted(KNOWN_KEYS), n=1)
        hint = f"did you mean {_key(close[0])}? " if close else ""
        raise ConfigError(
            f"{full_key} is not a rayops setting ({hint}see pulumi/Pulumi.example.yaml for the list): "
            f"remove it with `pulumi config rm {full_key}`"
        )


def _str(config: pulumi.Config, name: str) -> str | None:
    value = config.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ConfigError(
            f"{_key(name)} is set but empty: give it a value or remove it with "
            f"`pulumi config rm {_key(name)}`"
        )
    return value


def _str_or(config: pulumi.Config, name: str, default: str) -> str:
    value = _str(config, name)
    return default if value is None else value


def _int(config: pulumi.Config, name: str, default: int, low: int, high: int | None = None) -> int:
    bounds = f"between {low} and {high}" if high is not None else f"{low} or more"
    try:
        value = config.get_int(name)
    except pulumi.ConfigTypeError:
        raw = config.get(name)
        raise ConfigError(
            f"{_key(name)} must be a whole number {bounds}, got {raw!r}: "
            f"run `pulumi config set {_key(name)} {default}`"
        ) from None
    if value is None:
        return default
    if value < low or (high is not None and value > high):
        raise ConfigError(
            f"{_key(name)} must be a whole number {bounds}, got {value}: "
            f"run `pulumi config set {_key(name)} {default}`"
        )
    return value


def _bool(config: pulumi.Config, name: str) -> bool:
    try:
        value = config.get_bool(name)
    except pulumi.ConfigTypeError:
        raw = config.get(name)
        raise ConfigError(
            f"{_key(name)} must be true or false, got {raw!r}: run `pulumi config set {_key(name)} true`"
        ) from None
    return bool(value)


def parse_ssh_cidrs(raw: str | None) -> tuple[str, ...]:
    """The ``allowedSshCidrs`` value (a JSON list of IPv4 CIDRs) as normalised CIDR strings."""
    key = _key("allowedSshCidrs")
    how = f"run `pulumi config set --path '{key}[0]' 203.0.113.7/32` with your own address"
    if raw is None:
        raise ConfigError(
            f"{key} is required (the only addresses that may SSH to the cluster; there is no default): {how}"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of CIDRs, got {raw!r}: {how}")
    if not value:
        raise ConfigError(f"{key} is an empty list, so nobody could SSH to the cluster: {how}")
    cidrs: list[str] = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, str):
            raise ConfigError(f"{where} must be a CIDR string such as 203.0.113.7/32, got {item!r}")
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"{where} {item!r} is not a CIDR: write an IPv4 network such as 203.0.113.7/32"
            ) from None
        if network.version != 4:
            raise ConfigError(
                f"{where} {item!r} is IPv6, but the cluster's VPC is IPv4-only: use your IPv4 address/32"
            )
        if "/" not in item:
            raise ConfigError(f"{where} {item!r} has no prefix length: write {network.with_prefixlen}")
        if str(network) != item.strip():
            raise ConfigError(
                f"{where} {item!r} has host bits set: write the network {network.with_prefixlen}, "
                f"or {item.strip().split('/')[0]}/32 for one address"
            )
        if network.with_prefixlen not in cidrs:
            cidrs.append(network.with_prefixlen)
    if "0.0.0.0/0" in cidrs:
        pulumi.log.warn(
            f"{key} contains 0.0.0.0/0: SSH (port 22) is open to the whole internet, as you asked; "
            "nothing else is"
        )
    return tuple(cidrs)


def check_ssh_public_key(value: str) -> str:
    """Return ``value`` if it is an OpenSSH ed25519 or RSA public key line (EC2 imports only those)."""
    key = _key("sshPublicKey")
    how = f'run `pulumi config set {key} "$(cat ~/.ssh/id_ed25519.pub)"`'
    if "PRIVATE KEY" in value:
        raise ConfigError(f"{key} holds a private key, never share it: set the public key instead, {how}")
    parts = value.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ConfigError(
            f"{key} must be an OpenSSH public key starting with {' or '.join(SSH_KEY_TYPES)}: {how}"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        blob = b""
    # The key blob starts with the length-prefixed key type name.
    if blob[4 : 4 + len(parts[0])] != parts[0].encode():
        raise ConfigError(f"{key} is not a valid {parts[0]} public key (the base64 part is damaged): {how}")
    return value


def _vpc_cidr(config: pulumi.Config) -> str:
    key = _key("vpcCidr")
    raw = _str_or(config, "vpcCidr", DEFAULT_VPC_CIDR)
    try:
        network = ipaddress.IPv4Network(raw, strict=True)
    except ValueError:
        raise ConfigError(
            f"{key} {raw!r} is not an IPv4 network: run `pulumi config set {key} {DEFAULT_VPC_CIDR}`"
        ) from None
    if not network.is_private or not 16 <= network.prefixlen <= 24:
        raise ConfigError(
            f"{key} {raw!r} must be a private (RFC 1918) network from /16 to /24: "
            f"run `pulumi config set {key} {DEFAULT_VPC_CIDR}`"
        )
    return str(network)


def check_subnets_fit(vpc_cidr: str, worker_count: int, subnets: int) -> None:
    """Refuse a VPC range whose subnets (1/16 of it each, network.py) cannot hold the nodes placed in them:
    the head and every ``subnets``-th worker go to the first subnet (cluster.py)."""
    from .network import subnet_cidrs

    first = ipaddress.IPv4Network(subnet_cidrs(vpc_cidr, subnets)[0])
    usable = first.num_addresses - AWS_RESERVED_PER_SUBNET
    nodes = 1 + sum(1 for index in range(1, worker_count + 1) if index % subnets == 0)
    if nodes > usable:
        key = _key("vpcCidr")
        need = next(p for p in range(24, 15, -1) if 2 ** (32 - p - 4) - AWS_RESERVED_PER_SUBNET >= nodes)
        wider = ipaddress.IPv4Network(vpc_cidr).supernet(new_prefix=need)
        raise ConfigError(
            f"{key} {vpc_cidr} gives /{first.prefixlen} subnets ({usable} usable addresses each), too small "
            f"for the {nodes} nodes of the first subnet with rayops:workerCount {worker_count}: run "
            f"`pulumi config set {key} {wider}` (a /{need}) or lower rayops:workerCount"
        )


def _instance_type(config: pulumi.Config, name: str, default: str) -> str:
    value = _str_or(config, name, default)
    if not INSTANCE_TYPE_RE.match(value):
        raise ConfigError(
            f"{_key(name)} {value!r} is not an EC2 instance type: "
            f"run `pulumi config set {_key(name)} {default}`"
        )
    return value


def load_settings(config: pulumi.Config, project: str, stack: str) -> Settings:
    """Read and check every ``rayops:*`` key of the stack; raise :class:`ConfigError` on the first problem."""
    configured: dict[str, Any] = dict(pulumi.runtime.get_config_env())
    configured.update(runtime_config.CONFIG.get())
    _check_unknown_keys(configured)

    cluster_name = _str(config, "clusterName") or default_cluster_name(project, stack)
    if not CLUSTER_NAME_RE.match(cluster_name):
        where = _key("clusterName") if config.get("clusterName") else f"the default name {cluster_name!r}"
        raise ConfigError(
            f"{where} must be 2 to 40 characters of a-z, 0-9 and '-' that start and end with a letter "
            f"or digit (it prefixes every resource and bucket name): run `pulumi config set "
            f"{_key('clusterName')} rayops-dev`"
        )

    ssh_public_key = _str(config, "sshPublicKey")
    key_name = _str(config, "keyName")
    if ssh_public_key and key_name:
        raise ConfigError(
            f"set either {_key('sshPublicKey')} or {_key('keyName')}, not both: "
            f"remove one with `pulumi config rm {_key('keyName')}`"
        )
    if ssh_public_key:
        check_ssh_public_key(ssh_public_key)
    elif key_name:
        if not KEY_NAME_RE.match(key_name):
            raise ConfigError(f"{_key('keyName')} {key_name!r} is not an EC2 key pair name")
    else:
        raise ConfigError(
            f"the nodes need an SSH key: run `pulumi config set {_key('sshPublicKey')} "
            f'"$(cat ~/.ssh/id_ed25519.pub)"` or name an existing EC2 key pair with '
            f"`pulumi config set {_key('keyName')} <name>`"
        )

    ami_id = _str(config, "amiId")
    if ami_id is not None and not AMI_ID_RE.match(ami_id):
        raise ConfigError(
            f"{_key('amiId')} {ami_id!r} is not an AMI id (ami- and 8 or 17 hex digits): "
            f"fix it, or remove it with `pulumi config rm {_key('amiId')}` to use Ubuntu 24.04"
        )
    ami_owner = _str_or(config, "amiOwner", CANONICAL_OWNER)
    if not ACCOUNT_ID_RE.match(ami_owner):
        raise ConfigError(
            f"{_key('amiOwner')} {ami_owner!r} must be a 12-digit AWS account id, self, amazon or "
            f"aws-marketplace: run `pulumi config set {_key('amiOwner')} {CANONICAL_OWNER}`"
        )
    ami_name_filter = _str_or(config, "amiNameFilter", UBUNTU_NOBLE_AMD64)

    ssh_user = _str_or(config, "sshUser", DEFAULT_SSH_USER)
    if not SSH_USER_RE.match(ssh_user):
        raise ConfigError(
            f"{_key('sshUser')} {ssh_user!r} is not a Linux user name: "
            f"run `pulumi config set {_key('sshUser')} {DEFAULT_SSH_USER}`"
        )

    worker_count = _int(config, "workerCount", DEFAULT_WORKER_COUNT, 0, MAX_WORKER_COUNT)
    vpc_cidr = _vpc_cidr(config)
    second_az = _bool(config, "secondAz")
    check_subnets_fit(vpc_cidr, worker_count, 2 if second_az else 1)

    return Settings(
        cluster_name=cluster_name,
        allowed_ssh_cidrs=parse_ssh_cidrs(config.get("allowedSshCidrs")),
        ssh_public_key=ssh_public_key,
        key_name=key_name,
        worker_count=worker_count,
        head_instance_type=_instance_type(config, "headInstanceType", DEFAULT_HEAD_INSTANCE_TYPE),
        worker_instance_type=_instance_type(config, "workerInstanceType", DEFAULT_WORKER_INSTANCE_TYPE),
        spot_workers=_bool(config, "spotWorkers"),
        root_volume_size_gb=_int(
            config, "rootVolumeSizeGb", DEFAULT_ROOT_VOLUME_GB, MIN_ROOT_VOLUME_GB, MAX_ROOT_VOLUME_GB
        ),
        vpc_cidr=vpc_cidr,
        second_az=second_az,
        ami_id=ami_id,
        ami_owner=ami_owner,
        ami_name_filter=ami_name_filter,
        ssh_user=ssh_user,
        force_destroy_buckets=_bool(config, "forceDestroyBuckets"),
        noncurrent_version_days=_int(
            config, "noncurrentVersionDays", DEFAULT_NONCURRENT_VERSION_DAYS, 1, 3650
        ),
    )
