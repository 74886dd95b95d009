"""What keeps a run's objects and the promoted model safe: the run id claim, the live model, the pointer.

* A run id is claimed once: ``runs/<run id>/run.json`` in the results bucket is written with
  ``IfNoneMatch: *`` after the data is validated and before anything else of the run is written, so a
  second run with the same id (a reused ``--run-id``) is refused and the first run's objects stay as they
  are. Every later object of the run is written the same way. The one exception is the same submission
  again: train.yml resubmits a job whose driver was lost with the head with the same ``--claim-token``;
  that run continues its claim (unless its metrics.json exists: it finished) and replaces what the lost
  attempt wrote with new versions (versioned buckets: the old ones stay).
* The live model is read once, at the start of the run, with the pointer's ETag (:func:`read_live`).
  The new model must be no worse than it on this run's holdout (``--live-tolerance``); the first model
  of a zone has nothing to beat.
* Promotion (:func:`promote`) runs after metrics.json: the pointer is written with ``IfMatch`` on the
  ETag read at the start (``IfNoneMatch: *`` when there was no pointer), so of two runs that read the
  same pointer exactly one replaces it; the other is told which run got there first.
* The versions the new pointer pins (model, metadata, features manifest, raw data) are tagged
  ``rayops-pinned=true``: the buckets' noncurrent-expiry rule matches only ``rayops-pinned=false``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rayops.workflow import artifacts
from rayops.workflow.config import WorkflowConfig
from rayops.workflow.errors import ConfigError
from rayops.workflow.s3 import PreconditionFailed, S3Store, split_s3_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Live:
    """The pointer as the run read it at its start (None and None: the zone has no model yet)."""

    uri: str
    pointer: dict[str, Any] | None
    etag: str | None

    @property
    def run_id(self) -> str | None:
        return None if self.pointer is None else str(self.pointer.get("run_id"))


def read_live(store: S3Store, layout: artifacts.Layout) -> Live:
    """Read ``<zone>/current.json`` and its ETag (the condition of this run's promotion)."""
    uri = f"s3://{layout.buckets.models}/{layout.current_key}"
    found = store.get_json_etag(layout.buckets.models, layout.current_key)
    if found is None:
        log.info("promotion: %s does not exist yet, the first model has nothing to beat", uri)
        return Live(uri, None, None)
    pointer, etag = found
    log.info("promotion: the live model is run %s (%s)", pointer.get("run_id"), uri)
    return Live(uri, pointer, etag)


def claim_run(store: S3Store, config: WorkflowConfig, layout: artifacts.Layout) -> bool:
    """Write ``runs/<run id>/run.json`` only if it does not exist; refuse a run id that does, unless this
    is the same submission again (``--claim-token``, recorded as its SHA-256): a job resubmitted after its
    driver was lost with the head. Returns whether the run was resumed that way."""
    digest = hashlib.sha256(config.claim_token.encode()).hexdigest() if config.claim_token else None
    record = {
        "run_id": config.run_id,
        "target": f"zone{config.target_zone}",
        "claimed_at": artifacts.now_utc(),
        **({"claim_sha256": digest} if digest else {}),
    }
    try:
        store.put_json(layout.buckets.results, layout.claim_key, record, if_none_match=True)
        return False
    except PreconditionFailed as err:
        claim = f"s3://{layout.buckets.results}/{layout.claim_key}"
        held = store.get_json(layout.buckets.results, layout.claim_key) or {}
        if digest is None or held.get("claim_sha256") != digest:
            raise ConfigError(
                f"the run id {config.run_id!r} is taken ({claim} exists), so nothing of that run was "
                "touched: pass a new --run-id (train_run_id) or leave it out for a fresh one"
            ) from err
        if store.head(layout.buckets.results, layout.metrics_key) is not None:
            raise ConfigError(
                f"run {config.run_id} already finished (s3://{layout.buckets.results}/{layout.metrics_key} "
                "exists): nothing to resume; train again with a new train_run_id"
            ) from err
    log.info(
        "ingest: run %s continues its own claim (%s, same claim token): a resubmission after its driver "
        "was lost; what it wrote is replaced by new versions and Ray Train resumes from its last checkpoint",
        config.run_id,
        claim,
    )
    return True


def score_live(
    store: S3Store, live: Live, test: pd.DataFrame, target: str
) -> tuple[dict[str, float] | None, str | None]:
    """The live model's holdout metrics on this run's holdout, or (None, why it cannot be scored)."""
    import xgboost

    from rayops.workflow import evaluate, training

    if live.pointer is None:
        return None, None
    features = list(live.pointer.get("features") or [])
    missing = [name for name in features if name not in test.columns]
    if not features or missing:
        return None, (
            f"the live model (run {live.run_id}) needs features this run's table lacks "
            f"({', '.join(missing[:5]) or 'none listed'})"
        )
    bucket, key = split_s3_uri(str(live.pointer["model_uri"]))
    booster = xgboost.Booster()
    booster.load_model(bytearray(store.get_bytes(bucket, key, live.pointer.get("model_version_id"))))
    predicted = training.predict_xgboost(booster, test, features)
    return evaluate.regression_metrics(np.asarray(test[target].to_numpy()), predicted), None


def promote(
    store: S3Store,
    layout: artifacts.Layout,
    live: Live,
    pointer: dict[str, Any],
    pins: list[tuple[str, str, str | None]],
) -> str | None:
    """Pin what the new pointer names, then replace the pointer only if it is still the one read at the
    start of the run.

    Returns None on success, else the sentence saying why this run did not replace the pointer. The
    versions are pinned first, so a live pointer never names an unpinned version (a run that then
    loses the race leaves its own versions pinned: kept, never expired, nothing lost)."""
    for pin_bucket, pin_key, version in pins:
        store.pin(pin_bucket, pin_key, version)
    bucket, key = layout.buckets.models, layout.current_key
    try:
        if live.etag is None:
            store.put_json(bucket, key, pointer, if_none_match=True)
        else:
            store.put_json(bucket, key, pointer, if_match=live.etag)
    except PreconditionFailed:
        now = store.get_json_etag(bucket, key)
        winner = None if now is None else now[0].get("run_id")
        before = f"run {live.run_id}" if live.pointer is not None else "no model"
        return (
            f"run {winner} promoted its model to {live.uri} while this run was training (this run had read "
            f"{before} there), so this run's model was compared with a model that is no longer live: "
            "train again to compare it with the live one"
        )
    return None
