"""What the serving tests share (imported by name: `conftest` is ambiguous across folders)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rayops.ansible_env import REPO
from rayops.serving.model import resolve
from rayops.serving.service import token_digest
from rayops.workflow import artifacts
from rayops.workflow.features import feature_columns
from rayops.workflow.s3 import S3Store

DATASET = REPO.parent / "shared" / "data" / "powerconsumption.csv"
MODELS = "t-models-serving"
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

TOKEN = "f" * 64
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def user_config(run_id: str | None = None) -> dict[str, Any]:
    """The deployment's user_config serve.yml would give for zone 1's pointer (or a pinned run)."""
    source = resolve(S3Store(), MODELS, 1, run_id)
    return {"model": source.to_dict(), "token_sha256": token_digest(TOKEN)}


@dataclass(frozen=True)
class Trained:
    raw: pd.DataFrame  # the dataset's 10-minute rows (canonical columns)
    holdout: pd.DataFrame  # the feature rows of the holdout weeks
    train: pd.DataFrame  # the feature rows the models were trained on
    booster: Any
    offline: np.ndarray  # the workflow's own predict_xgboost on the holdout rows
    run_ids: tuple[str, ...]


def put_run(
    s3: Any,
    run_id: str,
    booster: Any,
    promoted: bool = True,
    model_bytes: bytes | None = None,
    drift: dict[str, Any] | None = None,
) -> None:
    """A run's model and metadata where train.yml writes them; current.json moved if promoted."""
    prefix = "zone1"
    model_key = f"{prefix}/runs/{run_id}/model.ubj"
    body = model_bytes if model_bytes is not None else bytes(booster.save_raw("ubj"))
    version = s3.put_object(Bucket=MODELS, Key=model_key, Body=body)["VersionId"]
    metadata = {
        "run_id": run_id,
        "created_at": "2026-12-01T00:00:00Z",
        "model_uri": f"s3://{MODELS}/{model_key}",
        "model_version_id": version,
        "features": feature_columns(),
        "data": {"data_version": f"data-of-{run_id}"},
        "metrics": {"holdout": {"xgboost": {"rmse": 1.0}}},
        "promoted": promoted,
    }
    if drift is not None:  # the training distribution, as the workflow saves it (rayops.workflow.drift)
        metadata["drift"] = drift
    key = artifacts.metadata_key(prefix, run_id)
    s3.put_object(Bucket=MODELS, Key=key, Body=json.dumps(metadata).encode())
    if promoted:
        pointer = {
            "run_id": run_id,
            "promoted_at": "2026-12-01T00:00:01Z",
            "model_uri": metadata["model_uri"],
            "model_version_id": version,
            "metadata_uri": f"s3://{MODELS}/{key}",
            "features": feature_columns(),
            "data_version": metadata["data"]["data_version"],
        }
        s3.put_object(Bucket=MODELS, Key=artifacts.current_key(prefix), Body=json.dumps(pointer).encode())
