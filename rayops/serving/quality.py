"""The served model's quality in live use: drift of its inputs and predictions, its error on posted actuals.

One :class:`QualityMonitor` per loaded model (a new model starts a new one). The request path only copies
rows into ring buffers (the last ``window`` predicted rows, the last ``window`` errors) and adds to totals;
the scores are computed when read (:meth:`QualityMonitor.snapshot`: ``GET /model`` and the replica's metrics
exporter, a few times a minute), so they cost the requests almost nothing (``make bench-serve`` measures it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayops.workflow.drift import Reference


class _Ring:
    """The last ``size`` rows of a 2-D stream (or values of a 1-D one, ``width`` None)."""

    def __init__(self, size: int, width: int | None) -> None:
        self.data = np.empty((size,) if width is None else (size, width), dtype="float64")
        self.size = size
        self.pos = 0
        self.filled = 0

    def add(self, rows: np.ndarray) -> None:
        n = len(rows)
        if n >= self.size:
            self.data[:] = rows[n - self.size :]
            self.pos, self.filled = 0, self.size
            return
        end = self.pos + n
        if end <= self.size:
            self.data[self.pos : end] = rows
        else:
            split = self.size - self.pos
            self.data[self.pos :] = rows[:split]
            self.data[: n - split] = rows[split:]
        self.pos = end % self.size
        self.filled = min(self.size, self.filled + n)

    def values(self) -> np.ndarray:
        return self.data[: self.filled] if self.filled < self.size else self.data


@dataclass
class Totals:
    """Counts and sums since the monitor started (what the exporter turns into counters)."""

    predictions: int = 0
    actuals: int = 0
    abs_error: float = 0.0
    squared_error: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # drained by the exporter


class QualityMonitor:
    """Drift and live error of one loaded model (``reference`` None: live error only)."""

    def __init__(self, reference: Reference | None, window: int, min_rows: int) -> None:
        self.reference = reference
        self.window = window
        self.min_rows = min_rows
        self._lock = threading.Lock()  # the exporter thread reads while the event loop writes
        width = len(reference.columns) if reference is not None else 0
        self._inputs = _Ring(window, width)
        self._predictions = _Ring(window, None)
        self._errors = _Ring(window, None)
        self.totals = Totals()

    def observe(self, matrix: np.ndarray, predictions: np.ndarray, latency_ms: float) -> None:
        """Rows the model predicted for a client (/predict, /forecast) and how long the predict took."""
        with self._lock:
            if self.reference is not None:
                self._inputs.add(self.reference.select(matrix))
            self._predictions.add(predictions)
            self.totals.predictions += len(predictions)
            if len(self.totals.latencies_ms) < 100_000:  # bounded even with no exporter draining it
                self.totals.latencies_ms.append(latency_ms)

    def observe_actuals(self, predictions: np.ndarray, actuals: np.ndarray) -> dict[str, Any]:
        """Observed values for predicted rows: this call's MAE and RMSE; the errors join the window."""
        errors = np.asarray(predictions, dtype="float64") - np.asarray(actuals, dtype="float64")
        with self._lock:
            self._errors.add(errors)
            self.totals.actuals += len(errors)
            self.totals.abs_error += float(np.abs(errors).sum())
            self.totals.squared_error += float(np.square(errors).sum())
        return {
            "count": len(errors),
            "mae": float(np.mean(np.abs(errors))),
            "rmse": float(np.sqrt(np.mean(np.square(errors)))),
        }

    def drain_latencies(self) -> list[float]:
        with self._lock:
            out, self.totals.latencies_ms = self.totals.latencies_ms, []
        return out

    def snapshot(self) -> dict[str, Any]:
        """The scores now: drift (once ``min_rows`` rows are in the window), rolling error, totals."""
        with self._lock:
            inputs = self._inputs.values().copy()
            predictions = self._predictions.values().copy()
            errors = self._errors.values().copy()
            totals = {
                "predictions": self.totals.predictions,
                "actuals": self.totals.actuals,
                "abs_error": self.totals.abs_error,
                "squared_error": self.totals.squared_error,
            }
        rows = len(predictions)
        drift: dict[str, Any] = {"rows": rows, "window": self.window, "min_rows": self.min_rows}
        if self.reference is None:
            drift["state"] = "no reference"
        elif rows < self.min_rows:
            drift["state"] = f"waiting for {self.min_rows} rows"
        else:
            drift["state"] = "scored"
            drift["feature_psi"] = self.reference.feature_psi(inputs)
            drift["prediction_psi"] = self.reference.prediction_psi(predictions)
        live: dict[str, Any] = {"count": len(errors), "window": self.window}
        if len(errors):
            live["mae"] = float(np.mean(np.abs(errors)))
            live["rmse"] = float(np.sqrt(np.mean(np.square(errors))))
        return {"drift": drift, "live_error": live, "totals": totals}
