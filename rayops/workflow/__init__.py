"""The rayops ML workflow as a plain Python package: ingest -> features -> train -> evaluate -> artifacts.

Runs on a laptop (a local Ray) and, unchanged, as a Ray Job on the cluster's head:
``python -m rayops.workflow run --buckets '{...}' [--dataset ...]``. See ``cli.py`` for the options
and ``pipeline.py`` for the stages.
"""

from rayops.workflow.config import Buckets, Thresholds, WorkflowConfig, XGBoostParams
from rayops.workflow.errors import ConfigError, DataError, NotPromotedError, WorkflowError

__all__ = [
    "Buckets",
    "ConfigError",
    "DataError",
    "NotPromotedError",
    "Thresholds",
    "WorkflowConfig",
    "WorkflowError",
    "XGBoostParams",
]
