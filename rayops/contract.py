"""The stack-output contract (version 1): one definition, used by every producer and consumer.

The JSON Schema in ``contract.schema.json`` describes the shape; :func:`validate` adds the rules a
schema cannot express (exactly one head, unique node names and IPs) and turns every violation into
one sentence that names the offending key.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

CONTRACT_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("contract.schema.json")
BUCKET_KINDS = ("raw", "features", "models", "results")


class ContractError(ValueError):
    """The outputs do not follow the rayops stack-output contract."""


@cache
def load_schema() -> dict[str, Any]:
    """Return the contract's JSON Schema."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def _where(path: Any) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "outputs" + "".join(parts)


def validate(outputs: Any) -> dict[str, Any]:
    """Check ``outputs`` against contract v1; return them with defaults filled in, or raise ContractError.

    The one default: an absent ``s3_endpoint_url`` is null (the Pulumi SDK cannot export a top-level
    None, so the AWS stack's outputs simply lack the key).
    """
    if not isinstance(outputs, dict):
        raise ContractError(f"the outputs must be a JSON object, got {type(outputs).__name__}")
    filled: dict[str, Any] = {**outputs, "s3_endpoint_url": outputs.get("s3_endpoint_url")}
    version = filled.get("rayops_contract")
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"'rayops_contract' is {version!r}, this rayops reads version {CONTRACT_VERSION}: "
            "point it at the outputs of a rayops stack (pulumi/ or the local cloud)"
        )
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise ContractError(f"{_where(first.absolute_path)}: {first.message}")
    nodes = filled["nodes"]
    heads = [n["name"] for n in nodes if n["role"] == "head"]
    if len(heads) != 1:
        raise ContractError(
            f"outputs.nodes must hold exactly one node with role 'head', found {len(heads)}"
            + (f" ({', '.join(heads)})" if heads else "")
        )
    for key in ("name", "private_ip"):
        seen: set[str] = set()
        for node in nodes:
            if node[key] in seen:
                raise ContractError(f"outputs.nodes: {key} {node[key]!r} appears more than once")
            seen.add(node[key])
    keyed = [n["name"] for n in nodes if n.get("ssh_host_key")]
    if keyed and len(keyed) != len(nodes):
        bare = ", ".join(n["name"] for n in nodes if not n.get("ssh_host_key"))
        raise ContractError(
            f"outputs.nodes: {bare} carry no ssh_host_key while other nodes do: every node's host key is "
            "pinned or none is; export the key of every node"
        )
    return filled


def head(outputs: dict[str, Any]) -> dict[str, Any]:
    """The head node of validated outputs."""
    return next(n for n in outputs["nodes"] if n["role"] == "head")
