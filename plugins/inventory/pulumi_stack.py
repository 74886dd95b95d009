# Copyright (c) rayops contributors
# Apache License 2.0 (see pyproject.toml)
"""Ansible inventory plugin: the nodes of a rayops cluster, read from its Pulumi stack outputs."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

try:
    from rayops.contract import ContractError, head, load_schema, validate
except ImportError as _exc:  # reported by parse(), which knows the config file's name
    _CONTRACT_IMPORT_ERROR: ImportError | None = _exc
else:
    _CONTRACT_IMPORT_ERROR = None

DOCUMENTATION = r"""
name: pulumi_stack
short_description: rayops cluster nodes from Pulumi stack outputs
description:
  - Turns the outputs of a rayops stack (stack-output contract v1, see C(rayops/contract.schema.json))
    into Ansible hosts, one per node, named by the node's C(name).
  - The head goes into group C(ray_head), the workers into C(ray_workers); both groups are children of
    C(ray_cluster). Both groups exist even when they are empty.
  - Every host gets C(ansible_host), C(ansible_user), C(ray_node_ip) (its private IP), C(ray_head_ip)
    (the head's private IP), C(rayops_buckets), C(s3_endpoint_url), C(rayops_cluster_name),
    C(rayops_provider), C(rayops_region), C(rayops_node_role), C(rayops_instance_id),
    C(rayops_instance_type), C(rayops_private_ip), C(rayops_public_ip) and C(rayops_s3_env), plus
    C(rayops_ray_resources) where a node's outputs size what Ray may use on it (the local cloud).
  - C(rayops_s3_env) is the environment a process on a node needs for the cluster's S3, which the roles
    give to Ray, its clients and the notebook kernel, as an instance profile would. Without an
    C(s3_endpoint_url) it holds the region (C(AWS_DEFAULT_REGION) and C(AWS_REGION)), as on AWS, where the
    instance profile signs requests. With one it names that endpoint (C(AWS_ENDPOINT_URL_S3)) and the region.
    The outputs' optional C(s3_env) is laid over that, as it is; the local cloud writes there what its
    nodes need (no EC2 metadata lookup, a region its S3 accepts, a placeholder key pair that is not a
    credential). The plugin knows nothing of any provider.
  - When the outputs carry C(ssh_private_key_file) the hosts get C(ansible_ssh_private_key_file).
  - Host keys are pinned, never trusted on first use. When every node carries C(ssh_host_key) (the key Pulumi
    generates and injects on AWS; the local cloud exports its machines' keys the same way) the plugin writes
    a known-hosts file of its own under O(known_hosts_dir) with exactly those keys for each node's private and
    public IP, and the hosts get C(ansible_ssh_common_args) that pin it with C(StrictHostKeyChecking=yes).
    Otherwise, when the outputs carry C(ssh_known_hosts_file), that file is pinned the same way.
    Relative paths in the outputs resolve against the folder of the outputs file,
    the state file, or the Pulumi project.
  - C(ansible_ssh_common_args) is merged, never overwritten. A C(compose) entry for it (or the
    O(ssh_common_args) option) adds its options after the ones the plugin writes (the pinned known-hosts
    file, the jump through the head), and ssh takes the first value it reads for each option, so those
    stay in force. With O(jump_via_head), the added options also reach the hop to the head.
  - The outputs come from exactly one source per configuration file, O(outputs_file), O(stack) with
    O(project_dir), or O(state_file).
  - The configuration file must be named C(pulumi_stack.yml) or end with C(.pulumi_stack.yml)
    (or C(.yaml)).
  - Only the keys of the contract are kept (also in the inventory cache); any other stack output, secret or
    not, never reaches the inventory.
author:
  - rayops contributors
requirements:
  - the C(rayops) package installed next to ansible-core (C(make setup))
  - the Pulumi CLI, logged in to the stack's backend, only when O(stack) is used
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks this file as a configuration file of this plugin.
    required: true
    type: str
    choices: ['pulumi_stack']
  outputs_file:
    description:
      - A JSON file holding the stack outputs, as written by the local cloud
        (C(.rayops/local/outputs.json)) or by C(pulumi stack output --json --show-secrets > FILE).
      - A relative path resolves against the folder of this configuration file.
    type: str
  stack:
    description:
      - The Pulumi stack to read, for example C(dev) or C(myorg/rayops/dev). The plugin runs
        C(pulumi stack output --json --show-secrets --non-interactive --stack STACK) in O(project_dir).
      - Requires O(project_dir).
    type: str
  project_dir:
    description:
      - The folder that holds the stack's C(Pulumi.yaml); used only with O(stack).
      - A relative path resolves against the folder of this configuration file.
    type: str
  state_file:
    description:
      - A C(pulumi stack export --show-secrets > FILE) file, read without the Pulumi CLI. The outputs are
        those of the resource of type C(pulumi:pulumi:Stack).
      - Secret outputs must be in plaintext; an export with encrypted secrets (C(ciphertext)) is refused.
      - A relative path resolves against the folder of this configuration file.
    type: str
  pulumi_timeout:
    description: Seconds to wait for the Pulumi CLI (O(stack) only) before giving up.
    type: int
    default: 120
  use_private_ip:
    description:
      - Connect to every node on its private IP, for a controller inside the cluster's network.
      - When V(false), nodes with a public IP are reached on it and the others on their private IP.
    type: bool
    default: false
  jump_via_head:
    description:
      - Reach the workers on their private IPs through the head as an SSH jump host
        (C(-o ProxyJump=USER@HEAD) in C(ansible_ssh_common_args)); the head itself is reached as usual.
      - When the outputs name an SSH key or a known-hosts file, the jump is written as an equivalent
        C(ProxyCommand) that passes that key and known-hosts file to the hop too, because C(ssh) applies
        command-line options to the destination only, never to a C(ProxyJump) host. So are the options of
        O(ssh_common_args) and of a C(compose) entry for C(ansible_ssh_common_args).
    type: bool
    default: false
  ssh_common_args:
    description:
      - SSH options for every host, for example C(-o ServerAliveCountMax=6), added after the
        options the plugin writes into C(ansible_ssh_common_args) (and to the hop of O(jump_via_head)).
      - The same as a C(compose) entry for C(ansible_ssh_common_args), which is merged the same way
        (after this option's options) instead of replacing the plugin's.
    type: str
  known_hosts_dir:
    description:
      - Where the plugin writes the known-hosts file of the nodes' C(ssh_host_key)s, one file per cluster and
        key set (C(CLUSTER-HASH)), replaced only when the keys change.
    type: path
    default: ~/.ansible/rayops/known_hosts
"""

EXAMPLES = r"""
---
# inventory/local.pulumi_stack.yml: the local cloud's outputs (relative to this file)
plugin: pulumi_stack
outputs_file: ../.rayops/local/outputs.json

---
# inventory/aws.pulumi_stack.yml: ask the Pulumi CLI for the outputs of stack "dev";
# the workers have no public IP, so hop through the head; the nodes' host keys (exported by
# the stack) are pinned for the head as a hop too; extra options are merged after them
plugin: pulumi_stack
stack: dev
project_dir: ../pulumi
jump_via_head: true
ssh_common_args: -o ServerAliveCountMax=6

---
# Read an exported state file and add constructed groups and variables
plugin: pulumi_stack
state_file: dev-state.json
strict: true
keyed_groups:
  # ray_instance_type_m7i_large, ...
  - prefix: ray_instance_type
    key: rayops_instance_type
groups:
  # the nodes that answer on a public IP
  public_nodes: rayops_public_ip is not none
compose:
  ray_dashboard_url: "'http://' ~ ray_head_ip ~ ':8265'"

---
# Cache the outputs for an hour instead of asking the CLI on every run; the cache
# plugin and its folder come from ansible.cfg (jsonfile in .rayops/facts) unless set
# here. `ansible-inventory --flush-cache --list` reads the stack again.
plugin: pulumi_stack
stack: dev
project_dir: ../pulumi
cache: true
cache_timeout: 3600
"""

GROUP_CLUSTER = "ray_cluster"
GROUP_HEAD = "ray_head"
GROUP_WORKERS = "ray_workers"
CONFIG_SUFFIXES = (".pulumi_stack.yml", ".pulumi_stack.yaml")
CONFIG_NAMES = ("pulumi_stack.yml", "pulumi_stack.yaml")
SOURCE_OPTIONS = ("outputs_file", "stack", "state_file")
STACK_RESOURCE_TYPE = "pulumi:pulumi:Stack"
# Pulumi marks a secret value in a state export with this signature key and value.
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 (public Pulumi marker, no secret)
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (public Pulumi marker, no secret)
SSH_ARGS_VAR = "ansible_ssh_common_args"
OUTPUT_FIX = (
    "start the local cloud (`rayops-local up`), or save a stack's outputs with "
    "`pulumi stack output --json --show-secrets > FILE`"
)


class PulumiStackError(AnsibleParserError):  # type: ignore[misc]  # ansible-core ships no type hints
    """A pulumi_stack inventory that cannot be built; its message already says why and what to do.

    The cause stays chained for ``-vvv`` tracebacks, but ansible-core does not repeat its message.
    """

    _include_cause_message = False


class SourceError(Exception):
    """The stack outputs could not be read; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Source:
    """Where one configuration file takes its outputs from."""

    kind: str  # "outputs_file", "stack" or "state_file"
    location: Path  # the file, or the Pulumi project folder for "stack"
    stack: str | None = None

    @property
    def base_dir(self) -> Path:
        """The folder that relative paths inside the outputs resolve against."""
        return self.location if self.kind == "stack" else self.location.parent

    def describe(self) -> str:
        if self.kind == "stack":
            return f"stack {self.stack!r} in {self.location}"
        return f"{self.kind} {self.location}"

    def digest(self) -> str:
        """A short, stable fingerprint of this source, part of the cache key."""
        text = f"{self.kind}\0{self.location}\0{self.stack or ''}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _resolve(path: str, base: Path) -> Path:
    """``path`` with ``~`` expanded, made absolute against ``base``."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else (base / expanded).resolve()


def select_source(options: dict[str, Any], config_dir: Path) -> Source:
    """The one source the options name; SourceError when there are none or several."""
    given = [name for name in SOURCE_OPTIONS if options.get(name)]
    if len(given) != 1:
        found = f"found {' and '.join(given)}" if given else "found none"
        raise SourceError("set exactly one of outputs_file, stack (with project_dir) or state_file, " + found)
    kind = given[0]
    project_dir = options.get("project_dir")
    if kind == "stack":
        if not project_dir:
            raise SourceError(
                "stack needs project_dir, the folder with the stack's Pulumi.yaml "
                "(e.g. project_dir: ../pulumi)"
            )
        return Source("stack", _resolve(str(project_dir), config_dir), str(options["stack"]))
    if project_dir:
        raise SourceError(f"project_dir only goes with stack, not with {kind}: remove it")
    return Source(kind, _resolve(str(options[kind]), config_dir))


def _read_json_file(path: Path, what: str, fix: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SourceError(f"{what} {path} does not exist: {fix}") from exc
    except IsADirectoryError as exc:
        raise SourceError(f"{what} {path} is a folder, not a JSON file: point it at the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{what} {path} cannot be read ({exc}): {fix}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): {fix}"
        ) from exc


def reveal_secrets(value: Any, where: str = "outputs") -> Any:
    """``value`` with Pulumi's secret envelopes replaced by their plaintext values.

    Raises SourceError for an encrypted secret, which cannot be read without the stack's secrets provider.
    """
    if isinstance(value, list):
        return [reveal_secrets(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if value.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE:
        if "plaintext" in value:
            try:
                return reveal_secrets(json.loads(value["plaintext"]), where)
            except (TypeError, json.JSONDecodeError) as exc:
                raise SourceError(f"the secret at {where} holds a plaintext that is not JSON") from exc
        raise SourceError(
            f"the secret at {where} is encrypted (ciphertext): use `stack:` instead of `state_file:`, "
            "or save the outputs with `pulumi stack output --json --show-secrets > FILE` "
            "and use `outputs_file:`"
        )
    return {key: reveal_secrets(item, f"{where}.{key}") for key, item in value.items()}


def outputs_from_state(state: Any) -> Any:
    """The stack outputs held by a ``pulumi stack export`` document."""
    deployment = state.get("deployment") if isinstance(state, dict) else None
    resources = deployment.get("resources") if isinstance(deployment, dict) else None
    if not isinstance(resources, list):
        raise SourceError(
            "the state file has no deployment.resources list: write it with "
            "`pulumi stack export --show-secrets > FILE`"
        )
    stacks = [r for r in resources if isinstance(r, dict) and r.get("type") == STACK_RESOURCE_TYPE]
    if len(stacks) != 1:
        raise SourceError(
            f"the state file holds {len(stacks)} resources of type {STACK_RESOURCE_TYPE}, expected 1: "
            "write it with `pulumi stack export --show-secrets > FILE` after `pulumi up`"
        )
    outputs = stacks[0].get("outputs")
    if not outputs:
        raise SourceError(
            "the stack in the state file has no outputs: run `pulumi up` first, then export again"
        )
    return reveal_secrets(outputs)


def _pulumi_failure(stderr: str, source: Source, returncode: int) -> SourceError:
    """Turn the Pulumi CLI's complaint into a sentence that says what to do."""
    lowered = stderr.lower()
    if "pulumi_access_token" in lowered or "not logged in" in lowered or "pulumi login" in lowered:
        return SourceError(
            "the Pulumi CLI is not logged in: run `pulumi login` (or set PULUMI_ACCESS_TOKEN, or "
            "PULUMI_BACKEND_URL for a self-managed backend) and try again"
        )
    if "no stack named" in lowered or ("stack" in lowered and "not found" in lowered):
        return SourceError(
            f"Pulumi has no stack {source.stack!r} for the project in {source.location}: check the stack "
            "option against `pulumi stack ls`, or create it with `pulumi stack init` and `pulumi up`"
        )
    if "passphrase" in lowered:
        return SourceError(
            "the stack's secrets need a passphrase: set PULUMI_CONFIG_PASSPHRASE or "
            "PULUMI_CONFIG_PASSPHRASE_FILE and try again"
        )
    if "pulumi.yaml" in lowered:
        return SourceError(
            f"there is no Pulumi project (Pulumi.yaml) in {source.location}: set project_dir to the folder "
            "that holds the stack's Pulumi.yaml"
        )
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = f": {lines[-1]}" if lines else " and printed nothing on stderr"
    return SourceError(
        f"`pulumi stack output` failed for {source.describe()} with exit code {returncode}{said}; "
        "run it by hand in that folder to see why"
    )


def outputs_from_cli(source: Source, timeout: int) -> Any:
    """Ask the Pulumi CLI for the stack's outputs, secrets revealed."""
    if not source.location.is_dir():
        raise SourceError(
            f"project_dir {source.location} is not a folder: "
            "point it at the folder with the stack's Pulumi.yaml"
        )
    command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--non-interactive"]
    command += ["--stack", str(source.stack)]
    env = {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    try:
        done = subprocess.run(
            command,
            cwd=source.location,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SourceError(
            "the Pulumi CLI (`pulumi`) is not on PATH: install it (https://www.pulumi.com/docs/install/), or "
            "save the outputs elsewhere with `pulumi stack output --json --show-secrets > FILE` and use "
            "`outputs_file:` instead of `stack:`"
        ) from exc
    except PermissionError as exc:
        raise SourceError(f"the Pulumi CLI cannot be run ({exc}): check the `pulumi` found on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceError(
            f"`pulumi stack output` did not answer within {timeout} s for {source.describe()}: check the "
            "backend is reachable, or raise pulumi_timeout"
        ) from exc
    if done.returncode != 0:
        raise _pulumi_failure(done.stderr, source, done.returncode)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        # Never echo stdout: it holds the stack's secrets.
        raise SourceError(
            f"`pulumi stack output --json` printed something that is not JSON ({exc.msg}) for "
            f"{source.describe()}: run it by hand to see why"
        ) from exc


def read_outputs(source: Source, timeout: int) -> Any:
    """The raw outputs of ``source``, not yet validated."""
    if source.kind == "outputs_file":
        return _read_json_file(source.location, "outputs_file", OUTPUT_FIX)
    if source.kind == "state_file":
        state = _read_json_file(
            source.location, "state_file", "write it with `pulumi stack export --show-secrets > FILE`"
        )
        return outputs_from_state(state)
    return outputs_from_cli(source, timeout)


def contract_keys() -> tuple[set[str], set[str]]:
    """The top-level and node keys that contract v1 knows."""
    schema = load_schema()
    top = set(schema["properties"])
    node = set(schema["$defs"]["node"]["properties"])
    return top, node


def checked_outputs(outputs: Any) -> dict[str, Any]:
    """Validate ``outputs`` against the contract and keep only the contract's keys."""
    validated = validate(outputs)  # the schema also types the optional key and known_hosts files
    top, node = contract_keys()
    kept = {key: value for key, value in validated.items() if key in top}
    kept["nodes"] = [{key: value for key, value in n.items() if key in node} for n in validated["nodes"]]
    return kept


def connect_address(node: dict[str, Any], use_private_ip: bool) -> str:
    """The address Ansible connects to when no jump host is involved."""
    public: str | None = node["public_ip"]
    return node["private_ip"] if use_private_ip or not public else public


@dataclass(frozen=True)
class SshPlan:
    """What a host's ``ansible_ssh_common_args`` are made of; ``args`` merges the user's options in."""

    known_hosts: Path | None = None
    key_file: Path | None = None
    jump: str | None = None

    def args(self, extra: list[str] | None = None) -> str | None:
        """Pinned known hosts, then the jump through ``jump``, then ``extra`` (the user's options).

        ssh keeps the first value of each option, so ``extra`` cannot undo the pinning or the jump. ssh
        applies command-line options to the destination only, so a jump that needs options (a key, the
        pinned known hosts, ``extra``) is a ProxyCommand hop that passes them, else a plain ProxyJump.
        """
        extra = list(extra or [])
        options: list[str] = []
        if self.known_hosts is not None:
            # ssh splits UserKnownHostsFile on whitespace (it takes a list); double quotes keep one path whole
            kh = str(self.known_hosts)
            path = f'"{kh}"' if any(c.isspace() for c in kh) else kh
            options += ["-o", f"UserKnownHostsFile={path}", "-o", "StrictHostKeyChecking=yes"]
        args = list(options)
        if self.jump is not None:
            if self.key_file is None and not options and not extra:
                args += ["-o", f"ProxyJump={self.jump}"]
            else:
                hop = ["ssh", "-W", "%h:%p"]
                if self.key_file is not None:
                    hop += ["-i", str(self.key_file)]
                hop += [*options, *extra, self.jump]
                args += ["-o", "ProxyCommand=" + shlex.join(hop)]
        args += extra
        return shlex.join(args) if args else None


def known_hosts_lines(outputs: dict[str, Any]) -> list[str] | None:
    """One known_hosts line per node (its private and public IP, its ``ssh_host_key``), or None when the
    nodes carry no host keys (the contract allows all or none)."""
    nodes = outputs["nodes"]
    if not nodes or not all(n.get("ssh_host_key") for n in nodes):
        return None
    lines = []
    for node in sorted(nodes, key=lambda n: n["name"]):
        addresses = [node["private_ip"]] + ([node["public_ip"]] if node.get("public_ip") else [])
        lines.append(f"{','.join(addresses)} {node['ssh_host_key']}")
    return lines


def write_known_hosts(outputs: dict[str, Any], directory: Path) -> Path | None:
    """The known_hosts file of the nodes' host keys under ``directory`` (written when missing), or None.

    Named by the cluster and a digest of its lines, so two clusters (or two runs of one) never race on one
    file, and a stack whose keys changed gets a new file rather than a changed one."""
    lines = known_hosts_lines(outputs)
    if lines is None:
        return None
    text = "\n".join(lines) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = directory / f"{outputs['cluster_name']}-{digest}"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def s3_env(outputs: dict[str, Any]) -> dict[str, str]:
    """The environment for the cluster's S3 on a node (see C(rayops_s3_env) in the documentation)."""
    region: str = outputs["region"]
    endpoint = outputs.get("s3_endpoint_url")
    env = (
        {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_DEFAULT_REGION": region}
        if endpoint
        else {"AWS_DEFAULT_REGION": region, "AWS_REGION": region}
    )
    env.update(outputs.get("s3_env") or {})
    return env


@dataclass(frozen=True)
class Host:
    """One node as an Ansible host: its group, its variables, and how its SSH arguments are made."""

    name: str
    group: str
    vars: dict[str, Any]
    ssh: SshPlan


def build_hosts(
    outputs: dict[str, Any],
    base_dir: Path,
    *,
    use_private_ip: bool = False,
    jump_via_head: bool = False,
    ssh_extra: list[str] | None = None,
    known_hosts_dir: Path | None = None,
) -> list[Host]:
    """Every node of validated ``outputs`` as a host, head first.

    The nodes' ``ssh_host_key``s, written under ``known_hosts_dir``, are pinned when they carry them; else
    the outputs' ``ssh_known_hosts_file``."""
    the_head = head(outputs)
    head_address = connect_address(the_head, use_private_ip)
    ssh_user: str = outputs["ssh_user"]
    key_file = (
        _resolve(outputs["ssh_private_key_file"], base_dir) if outputs.get("ssh_private_key_file") else None
    )
    given_known_hosts = (
        _resolve(outputs["ssh_known_hosts_file"], base_dir) if outputs.get("ssh_known_hosts_file") else None
    )
    written = write_known_hosts(outputs, known_hosts_dir) if known_hosts_dir is not None else None
    known_hosts = written or given_known_hosts
    common = {
        "ansible_user": ssh_user,
        "ray_head_ip": the_head["private_ip"],
        "rayops_buckets": dict(outputs["buckets"]),
        "s3_endpoint_url": outputs["s3_endpoint_url"],
        "rayops_cluster_name": outputs["cluster_name"],
        "rayops_provider": outputs["provider"],
        "rayops_region": outputs["region"],
        "rayops_s3_env": s3_env(outputs),
    }
    if key_file is not None:
        common["ansible_ssh_private_key_file"] = str(key_file)
    if given_known_hosts is not None:
        # Clouds with pinned host keys (the local cloud) come and go on the same IPs: keep their SSH
        # master connections beside that file, so a master of a removed cloud is never reused.
        common["ansible_control_path_dir"] = str(Path(given_known_hosts).parent / "cp")
    nodes = [the_head] + [n for n in outputs["nodes"] if n["role"] != "head"]
    hosts = []
    for node in nodes:
        is_head = node["role"] == "head"
        jumps = jump_via_head and not is_head
        host_vars = {
            **common,
            "ansible_host": node["private_ip"] if jumps else connect_address(node, use_private_ip),
            "ray_node_ip": node["private_ip"],
            "rayops_node_role": node["role"],
            "rayops_instance_id": node["instance_id"],
            "rayops_instance_type": node["instance_type"],
            "rayops_private_ip": node["private_ip"],
            "rayops_public_ip": node["public_ip"],
        }
        if node.get("ray_resources"):
            host_vars["rayops_ray_resources"] = dict(node["ray_resources"])
        plan = SshPlan(known_hosts, key_file, f"{ssh_user}@{head_address}" if jumps else None)
        args = plan.args(ssh_extra)
        if args is not None:
            host_vars[SSH_ARGS_VAR] = args
        hosts.append(Host(node["name"], GROUP_HEAD if is_head else GROUP_WORKERS, host_vars, plan))
    return hosts


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):  # type: ignore[misc]  # ansible-core ships no type hints
    """Hosts and groups of a rayops cluster from its stack outputs."""

    NAME = "pulumi_stack"

    def verify_file(self, path: str) -> bool:
        """Accept only readable files named ``[*.]pulumi_stack.yml`` or ``[*.]pulumi_stack.yaml``."""
        name = Path(str(path)).name
        if super().verify_file(path) and (name in CONFIG_NAMES or name.endswith(CONFIG_SUFFIXES)):
            return True
        self.display.debug(
            "pulumi_stack inventory files must be named pulumi_stack.yml or *.pulumi_stack.yml (.yaml)"
        )
        return False

    @staticmethod
    def _fail(path: str, problem: str) -> PulumiStackError:
        """The error for ``problem``, naming the inventory configuration file."""
        return PulumiStackError(f"pulumi_stack inventory {path}: {problem}")

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path)
        if _CONTRACT_IMPORT_ERROR is not None:
            raise self._fail(
                path,
                f"the rayops package cannot be imported ({_CONTRACT_IMPORT_ERROR}): "
                "run `make setup` and use the ansible commands from .venv/bin",
            ) from _CONTRACT_IMPORT_ERROR
        config = self._read_config_data(path)
        unknown = sorted(str(name) for name in config if name not in self._options)
        if unknown:
            known = sorted(self._options)
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self._fail(
                path,
                f"{unknown[0]!r} is not an option of this plugin{hint}: fix or remove it; the options are "
                f"{', '.join(known)} (ansible-doc -t inventory pulumi_stack)",
            )
        config_dir = Path(path).resolve().parent
        try:
            source = select_source(
                {name: self.get_option(name) for name in (*SOURCE_OPTIONS, "project_dir")}, config_dir
            )
        except SourceError as exc:
            raise self._fail(path, str(exc)) from exc.__cause__ or exc

        cache_key = f"{self.get_cache_key(path)}_{source.digest()}"
        use_cache = bool(self.get_option("cache"))
        # cache is False for --flush-cache / meta: refresh_inventory: read the source, then refresh the cache.
        outputs: Any = None
        update_cache = use_cache and not cache
        if use_cache and cache:
            try:
                outputs = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if outputs is None:
            try:
                outputs = read_outputs(source, int(self.get_option("pulumi_timeout")))
            except SourceError as exc:
                raise self._fail(path, str(exc)) from exc.__cause__ or exc
        try:
            kept = checked_outputs(outputs)
        except ContractError as exc:
            raise self._fail(
                path,
                f"the outputs of {source.describe()} break the rayops stack-output contract: {exc}",
            ) from exc
        if update_cache:
            self._cache[cache_key] = kept

        ssh_extra = shlex.split(self.get_option("ssh_common_args") or "")
        known_hosts_dir = Path(self.get_option("known_hosts_dir")).expanduser()
        try:
            hosts = build_hosts(
                kept,
                source.base_dir,
                use_private_ip=bool(self.get_option("use_private_ip")),
                jump_via_head=bool(self.get_option("jump_via_head")),
                ssh_extra=ssh_extra,
                known_hosts_dir=known_hosts_dir,
            )
        except OSError as exc:
            raise self._fail(
                path,
                f"cannot write the nodes' known_hosts file under {known_hosts_dir} ({exc.strerror}): "
                "set known_hosts_dir to a folder you can write",
            ) from exc
        self._populate(hosts, ssh_extra)

    def _populate(self, hosts: list[Host], ssh_extra: list[str]) -> None:
        for group in (GROUP_CLUSTER, GROUP_HEAD, GROUP_WORKERS):
            self.inventory.add_group(group)
        self.inventory.add_child(GROUP_CLUSTER, GROUP_HEAD)
        self.inventory.add_child(GROUP_CLUSTER, GROUP_WORKERS)
        strict = self.get_option("strict")
        groups, keyed_groups = self.get_option("groups"), self.get_option("keyed_groups")
        compose = dict(self.get_option("compose") or {})
        ssh_template = compose.pop(SSH_ARGS_VAR, None)
        for host in hosts:
            self.inventory.add_host(host.name, group=host.group)
            for key, value in host.vars.items():
                self.inventory.set_variable(host.name, key, value)
            if ssh_template is not None:
                self._merge_composed_ssh_args(host, ssh_template, ssh_extra, strict)
            self._set_composite_vars(compose, host.vars, host.name, strict=strict)
            self._add_host_to_composed_groups(groups, host.vars, host.name, strict=strict)
            self._add_host_to_keyed_groups(keyed_groups, host.vars, host.name, strict=strict)

    def _merge_composed_ssh_args(self, host: Host, template: str, ssh_extra: list[str], strict: bool) -> None:
        """A ``compose`` entry for ansible_ssh_common_args, merged after the plugin's options."""
        try:
            composed = self._compose(template, host.vars)
        except Exception as exc:
            if strict:
                raise AnsibleError(f"Could not set {SSH_ARGS_VAR} for host {host.name}: {exc}") from exc
            return
        text = str(composed or "").strip()
        own = host.vars.get(SSH_ARGS_VAR)
        if own and text.startswith(own):  # a template that extends the plugin's value adds only the rest
            text = text[len(own) :]
        merged = host.ssh.args([*ssh_extra, *shlex.split(text)])
        if merged is not None:
            self.inventory.set_variable(host.name, SSH_ARGS_VAR, merged)
