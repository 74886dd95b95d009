"""The whole workflow, stage by stage: ingest -> features -> train -> evaluate -> artifacts.

``run(config)`` reads as those five stages; each is one function below, and every object they
write (keys, manifest, metrics, metadata, the ``current.json`` pointer) is built in ``artifacts.py``.
A stage that needs the cluster (Ray Data features, a Ray Train worker group) connects through the
``connect`` callback first (the CLI connects to the job's cluster or starts a local Ray).
``run`` returns the metrics object written to ``runs/<run id>/metrics.json`` in the results bucket,
or raises NotPromotedError (carrying that object) after writing every artifact except the
``current.json`` pointer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost
from sklearn.pipeline import Pipeline

from rayops.workflow import artifacts, evaluate, features, ingest, tracking, training
from rayops.workflow.config import WorkflowConfig
from rayops.workflow.errors import NotPromotedError, WorkflowError
from rayops.workflow.s3 import PutResult, S3Store

log = logging.getLogger(__name__)

STAGES = ("ingest", "features", "train", "evaluate", "artifacts")


class _Stages:
    """Logs ``stage i/5 name: started`` and ``... done in S s`` (or ``failed after S s``) and keeps
    each stage's seconds for metrics.json."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        number = f"{STAGES.index(name) + 1}/{len(STAGES)}"
        log.info("stage %s %s: started", number, name)
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.timings[name] = round(time.perf_counter() - started, 3)
            log.info("stage %s %s: failed after %.1f s", number, name, time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        self.timings[name] = round(seconds, 3)
        log.info("stage %s %s: done in %.1f s", number, name, seconds)

    def total(self) -> None:
        self.timings["total"] = round(time.perf_counter() - self.started, 3)


class _Cluster:
    """Calls ``connect`` at most once, when the first stage asks for the cluster."""

    def __init__(self, connect: Callable[[], None] | None) -> None:
        self._connect = connect
        self.used = False

    def __call__(self) -> None:
        if not self.used and self._connect is not None:
            self._connect()
        self.used = True


@dataclass(frozen=True)
class Features:
    fset: features.FeatureSet
    manifest: dict[str, Any]
    manifest_put: PutResult


@dataclass(frozen=True)
class Trained:
    splits: artifacts.Splits
    xgboost: dict[str, xgboost.Booster]  # protocol -> booster
    baseline: dict[str, Pipeline]
    plan: training.WorkerPlan


@dataclass(frozen=True)
class Evaluation:
    scores: dict[str, dict[str, dict[str, float]]]  # protocol -> model -> metrics
    decision: evaluate.Decision
    holdout_predictions: dict[str, np.ndarray]  # model -> predictions on the holdout (for the plots)


def run(
    config: WorkflowConfig, store: S3Store | None = None, connect: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run every stage; see the module docstring.

    ``connect`` (e.g. ``ray.init``) is called at most once, and only when a stage needs the cluster
    (Ray Data features, a Ray Train worker group): bad input fails in seconds without starting a
    local Ray, and a small table (pandas features, one training process) never waits for one.
    """
    store = store or S3Store(config.s3_endpoint_url)
    layout = artifacts.Layout.of(config)
    cluster = _Cluster(connect)
    stages = _Stages()
    log.info(
        "run %s: dataset %s, target zone %d, buckets %s",
        config.run_id,
        ingest.redact(config.dataset),
        config.target_zone,
        config.buckets.to_dict(),
    )
    with stages.stage("ingest"):
        table, ingested = ingest_stage(config, store)
    with stages.stage("features"):
        feats = features_stage(config, store, layout, table, ingested, cluster)
    with stages.stage("train"):
        trained = train_stage(config, store, layout, feats.fset.frame, cluster, stages.timings)
    with stages.stage("evaluate"):
        evaluation = evaluate_stage(config, trained)
    with stages.stage("artifacts"):
        metrics = artifacts_stage(config, store, layout, ingested, feats, trained, evaluation, stages.timings)
    # The run's record, written last (after the promotion pointer), with every stage's time.
    stages.total()
    store.put_json(layout.buckets.results, layout.metrics_key, metrics)
    log.info("artifacts: metrics %s, report %s", metrics["metrics_uri"], metrics["report_uri"])
    if not evaluation.decision.promoted:
        raise NotPromotedError(
            f"the model of run {config.run_id} was not promoted ({evaluation.decision.sentence()}); "
            f"{metrics['current_uri']} still names the previous model",
            metrics,
        )
    return metrics


# 1. ingest: validate first, upload only good data ----------------------------------------------
def ingest_stage(config: WorkflowConfig, store: S3Store) -> tuple[ingest.RawTable, ingest.IngestResult]:
    fetched = ingest.fetch(config.dataset, store, timeout=config.fetch_timeout_s)
    table = ingest.parse(fetched, config.target_zone)
    hours = ingest.check_history(table, config.holdout_hours)
    log.info(
        "ingest: %s rows (%s column names), %d hours from %s to %s",
        f"{table.rows:,}",
        table.style,
        hours,
        table.frame["datetime"].min(),
        table.frame["datetime"].max(),
    )
    return table, ingest.upload_raw(store, config.buckets.raw, fetched, table)


# 2. features: pandas on the driver (small tables) or Ray Data -----------------------------------
def features_stage(
    config: WorkflowConfig,
    store: S3Store,
    layout: artifacts.Layout,
    table: ingest.RawTable,
    ingested: ingest.IngestResult,
    cluster: _Cluster,
) -> Features:
    fset = features.build_features(
        table.frame, config.target_zone, executor=config.features_executor, before_cluster=cluster
    )
    try:
        parquet_uri = artifacts.write_features(fset, layout, store.filesystem(layout.buckets.features))
    except Exception as err:
        raise WorkflowError(
            f"cannot write the features to s3://{layout.features_data} ({type(err).__name__}): "
            "check the features bucket, --s3-endpoint-url and the nodes' S3 credentials"
        ) from err
    manifest = artifacts.features_manifest(config, ingested, fset, parquet_uri)
    manifest_put = store.put_json(layout.buckets.features, layout.manifest_key, manifest)
    store.put_json(layout.buckets.features, layout.latest_manifest_key, manifest)
    log.info(
        "features: %d hourly rows (%d dropped: lag history or incomplete hours), %d features -> %s",
        fset.rows,
        fset.hours - fset.rows,
        len(manifest["features"]),
        manifest_put.uri,
    )
    return Features(fset, manifest, manifest_put)


# 3. train: XGBoost (one process or a Ray Train worker group) + linear baseline, both protocols ---
def train_stage(
    config: WorkflowConfig,
    store: S3Store,
    layout: artifacts.Layout,
    frame: Any,
    cluster: _Cluster,
    timings: dict[str, float],
) -> Trained:
    names = features.feature_columns()
    train_h, test_h = evaluate.time_split(frame, config.holdout_weeks)
    train_s, test_s = evaluate.seed_split(frame, config.test_fraction, config.split_seed)
    fitted = training.fit_xgboost(
        {"holdout": train_h, "seed_protocol": train_s},
        names,
        name="xgboost",
        params=config.xgboost,
        num_workers=config.num_workers,
        cpus_per_worker=config.cpus_per_worker,
        report_every=config.report_every,
        storage_path=layout.ray_train_storage,
        storage_filesystem=store.filesystem(layout.buckets.models),
        before_cluster=cluster,
    )
    baseline = {
        "holdout": training.fit_baseline(train_h, names),
        "seed_protocol": training.fit_baseline(train_s, names),
    }
    timings["ray_train_fit"] = round(fitted.seconds, 3)
    if not cluster.used:
        log.info("ray: nothing in this run needed the cluster (pandas features, one training process)")
    for job, seconds in fitted.boosting_seconds.items():
        timings[f"boosting_{job}"] = round(seconds, 3)
    splits = artifacts.Splits(train_h, test_h, train_s, test_s)
    return Trained(splits, fitted.boosters, baseline, fitted.plan)


# 4. evaluate: both models on both protocols, the promotion decision -----------------------------
def evaluate_stage(config: WorkflowConfig, trained: Trained) -> Evaluation:
    names = features.feature_columns()
    tests = {"holdout": trained.splits.test_h, "seed_protocol": trained.splits.test_s}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    predictions: dict[str, np.ndarray] = {}
    for protocol, test in tests.items():
        actual = test[features.TARGET].to_numpy()
        predicted = {
            "xgboost": training.predict_xgboost(trained.xgboost[protocol], test, names),
            "baseline": training.predict_baseline(trained.baseline[protocol], test, names),
        }
        scores[protocol] = {model: evaluate.regression_metrics(actual, p) for model, p in predicted.items()}
        if protocol == "holdout":
            predictions = predicted
    holdout = scores["holdout"]
    decision = evaluate.decide_promotion(holdout["xgboost"], holdout["baseline"], config.thresholds)
    for protocol, shown in (("holdout", "holdout"), ("seed_protocol", "seed protocol")):
        for model, m in scores[protocol].items():
            log.info(
                "evaluate: %s %s rmse=%.1f mae=%.1f mape=%.2f%% r2=%.4f",
                shown,
                model,
                m["rmse"],
                m["mae"],
                m["mape"],
                m["r2"],
            )
    log.info("evaluate: %s", "promote" if decision.promoted else f"do not promote: {decision.sentence()}")
    return Evaluation(scores, decision, predictions)


# 5. artifacts: model, metadata, report and plots; the current.json pointer on promotion -----------
def artifacts_stage(
    config: WorkflowConfig,
    store: S3Store,
    layout: artifacts.Layout,
    ingested: ingest.IngestResult,
    feats: Features,
    trained: Trained,
    evaluation: Evaluation,
    timings: dict[str, float],
) -> dict[str, Any]:
    buckets = layout.buckets
    booster = trained.xgboost["holdout"]
    model_put = store.put_bytes(
        buckets.models, layout.model_key, bytes(booster.save_raw("ubj")), content_type="application/ubjson"
    )
    metrics = artifacts.metrics_record(
        config,
        layout,
        ingested=ingested,
        manifest=feats.manifest,
        manifest_put=feats.manifest_put,
        fset=feats.fset,
        plan=trained.plan,
        splits=trained.splits,
        scores=evaluation.scores,
        decision=evaluation.decision,
        model_put=model_put,
        timings=timings,
    )
    metadata = artifacts.model_metadata(metrics, ingested, feats.manifest, feats.manifest_put)
    gains = booster.get_score(importance_type="gain")
    test_h = trained.splits.test_h
    images = artifacts.make_plots(
        test_h[features.TIMESTAMP],
        test_h[features.TARGET].to_numpy(),
        evaluation.holdout_predictions["xgboost"],
        evaluation.holdout_predictions["baseline"],
        {k: float(v) for k, v in gains.items() if isinstance(v, (int, float))},
        f"zone {config.target_zone}",
    )
    report = artifacts.render_report(metrics)
    # MLflow (best effort, never raises): its run id goes into metrics.json and metadata.json.
    metrics["tracking"] = metadata["tracking"] = tracking.track(
        tracking_uri=config.tracking_uri,
        metrics=metrics,
        metadata=metadata,
        manifest=feats.manifest,
        booster=booster,
        sample=test_h[features.feature_columns()].head(5),
        images=images,
        report=report,
    )
    store.put_json(buckets.models, layout.metadata_key, metadata)
    for image_name, png in images.items():
        store.put_bytes(buckets.results, layout.result_key(image_name), png, content_type="image/png")
    store.put_bytes(buckets.results, layout.report_key, report.encode(), content_type="text/markdown")
    if evaluation.decision.promoted:
        pointer = artifacts.current_pointer(metrics, feats.manifest["features"])
        store.put_json(buckets.models, layout.current_key, pointer)
        log.info("artifacts: promoted %s -> %s", model_put.uri, metrics["current_uri"])
    return metrics
