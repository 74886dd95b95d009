"""The whole workflow, stage by stage: ingest -> features -> train -> evaluate -> artifacts.

``run(config)`` reads as those five stages; each is one function below, and every object they
write (keys, manifest, metrics, metadata, the ``current.json`` pointer) is built in ``artifacts.py``.
A stage that needs the cluster (Ray Data features, a Ray Train worker group) connects through the
``connect`` callback first (the CLI connects to the job's cluster or starts a local Ray).
``run`` returns the metrics object written to ``runs/<run id>/metrics.json`` in the results bucket,
or raises NotPromotedError (carrying that object) after writing every artifact except the
``current.json`` pointer. The pointer read at the start (``promotion.read_live``) is the live model
the new one must match, and the condition of its replacement, which comes after metrics.json
(``promotion.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import xgboost
from sklearn.pipeline import Pipeline

from rayops.workflow import artifacts, drift, evaluate, features, ingest, promotion, tracking, training
from rayops.workflow.config import WorkflowConfig
from rayops.workflow.errors import ConfigError, NotPromotedError, WorkflowError
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
    resumed_from: dict[str, int]  # job -> the round a restarted worker group resumed it from


@dataclass(frozen=True)
class Evaluation:
    scores: dict[str, dict[str, dict[str, float]]]  # protocol -> model -> metrics
    decision: evaluate.Decision
    holdout_predictions: dict[str, np.ndarray]  # model -> predictions on the holdout (for the plots)
    live: dict[str, Any] | None  # the live model's run id and metrics on this holdout (None: none)


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
    check_workers_fit(config, cluster)
    with stages.stage("ingest"):
        table, ingested, live, resumed = ingest_stage(config, store, layout)
    layout = replace(layout, resumed=resumed)
    with stages.stage("features"):
        feats = features_stage(config, store, layout, table, ingested, cluster)
    with stages.stage("train"):
        trained = train_stage(config, store, layout, feats.fset.frame, cluster, stages.timings)
    with stages.stage("evaluate"):
        evaluation = evaluate_stage(config, store, trained, live)
    with stages.stage("artifacts"):
        metrics = artifacts_stage(config, store, layout, ingested, feats, trained, evaluation, stages.timings)
    # The run's record, with every stage's time, then (only then) the promotion pointer.
    stages.total()
    metrics_put = store.put_json(layout.buckets.results, layout.metrics_key, metrics, if_none_match=True)
    log.info("artifacts: metrics %s, report %s", metrics["metrics_uri"], metrics["report_uri"])
    if evaluation.decision.promoted:
        lost = promote_stage(store, layout, live, ingested, feats, metrics)
        # MLflow's champion alias follows the pointer only once the pointer's write has succeeded.
        metrics["tracking"] = tracking.settle(metrics["tracking"], promoted=lost is None)
        if lost is not None:
            # Not promoted after all: the run's record and metadata say so (the pointer names another run).
            metrics["promoted"] = False
            metrics["promotion"]["reasons"] = [lost]
            metrics["promotion"]["decision"] = lost
            store.put_json(layout.buckets.results, layout.metrics_key, metrics, if_match=metrics_put.etag)
            metadata = store.get_json(layout.buckets.models, layout.metadata_key)
            store.put_json(
                layout.buckets.models,
                layout.metadata_key,
                {**(metadata or {}), "promoted": False, "tracking": metrics["tracking"]},
            )
            raise NotPromotedError(
                f"the model of run {config.run_id} was not promoted ({lost}); "
                f"{metrics['current_uri']} names run {_winner(store, layout)}'s model",
                metrics,
            )
    else:
        raise NotPromotedError(
            f"the model of run {config.run_id} was not promoted ({evaluation.decision.sentence()}); "
            f"{metrics['current_uri']} still names the previous model",
            metrics,
        )
    return metrics


def check_workers_fit(config: WorkflowConfig, cluster: _Cluster) -> None:
    """Refuse, before any stage, a worker size no node of the cluster has (Ray would wait for it forever).
    One CPU fits every node, so only a larger ``--cpus-per-worker`` connects to the cluster for this."""
    if config.cpus_per_worker <= 1:
        return
    cluster()
    import ray

    if not ray.is_initialized():  # run without a cluster (a library call with connect=None): nothing to ask
        return
    nodes = ray.nodes()  # type: ignore[no-untyped-call]  # Ray's own annotation is missing
    largest = int(max((n["Resources"].get("CPU", 0) for n in nodes if n.get("Alive")), default=0))
    if config.cpus_per_worker > largest:
        raise ConfigError(
            f"--cpus-per-worker {config.cpus_per_worker} (train_params.cpus_per_worker) is more than any "
            f"node of the cluster has: the largest offers {largest} CPU(s) to Ray, so pass at most {largest}"
        )


def _winner(store: S3Store, layout: artifacts.Layout) -> str | None:
    found = store.get_json_etag(layout.buckets.models, layout.current_key)
    return None if found is None else found[0].get("run_id")


def promote_stage(
    store: S3Store,
    layout: artifacts.Layout,
    live: promotion.Live,
    ingested: ingest.IngestResult,
    feats: Features,
    metrics: dict[str, Any],
) -> str | None:
    """The pointer, conditional on the one read at the start; None if written, else why not."""
    buckets = layout.buckets
    pointer = artifacts.current_pointer(metrics, feats.manifest["features"])
    metadata_version = (store.head(buckets.models, layout.metadata_key) or {}).get("VersionId")
    raw_bucket, raw_key = ingested.uri.removeprefix("s3://").split("/", 1)
    pins = [
        (buckets.models, layout.model_key, metrics["model_version_id"]),
        (buckets.models, layout.metadata_key, metadata_version),
        (buckets.features, layout.manifest_key, feats.manifest_put.version_id),
        (raw_bucket, raw_key, ingested.version_id),  # pinned by the manifest already; again, to be sure
    ]
    lost = promotion.promote(store, layout, live, pointer, pins)
    if lost is None:
        log.info("artifacts: promoted %s -> %s", metrics["model_uri"], metrics["current_uri"])
    else:
        log.info("artifacts: not promoted: %s", lost)
    return lost


# 1. ingest: validate first, claim the run id, upload only good data ------------------------------
def ingest_stage(
    config: WorkflowConfig, store: S3Store, layout: artifacts.Layout
) -> tuple[ingest.RawTable, ingest.IngestResult, promotion.Live, bool]:
    fetched = ingest.fetch(
        config.dataset, store, timeout=config.fetch_timeout_s, cluster_buckets=config.buckets
    )
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
    # The live model (and the condition of this run's promotion), then the run id's claim: the first
    # reads and writes of the run, after the data proved good.
    live = promotion.read_live(store, layout)
    resumed = promotion.claim_run(store, config, layout)
    return table, ingest.upload_raw(store, config.buckets.raw, fetched, table), live, resumed


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
    if layout.resumed:  # the lost attempt's Parquet parts would be read with these: delete markers on them
        cleared = store.delete_prefix(layout.buckets.features, layout.features_data.split("/", 1)[1] + "/")
        log.info("features: %d Parquet part(s) of the lost attempt replaced", cleared)
    try:
        parquet_uri = artifacts.write_features(fset, layout, store.filesystem(layout.buckets.features))
    except Exception as err:
        raise WorkflowError(
            f"cannot write the features to s3://{layout.features_data} ({type(err).__name__}): "
            "check the features bucket, --s3-endpoint-url and the nodes' S3 credentials"
        ) from err
    manifest = artifacts.features_manifest(config, ingested, fset, parquet_uri)
    manifest_put = store.put_json(
        layout.buckets.features, layout.manifest_key, manifest, if_none_match=layout.fresh_only
    )
    store.put_json(layout.buckets.features, layout.newest_manifest_key, manifest)
    # The manifest pins the raw version it was built from: out of the noncurrent-expiry rule.
    raw_bucket, raw_key = ingested.uri.removeprefix("s3://").split("/", 1)
    store.pin(raw_bucket, raw_key, ingested.version_id)
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
        checkpoint_every=config.checkpoint_every,
        max_failures=config.max_failures,
        placement_timeout_s=config.placement_timeout_s,
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
    return Trained(splits, fitted.boosters, baseline, fitted.plan, fitted.resumed_from)


# 4. evaluate: both models on both protocols, the promotion decision -----------------------------
def evaluate_stage(
    config: WorkflowConfig, store: S3Store, trained: Trained, live: promotion.Live | None = None
) -> Evaluation:
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
    live_scores, live_problem = (None, None)
    if live is not None:
        live_scores, live_problem = promotion.score_live(store, live, trained.splits.test_h, features.TARGET)
    decision = evaluate.decide_promotion(
        holdout["xgboost"],
        holdout["baseline"],
        config.thresholds,
        live=live_scores,
        live_run=None if live is None else live.run_id,
        live_problem=live_problem,
    )
    live_record = None
    if live is not None and live.pointer is not None:
        live_record = {"run_id": live.run_id, "holdout": live_scores, "problem": live_problem}
        if live_scores is not None:
            log.info("evaluate: live run %s rmse=%.1f on this holdout", live.run_id, live_scores["rmse"])
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
    return Evaluation(scores, decision, predictions, live_record)


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
        buckets.models,
        layout.model_key,
        bytes(booster.save_raw("ubj")),
        content_type="application/ubjson",
        if_none_match=layout.fresh_only,
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
    metrics["promotion"]["live"] = evaluation.live
    metrics["resumed_from_round"] = trained.resumed_from  # empty: no restart (see training.py)
    metrics["resubmitted"] = layout.resumed  # a resubmission after the driver was lost (promotion.claim_run)
    metadata = artifacts.model_metadata(metrics, ingested, feats.manifest, feats.manifest_put)
    # The training rows' bins (inputs and predictions): serving compares live use with them (drift scores).
    train_h = trained.splits.train_h
    metadata["drift"] = drift.reference(
        train_h, training.predict_xgboost(booster, train_h, features.feature_columns())
    )
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
    store.put_json(buckets.models, layout.metadata_key, metadata, if_none_match=layout.fresh_only)
    for image_name, png in images.items():
        store.put_bytes(buckets.results, layout.result_key(image_name), png, content_type="image/png")
    store.put_bytes(buckets.results, layout.report_key, report.encode(), content_type="text/markdown")
    return metrics
