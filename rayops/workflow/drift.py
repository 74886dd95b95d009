"""The model's training distribution as quantile bins, and the population stability index (PSI) against it.

Training saves :func:`reference` in the model's metadata.json: for each monitored feature (the measured
inputs: the weather and every lag; the calendar columns are functions of the clock, so a live window of a
few days differs from a year by construction) and for the model's predictions, the interior decile edges
of the training rows and the share of those rows in each bin. The serving app bins its live inputs with the
same edges and compares the shares (:func:`psi`). Numpy only: one ``searchsorted`` and one ``bincount`` per
feature.

PSI = sum over bins of (live - expected) * ln(live / expected), shares floored at ``FLOOR`` so that an
empty bin counts as rare, not infinite. Usual reading: below 0.1 stable, 0.1-0.25 moderate, above 0.25 a
shift worth acting on (the monitoring role's ``monitoring_alert_drift_psi``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rayops.workflow.features import lag_columns
from rayops.workflow.ingest import WEATHER

BINS = 10
FLOOR = 1e-4
PREDICTION = "prediction"  # the predictions' entry in the reference (not a feature name)


def monitored_features() -> list[str]:
    """The inputs whose live distribution is compared with training's: the weather and every lag."""
    return [*WEATHER, *lag_columns()]


def bin_edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Interior quantile edges (ties merged: a column of few distinct values gets fewer bins)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0)
    # Quantiles that are values of the data (no interpolation), so a column of few values has few edges.
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf"))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of ``values`` in each of the ``len(edges) + 1`` bins (right-closed, as ``searchsorted``)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    total = counts.sum()
    return counts / total if total else counts.astype("float64")


def _entry(values: np.ndarray, bins: int) -> dict[str, list[float]]:
    values = np.asarray(values, dtype="float64")
    edges = bin_edges(values, bins)
    return {"edges": edges.tolist(), "expected": shares(values[np.isfinite(values)], edges).tolist()}


def reference(
    frame: Any, predictions: np.ndarray, columns: Sequence[str] | None = None, bins: int = BINS
) -> dict[str, Any]:
    """metadata.json's ``drift``: each monitored column's and the predictions' bins over the training rows."""
    names = list(columns) if columns is not None else monitored_features()
    return {
        "bins": bins,
        "rows": len(frame),
        "features": {name: _entry(frame[name].to_numpy(), bins) for name in names},
        PREDICTION: _entry(predictions, bins),
    }


def psi(actual: np.ndarray, expected: np.ndarray, floor: float = FLOOR) -> float:
    """Population stability index of two share vectors over the same bins."""
    a = np.maximum(np.asarray(actual, dtype="float64"), floor)
    e = np.maximum(np.asarray(expected, dtype="float64"), floor)
    return float(np.sum((a - e) * np.log(a / e)))


class Reference:
    """A reference loaded from metadata.json, checked, as arrays (what the serving app bins against)."""

    def __init__(self, data: dict[str, Any], features: Sequence[str]) -> None:
        entries = data.get("features")
        prediction = data.get(PREDICTION)
        if not isinstance(entries, dict) or not isinstance(prediction, dict):
            raise ValueError("the drift reference lacks its features or its prediction entry")
        unknown = sorted(set(entries) - set(features))
        if unknown:
            raise ValueError(f"the drift reference names {unknown[0]!r}, which is not a feature of the model")
        self.names = [name for name in features if name in entries]
        self.columns = np.array([list(features).index(name) for name in self.names], dtype="intp")
        self.edges = [self._edges(entries[name], name) for name in self.names]
        self.expected = [np.asarray(entries[name]["expected"], dtype="float64") for name in self.names]
        self.prediction_edges = self._edges(prediction, PREDICTION)
        self.prediction_expected = np.asarray(prediction["expected"], dtype="float64")

    @staticmethod
    def _edges(entry: dict[str, Any], name: str) -> np.ndarray:
        edges = np.asarray(entry.get("edges", []), dtype="float64")
        expected = entry.get("expected", [])
        if len(expected) != edges.size + 1 or not np.all(np.diff(edges) > 0):
            raise ValueError(f"the drift bins of {name!r}: {len(expected)} shares for {edges.size} edges")
        return edges

    def select(self, matrix: np.ndarray) -> np.ndarray:
        """The monitored columns of ``matrix`` (rows of the model's features), in ``names``' order."""
        return matrix[:, self.columns]

    def feature_psi(self, selected: np.ndarray) -> dict[str, float]:
        """PSI of each monitored column of ``selected`` (see :meth:`select`) against training."""
        return {
            name: psi(shares(selected[:, i], edges), expected)
            for i, (name, edges, expected) in enumerate(zip(self.names, self.edges, self.expected))
        }

    def prediction_psi(self, predictions: np.ndarray) -> float:
        return psi(shares(predictions, self.prediction_edges), self.prediction_expected)
