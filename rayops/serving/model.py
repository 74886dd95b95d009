"""Which model a zone serves, and loading it: the promoted pointer (or a pinned run) -> a booster.

The pointer is the models bucket's ``zone<N>/current.json``, written by the training workflow on
promotion only (``rayops.workflow.artifacts``). ``resolve`` turns it (or a pinned older run, for a
rollback) into a :class:`ModelSource` that names every object by its S3 version id; that source is
the Serve deployment's ``user_config``, so the replicas load exactly what serve.yml checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from rayops.workflow import artifacts
from rayops.workflow.drift import Reference
from rayops.workflow.errors import WorkflowError
from rayops.workflow.features import feature_columns
from rayops.workflow.s3 import S3Store, describe_s3_error, split_s3_uri

ZONES = (1, 2, 3)


class ModelError(WorkflowError):
    """A model that cannot be served; the message is one sentence saying why and what to do."""


@dataclass(frozen=True)
class ModelSource:
    """The objects of one promoted run, pinned by version id (the deployment's user_config)."""

    zone: int
    run_id: str
    model_uri: str
    model_version_id: str | None
    metadata_uri: str
    metadata_version_id: str | None
    promoted_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(names - {"promoted_at"} - set(data))
        if missing:
            raise ModelError(f"the model source lacks {', '.join(missing)}: deploy it with serve.yml")
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ServedModel:
    """A loaded booster and what it is: the answer of GET /model."""

    source: ModelSource
    booster: Any  # xgboost.Booster
    features: tuple[str, ...]
    data_version: str
    metrics: dict[str, Any]
    trained_at: str | None
    drift: Reference | None = None  # the training distribution (None: a model trained before rayops saved it)
    drift_problem: str | None = None
    loaded_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Rows of ``features`` (in that order) -> predictions, as the workflow's evaluation computes them."""
        import xgboost

        out = self.booster.predict(xgboost.DMatrix(matrix, feature_names=list(self.features)))
        return np.asarray(out, dtype="float64")

    def describe(self) -> dict[str, Any]:
        return {
            "zone": self.source.zone,
            "run_id": self.source.run_id,
            "data_version": self.data_version,
            "features": list(self.features),
            "metrics": self.metrics,
            "model_uri": self.source.model_uri,
            "model_version_id": self.source.model_version_id,
            "trained_at": self.trained_at,
            "promoted_at": self.source.promoted_at,
            "loaded_at": self.loaded_at,
            "drift_reference": (
                {"features": self.drift.names, "prediction": True} if self.drift is not None else None
            ),
            "drift_problem": self.drift_problem,
        }


def get_object(store: S3Store, uri: str, version_id: str | None = None) -> tuple[bytes, str | None]:
    bucket, key = split_s3_uri(uri)
    args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    try:
        obj = store.client.get_object(**args)
    except Exception as err:  # botocore's ClientError/BotoCoreError: one sentence either way
        raise ModelError(f"cannot read {uri} ({describe_s3_error(err)})") from err
    return obj["Body"].read(), obj.get("VersionId")


def _get_or(store: S3Store, uri: str, missing: str) -> tuple[bytes, str | None]:
    """``get_object``, with ``missing`` as the sentence when the object does not exist."""
    try:
        return get_object(store, uri)
    except ModelError as err:
        cause = err.__cause__
        code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause is not None else None
        if code in ("NoSuchKey", "404", "NoSuchVersion"):
            raise ModelError(missing) from err
        raise


def resolve(store: S3Store, models_bucket: str, zone: int, run_id: str | None = None) -> ModelSource:
    """The promoted model of ``zone`` (``current.json``), or the pinned ``run_id`` (a promoted run)."""
    if zone not in ZONES:
        raise ModelError(f"zone {zone} does not exist: serve zone 1, 2 or 3")
    prefix = f"zone{zone}"
    if run_id is None:
        uri = f"s3://{models_bucket}/{artifacts.current_key(prefix)}"
        body, _ = _get_or(
            store,
            uri,
            f"zone {zone} has no promoted model ({uri} does not exist): run train.yml first "
            f"(-e target_zone={zone})",
        )
        pointer = json.loads(body)
        _, metadata_version = get_object(store, pointer["metadata_uri"])
        return ModelSource(
            zone=zone,
            run_id=pointer["run_id"],
            model_uri=pointer["model_uri"],
            model_version_id=pointer.get("model_version_id"),
            metadata_uri=pointer["metadata_uri"],
            metadata_version_id=metadata_version,
            promoted_at=pointer.get("promoted_at"),
        )
    metadata_uri = f"s3://{models_bucket}/{artifacts.metadata_key(prefix, run_id)}"
    body, version = _get_or(
        store,
        metadata_uri,
        f"zone {zone} has no run {run_id!r} ({metadata_uri} does not exist): pass the id of "
        "a run train.yml promoted (see .rayops/runs/ or the results bucket)",
    )
    metadata = json.loads(body)
    if not metadata.get("promoted"):
        raise ModelError(
            f"run {run_id!r} of zone {zone} was not promoted (it did not pass evaluation): "
            "serve a promoted run"
        )
    return ModelSource(
        zone=zone,
        run_id=run_id,
        model_uri=metadata["model_uri"],
        model_version_id=metadata.get("model_version_id"),
        metadata_uri=metadata_uri,
        metadata_version_id=version,
        promoted_at=None,
    )


def load(store: S3Store, source: ModelSource) -> ServedModel:
    """Read the run's metadata and model (by version id) and check they fit together and predict."""
    import xgboost

    metadata = json.loads(get_object(store, source.metadata_uri, source.metadata_version_id)[0])
    if metadata.get("run_id") != source.run_id:
        raise ModelError(
            f"{source.metadata_uri} belongs to run {metadata.get('run_id')!r}, not {source.run_id!r}: "
            "deploy again with serve.yml"
        )
    features = tuple(metadata.get("features") or ())
    if features != tuple(feature_columns()):
        raise ModelError(
            f"run {source.run_id!r} was trained on {len(features)} features that this serving code does not "
            f"build ({len(feature_columns())} expected): retrain with this version of rayops"
        )
    raw, _ = get_object(store, source.model_uri, source.model_version_id)
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(raw))
    except xgboost.core.XGBoostError as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise ModelError(
            f"{source.model_uri} is not an XGBoost model ({reason}): retrain with train.yml"
        ) from err
    # Predicts here are small (a row, a batch of requests): one thread, no OpenMP team to wake per call.
    booster.set_param({"nthread": 1})
    if booster.num_features() != len(features):
        raise ModelError(
            f"{source.model_uri} takes {booster.num_features()} features but its metadata lists "
            f"{len(features)}: "
            "retrain with train.yml"
        )
    drift, drift_problem = _drift_reference(metadata, features, source)
    model = ServedModel(
        source=source,
        booster=booster,
        features=features,
        data_version=str(metadata.get("data", {}).get("data_version", "")),
        metrics=metadata.get("metrics", {}).get("holdout", {}),
        trained_at=metadata.get("created_at"),
        drift=drift,
        drift_problem=drift_problem,
    )
    probe = model.predict(np.zeros((1, len(features))))
    if probe.shape != (1,) or not np.isfinite(probe).all():
        raise ModelError(f"{source.model_uri} does not predict a finite number: retrain with train.yml")
    return model


def _drift_reference(
    metadata: dict[str, Any], features: tuple[str, ...], source: ModelSource
) -> tuple[Reference | None, str | None]:
    """The run's training distribution; a model without one is served, unscored (/model says so)."""
    data = metadata.get("drift")
    if data is None:
        return None, (
            f"run {source.run_id!r} has no drift reference in its metadata (an older rayops trained it): "
            "no drift scores until a model trained with this version is promoted"
        )
    try:
        return Reference(data, features), None
    except (ValueError, TypeError, KeyError) as err:
        return None, f"run {source.run_id!r}'s drift reference is not usable ({err}): no drift scores"
