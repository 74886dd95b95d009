"""The Serve config serve.yml deploys (Serve's own declarative format, as ``serve deploy`` sends it).

One application per served zone at ``/zone<N>`` (its model in the deployment's ``user_config``), and
the ``index`` application at ``/``. Proxies listen on every node, on ``host`` (loopback by default: the
head's is reached through the SSH tunnel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayops.serving.model import ModelSource
from rayops.serving.service import Settings

INDEX_APP = "index"


def app_name(zone: int) -> str:
    return f"zone{zone}"


@dataclass(frozen=True)
class Replicas:
    count: int = 2
    max_per_node: int | None = 1  # spread over nodes; None lets Serve pack them
    num_cpus: float = 0.0  # no CPU reserved: training keeps every CPU
    memory_bytes: int | None = None
    max_ongoing_requests: int = 64

    def check(self) -> None:
        if self.count < 1:
            raise ValueError(f"serve_replicas must be at least 1, got {self.count}")
        if self.max_per_node is not None and self.max_per_node < 1:
            raise ValueError(
                f"serve_max_replicas_per_node must be at least 1 or null, got {self.max_per_node}"
            )
        if self.num_cpus < 0:
            raise ValueError(f"serve_replica_num_cpus cannot be negative, got {self.num_cpus}")


def serve_config(
    models: dict[int, ModelSource],
    token_sha256: str,
    replicas: Replicas,
    settings: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> dict[str, Any]:
    """The whole config: ``models`` maps each served zone to the model it serves."""
    replicas.check()
    actor: dict[str, Any] = {"num_cpus": replicas.num_cpus}
    if replicas.memory_bytes:
        actor["memory"] = replicas.memory_bytes
    applications: list[dict[str, Any]] = []
    for zone, source in sorted(models.items()):
        args = Settings.from_args({**(settings or {}), "zone": zone})
        deployment: dict[str, Any] = {
            "name": "ZoneModel",
            "num_replicas": replicas.count,
            "max_ongoing_requests": replicas.max_ongoing_requests,
            "ray_actor_options": actor,
            "user_config": {"model": source.to_dict(), "token_sha256": token_sha256},
        }
        if replicas.max_per_node is not None:
            deployment["max_replicas_per_node"] = replicas.max_per_node
        applications.append(
            {
                "name": app_name(zone),
                "route_prefix": f"/{app_name(zone)}",
                "import_path": "rayops.serving.deployment:zone_app",
                "args": args.__dict__ | {},
                "deployments": [deployment],
            }
        )
    applications.append(
        {
            "name": INDEX_APP,
            "route_prefix": "/",
            "import_path": "rayops.serving.deployment:index_app",
            "args": {"zones": sorted(models)},
        }
    )
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": applications,
    }
