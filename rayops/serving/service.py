"""One zone's model behind the API: loading (in place, the old model serving meanwhile) and batched predicts.

Plain asyncio, so the same object runs in a Ray Serve replica (``deployment.py``), under plain
uvicorn (the benchmark's peer) and in the unit tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from rayops.serving.model import ModelError, ModelSource, ServedModel
from rayops.serving.model import load as load_model
from rayops.serving.quality import QualityMonitor
from rayops.workflow.s3 import S3Store

log = logging.getLogger("rayops.serving")


@dataclass(frozen=True)
class Settings:
    """What serve.yml passes as the application's arguments (a change of these redeploys the replicas)."""

    zone: int
    max_rows: int = 1000  # rows per predict call
    max_readings: int = 4032  # raw readings per forecast call (four weeks of 10-minute rows)
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_size: int = 32  # concurrent calls that share one predict
    batch_wait_timeout_s: float = 0.002
    quality_window: int = 1000  # the last rows (and actuals) the drift scores and the rolling error cover
    drift_min_rows: int = 200  # rows in the window before drift is scored (fewer: too noisy to mean much)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Settings:
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(args) - names)
        if unknown:
            raise ValueError(f"unknown serving settings {', '.join(unknown)}: use {', '.join(sorted(names))}")
        settings = cls(**args)
        for name in ("max_rows", "max_readings", "max_body_bytes", "max_batch_size", "quality_window"):
            if int(getattr(settings, name)) < 1:
                raise ValueError(f"serving setting {name} must be at least 1, got {getattr(settings, name)}")
        if not 1 <= settings.drift_min_rows <= settings.quality_window:
            raise ValueError(
                "serving setting drift_min_rows must be between 1 and quality_window "
                f"({settings.quality_window}), got {settings.drift_min_rows}"
            )
        return settings


def token_digest(token: str) -> str:
    """What the replicas hold instead of the token: its SHA-256 (the token is 256 random bits)."""
    return hashlib.sha256(token.encode()).hexdigest()


class ModelService:
    """The loaded model of one zone, the token check and the batched predict."""

    def __init__(
        self, settings: Settings, store_factory: Callable[[], S3Store] = S3Store, batched: bool = False
    ) -> None:
        """``batched``: concurrent predicts share one (``@serve.batch``, which needs a Serve replica)."""
        self.settings = settings
        self.model: ServedModel | None = None
        self.quality: QualityMonitor | None = None  # the served model's (a new model starts a new one)
        self.last_error: str | None = None
        self._token_sha256: str | None = None
        self._store_factory = store_factory
        self._lock = asyncio.Lock()
        self._batched = batched
        self.calls = 0  # predict calls, and the predicts that served them (calls / batches: the batch size)
        self.batches = 0
        if batched:
            batch: Any = self._predict_batch  # the @serve.batch wrapper (its setters are not in its type)
            batch.set_max_batch_size(settings.max_batch_size)
            batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    # --------------------------------------------------------------------- configuration
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the model ``user_config`` names; a load that fails keeps the model already served."""
        digest = user_config.get("token_sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError("user_config lacks token_sha256: deploy with serve.yml, which sets it")
        self._token_sha256 = digest
        async with self._lock:
            try:
                source = ModelSource.from_dict(dict(user_config.get("model") or {}))
                if source.zone != self.settings.zone:
                    raise ModelError(
                        f"the model source is for zone {source.zone}, this app serves {self.settings.zone}"
                    )
                if self.model is not None and self.model.source == source:
                    self.last_error = None
                    return
                # The old model answers while the new one downloads and loads (off the event loop).
                model = await asyncio.to_thread(load_model, self._store_factory(), source)
            except ModelError as err:
                self.last_error = str(err)
                log.error("serving: %s", err)
                if self.model is None:
                    raise
                log.error("serving: still serving run %s", self.model.source.run_id)
                return
            self.quality = self._monitor(model)
            self.model = model
            self.last_error = None
            log.info("serving: zone %s now serves run %s", source.zone, source.run_id)

    def _monitor(self, model: ServedModel) -> QualityMonitor:
        return QualityMonitor(model.drift, self.settings.quality_window, self.settings.drift_min_rows)

    def monitor_of(self, model: ServedModel) -> QualityMonitor | None:
        """The quality monitor of ``model`` while it is the one served (a replaced model's is gone)."""
        return self.quality if model is self.model else None

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError(
                f"zone {self.settings.zone} has no model loaded: {self.last_error or 'not configured'}"
            )

    def token_ok(self, presented: str) -> bool:
        if self._token_sha256 is None:
            return False
        return hmac.compare_digest(token_digest(presented), self._token_sha256)

    # ---------------------------------------------------------------------------- predict
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _predict_batch(self, matrices: list[np.ndarray]) -> list[tuple[np.ndarray, ServedModel]]:
        """Concurrent calls' rows in one predict, split back; each answer names the model that made it."""
        model = self.model
        assert model is not None
        self.batches += 1
        sizes = [len(m) for m in matrices]
        stacked = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
        out = model.predict(stacked)
        return [(part, model) for part in np.split(out, np.cumsum(sizes)[:-1])]

    async def _predict(self, matrix: np.ndarray) -> tuple[np.ndarray, ServedModel]:
        if self.model is None:
            raise ModelError(f"zone {self.settings.zone} has no model loaded yet: retry in a few seconds")
        self.calls += 1
        if not self._batched:
            self.batches += 1
            model = self.model
            return model.predict(matrix), model
        result: tuple[np.ndarray, ServedModel] = await self._predict_batch(matrix)
        return result

    async def predict(self, matrix: np.ndarray) -> tuple[np.ndarray, ServedModel]:
        """Predictions for the rows of ``matrix`` (the features in order) and the model that made them."""
        start = time.perf_counter()
        predictions, model = await self._predict(matrix)
        monitor = self.monitor_of(model)
        if monitor is not None:
            monitor.observe(matrix, predictions, (time.perf_counter() - start) * 1000.0)
        return predictions, model

    async def actuals(
        self, matrix: np.ndarray, observed: np.ndarray
    ) -> tuple[dict[str, Any], dict[str, Any], ServedModel]:
        """Observed values for rows of past hours: the served model's error on them (this call, rolling)."""
        predictions, model = await self._predict(matrix)
        monitor = self.monitor_of(model)
        if monitor is None:  # the model changed during the call: its errors belong to no served model
            raise ModelError(f"zone {self.settings.zone} changed its model during this call: post it again")
        call = monitor.observe_actuals(predictions, observed)
        return call, monitor.snapshot()["live_error"], model
