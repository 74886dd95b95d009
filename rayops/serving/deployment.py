"""The Ray Serve side: one application per zone (a FastAPI ingress deployment) and the index at ``/``.

serve.yml deploys them declaratively (Serve's config file format, ``config.py``); the replicas import
this module from the node venv's path (no runtime_env, no downloads). The model is the deployment's
``user_config``, loaded in ``reconfigure``: a new promoted model reaches the running replicas
without new ones, and the old model answers until the new one is loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from rayops.serving.app import build_app
from rayops.serving.exporter import QualityExporter
from rayops.serving.service import ModelService, Settings


@serve.deployment(name="ZoneModel", health_check_period_s=5, health_check_timeout_s=10)
@serve.ingress()
class ZoneModel:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.service = ModelService(Settings.from_args(settings), batched=True)
        self.exporter = QualityExporter(self.service)
        self.exporter.start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_app(self.service)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        await self.service.reconfigure(user_config)

    def check_health(self) -> None:
        self.service.check_health()

    def stats(self) -> dict[str, int]:
        """Predict calls and the (batched) predicts that answered them, since the replica started."""
        return {"calls": self.service.calls, "batches": self.service.batches}

    async def predict(self, rows: list[list[float]]) -> dict[str, Any]:
        """For deployment handles (other deployments, tests): rows of the features in /model's order."""
        predictions, model = await self.service.predict(np.asarray(rows, dtype="float64"))
        return {"predictions": predictions.tolist(), "run_id": model.source.run_id}


def zone_app(args: dict[str, Any]) -> Any:
    """Application builder (``import_path: rayops.serving.deployment:zone_app``); ``args`` are Settings."""
    return ZoneModel.bind(dict(args))  # type: ignore[attr-defined]  # @serve.deployment makes it a Deployment


def index_api(zones: list[int]) -> FastAPI:
    """``/``: which zones are served, and a JSON 404 naming them for any other path (an unserved zone)."""
    api = FastAPI(title="rayops: served zones", docs_url=None, redoc_url=None, openapi_url=None)
    served = ", ".join(f"/zone{z}" for z in zones) or "none"

    @api.get("/")
    async def index() -> dict[str, Any]:
        return {"zones": [{"zone": z, "prefix": f"/zone{z}"} for z in zones]}

    @api.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def other(path: str, request: Request) -> JSONResponse:
        head = path.split("/", 1)[0]
        if head.startswith("zone"):
            sentence = (
                f"{head} is not served here: the served zones are {served} (serve.yml -e serve_zones=[...])"
            )
        else:
            sentence = (
                f"/{path} is not a route: the served zones are {served} (each: /predict, /forecast, /model)"
            )
        return JSONResponse({"error": sentence}, status_code=404)

    return api


@serve.deployment(name="Index", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Index:
    def __init__(self, zones: list[int]) -> None:
        self.zones = sorted(int(z) for z in zones)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return index_api(self.zones)


def index_app(args: dict[str, Any]) -> Any:
    """Application builder for ``/`` (``import_path: rayops.serving.deployment:index_app``)."""
    return Index.bind(list(args.get("zones", [])))  # type: ignore[attr-defined]  # a Deployment
