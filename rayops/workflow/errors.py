"""Errors of the workflow: each carries one sentence that says what is wrong and how to fix it."""

from __future__ import annotations

from typing import Any


class WorkflowError(Exception):
    """A stage of the workflow failed; ``str(error)`` is the sentence shown to the user."""

    exit_code = 1


class DataError(WorkflowError):
    """The dataset is unreachable or does not have the expected shape, types or length."""

    exit_code = 2


class ConfigError(WorkflowError):
    """An option of the workflow is invalid (bucket map, target zone, thresholds, run id...)."""

    exit_code = 2


class NotPromotedError(WorkflowError):
    """The trained model did not beat the baseline or a threshold; the current model stays in place.

    Raised after every artifact of the run was written; ``metrics`` is the run's metrics object.
    """

    exit_code = 3

    def __init__(self, message: str, metrics: dict[str, Any]) -> None:
        super().__init__(message)
        self.metrics = metrics
