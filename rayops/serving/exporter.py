"""The replica's model-quality metrics, for Prometheus (through Ray's metrics export port on each node).

A daemon thread reads the served model's :class:`~rayops.serving.quality.QualityMonitor` every
``interval_s`` and sets Ray Serve metrics (Serve adds ``application``, ``deployment`` and ``replica``; Ray
prefixes ``ray_``), so the request path never calls into Ray's metrics:

* ``ray_rayops_predictions_total{zone, run_id}``: rows predicted for clients (/predict, /forecast);
* ``ray_rayops_predict_latency_ms_bucket{zone, run_id, le}``: the predict's latency (batching included);
* ``ray_rayops_feature_drift_psi{zone, run_id, feature}`` and ``ray_rayops_prediction_drift_psi{zone,
  run_id}``: PSI of the replica's last ``quality_window`` rows against the run's training distribution;
* ``ray_rayops_live_mae`` / ``ray_rayops_live_rmse{zone, run_id}``: over the replica's last actuals;
* ``ray_rayops_actuals_total``, ``ray_rayops_live_abs_error_total``, ``ray_rayops_live_squared_error_total``:
  so that PromQL can compute the error of every replica together over any range, exactly.

A run that stops being served has its gauges set to NaN (no value, so no alert), not left at their last one.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from rayops.serving.service import ModelService

log = logging.getLogger("rayops.serving")

LATENCY_BOUNDARIES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0]


class QualityExporter:
    def __init__(self, service: ModelService, interval_s: float = 5.0) -> None:
        from ray.serve import metrics

        keys: Any = ("zone", "run_id")  # Ray annotates tag_keys as a 1-tuple; any tuple of names works
        self.service = service
        self.interval_s = interval_s
        self.predictions = metrics.Counter(
            "rayops_predictions", "Rows the served model predicted for clients", tag_keys=keys
        )
        self.latency = metrics.Histogram(
            "rayops_predict_latency_ms",
            "Latency of the served model's predicts, batching included (ms)",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=keys,
        )
        self.feature_psi = metrics.Gauge(
            "rayops_feature_drift_psi",
            "PSI of the live inputs' last window against the run's training distribution",
            tag_keys=(*keys, "feature"),
        )
        self.prediction_psi = metrics.Gauge(
            "rayops_prediction_drift_psi",
            "PSI of the live predictions' last window against the predictions on the training rows",
            tag_keys=keys,
        )
        self.live_mae = metrics.Gauge(
            "rayops_live_mae", "Rolling MAE against the posted actuals", tag_keys=keys
        )
        self.live_rmse = metrics.Gauge(
            "rayops_live_rmse", "Rolling RMSE against the posted actuals", tag_keys=keys
        )
        self.actuals = metrics.Counter("rayops_actuals", "Actuals posted for the served model", tag_keys=keys)
        self.abs_error = metrics.Counter(
            "rayops_live_abs_error", "Sum of absolute errors on the posted actuals", tag_keys=keys
        )
        self.squared_error = metrics.Counter(
            "rayops_live_squared_error", "Sum of squared errors on the posted actuals", tag_keys=keys
        )
        self._sent: dict[str, float] = {}
        self._run: tuple[str, Any] | None = None  # (run id, its monitor) last exported
        self._features: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rayops-quality", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.export()
            except Exception:  # a metrics failure must never take the replica's requests with it
                log.exception("serving: the quality metrics export failed (it is retried)")

    def export(self) -> None:
        service = self.service
        model, monitor = service.model, service.quality
        if model is None or monitor is None:
            return
        zone = str(service.settings.zone)
        run_id = model.source.run_id
        if self._run is not None and self._run[1] is not monitor:
            self._retire(zone, self._run[0])
        if self._run is None or self._run[1] is not monitor:
            self._run, self._sent = (run_id, monitor), {}
        tags = {"zone": zone, "run_id": run_id}
        snap = monitor.snapshot()
        totals = snap["totals"]
        for name, counter in (
            ("predictions", self.predictions),
            ("actuals", self.actuals),
            ("abs_error", self.abs_error),
            ("squared_error", self.squared_error),
        ):
            delta = totals[name] - self._sent.get(name, 0)
            if delta > 0:
                counter.inc(delta, tags=tags)
                self._sent[name] = totals[name]
        for latency in monitor.drain_latencies():
            self.latency.observe(latency, tags=tags)
        drift = snap["drift"]
        if "feature_psi" in drift:
            self._features = sorted(drift["feature_psi"])
            for feature, value in drift["feature_psi"].items():
                self.feature_psi.set(value, tags={**tags, "feature": feature})
            self.prediction_psi.set(drift["prediction_psi"], tags=tags)
        live = snap["live_error"]
        if "mae" in live:
            self.live_mae.set(live["mae"], tags=tags)
            self.live_rmse.set(live["rmse"], tags=tags)

    def _retire(self, zone: str, run_id: str) -> None:
        tags = {"zone": zone, "run_id": run_id}
        for feature in self._features:
            self.feature_psi.set(math.nan, tags={**tags, "feature": feature})
        for gauge in (self.prediction_psi, self.live_mae, self.live_rmse):
            gauge.set(math.nan, tags=tags)
