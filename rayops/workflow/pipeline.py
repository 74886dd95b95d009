"""The whole workflow, stage by stage: ingest -> features -> train -> evaluate -> artifacts.

``run(config)`` needs a connected Ray from stage 2 on (``ray.init``, or the ``connect`` callback);
the CLI (``python -m rayops.workflow run``) connects to the job's cluster or starts a local one.
It returns the metrics object written to ``runs/<run id>/metrics.json`` in the results bucket, or
raises NotPromotedError (carrying that object) after writing every artifact except the
``current.json`` pointer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import xgboost

from rayops.workflow import artifacts, evaluate, features, ingest, training
from rayops.workflow.config import SEED_REFERENCE, WorkflowConfig
from rayops.workflow.errors import NotPromotedError, WorkflowError
from rayops.workflow.s3 import S3Store

log = logging.getLogger(__name__)

STAGES = 5


class _Stage:
    """Logs ``stage i/5 name: ...`` on entry and its duration on exit."""

    def __init__(self, index: int, name: str, timings: dict[str, float]) -> None:
        self.index, self.name, self.timings = index, name, timings

    def __enter__(self) -> _Stage:
        self.started = time.perf_counter()
        log.info("stage %d/%d %s: started", self.index, STAGES, self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.started
        self.timings[self.name] = round(seconds, 3)
        if exc[0] is None:
            log.info("stage %d/%d %s: done in %.1f s", self.index, STAGES, self.name, seconds)


def _write_parquet(frame: Any, path: str, filesystem: Any) -> None:
    """One Parquet file of the feature table (what Ray Data's write_parquet writes, in one part)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, filesystem=filesystem)


def target_description(zone: int) -> str:
    return f"hourly Zone {zone} power consumption (sum of the six 10-minute readings, dataset units)"


def features_manifest(
    config: WorkflowConfig, ingested: ingest.IngestResult, fset: features.FeatureSet, parquet_uri: str
) -> dict[str, Any]:
    frame = fset.frame
    return {
        "schema": "rayops.features.v1",
        "run_id": config.run_id,
        "created_at": artifacts.now_utc(),
        "source": {
            "uri": ingested.uri,
            "version_id": ingested.version_id,
            "data_version": ingested.data_version,
            "sha256": ingested.sha256,
            "rows": ingested.rows,
            "dataset": ingested.source,
            "column_names": ingested.style,
        },
        "target": {
            "column": features.TARGET,
            "zone": config.target_zone,
            "definition": target_description(config.target_zone),
        },
        "timestamp_column": features.TIMESTAMP,
        "features": features.feature_columns(),
        "lags_hours": list(features.LAGS),
        "categories": {
            "season": list(features.SEASONS),
            "dow": list(features.DAYS),
            "hod": [f"{h:02d}" for h in features.HOURS],
        },
        "rows": len(frame),
        "hours": fset.hours,
        "incomplete_hours": fset.incomplete_hours,
        "first_timestamp": str(frame[features.TIMESTAMP].min()),
        "last_timestamp": str(frame[features.TIMESTAMP].max()),
        "parquet_uri": parquet_uri,
    }


def run(
    config: WorkflowConfig, store: S3Store | None = None, connect: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run every stage; see the module docstring.

    ``connect`` (e.g. ``ray.init``) is called at most once, and only when a stage needs the cluster
    (Ray Data features, a Ray Train worker group): bad input fails in seconds without starting a
    local Ray, and a small table (pandas features, one training process) never waits for one.
    """
    store = store or S3Store(config.s3_endpoint_url)
    buckets = config.buckets
    prefix = config.model_prefix
    run_id = config.run_id
    timings: dict[str, float] = {}
    started = time.perf_counter()
    log.info(
        "run %s: dataset %s, target zone %d, buckets %s",
        run_id,
        ingest.redact(config.dataset),
        config.target_zone,
        buckets.to_dict(),
    )

    # 1. ingest: validate first, upload only good data -------------------------------------
    with _Stage(1, "ingest", timings):
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
        ingested = ingest.upload_raw(store, buckets.raw, fetched, table)
    connected = False

    def on_cluster() -> None:
        nonlocal connected
        if not connected and connect is not None:
            connect()
        connected = True

    # 2. features: pandas on the driver (small tables) or Ray Data ------------------------------
    with _Stage(2, "features", timings):
        fset = features.build_features(
            table.frame, config.target_zone, executor=config.features_executor, before_cluster=on_cluster
        )
        base = f"{prefix}/runs/{run_id}"
        parquet_path = f"{buckets.features}/{base}/data"
        fs = store.filesystem(buckets.features)
        try:
            if fset.dataset is not None:
                fset.dataset.write_parquet(parquet_path, filesystem=fs)
            else:
                _write_parquet(fset.frame, f"{parquet_path}/part-00000.parquet", fs)
        except Exception as err:
            raise WorkflowError(
                f"cannot write the features to s3://{parquet_path} ({type(err).__name__}): "
                "check the features bucket, --s3-endpoint-url and the nodes' S3 credentials"
            ) from err
        manifest = features_manifest(config, ingested, fset, f"s3://{parquet_path}/")
        manifest_put = store.put_json(buckets.features, f"{base}/manifest.json", manifest)
        store.put_json(buckets.features, f"{prefix}/latest.json", manifest)
        log.info(
            "features: %d hourly rows (%d dropped: lag history or incomplete hours), %d features -> %s",
            fset.rows,
            fset.hours - fset.rows,
            len(manifest["features"]),
            manifest_put.uri,
        )
    frame = fset.frame
    names = features.feature_columns()

    # 3. train: Ray Train XGBoost + linear baseline, for both protocols -------------------------
    with _Stage(3, "train", timings):
        storage = f"{buckets.models}/{prefix}/ray-train/{run_id}"
        storage_fs = store.filesystem(buckets.models)
        train_h, test_h = evaluate.time_split(frame, config.holdout_weeks)
        train_s, test_s = evaluate.seed_split(frame, config.test_fraction, config.split_seed)
        common = {
            "params": config.xgboost,
            "num_workers": config.num_workers,
            "cpus_per_worker": config.cpus_per_worker,
            "report_every": config.report_every,
            "storage_path": storage,
            "storage_filesystem": storage_fs,
            "before_cluster": on_cluster,
        }
        trained = training.fit_xgboost(
            {"holdout": train_h, "seed_protocol": train_s}, names, name="xgboost", **common
        )
        booster_h = trained.boosters["holdout"]
        booster_s = trained.boosters["seed_protocol"]
        base_h = training.fit_baseline(train_h, names)
        base_s = training.fit_baseline(train_s, names)
        timings["ray_train_fit"] = round(trained.seconds, 3)
        if not connected:
            log.info("ray: nothing in this run needed the cluster (pandas features, one training process)")
        for job, seconds in trained.boosting_seconds.items():
            timings[f"boosting_{job}"] = round(seconds, 3)

    # 4. evaluate -----------------------------------------------------------------------------
    with _Stage(4, "evaluate", timings):
        actual_h = test_h[features.TARGET].to_numpy()
        pred_h = training.predict_xgboost(booster_h, test_h, names)
        pred_h_base = training.predict_baseline(base_h, test_h, names)
        actual_s = test_s[features.TARGET].to_numpy()
        holdout = {
            "xgboost": evaluate.regression_metrics(actual_h, pred_h),
            "baseline": evaluate.regression_metrics(actual_h, pred_h_base),
        }
        seed_protocol = {
            "xgboost": evaluate.regression_metrics(
                actual_s, training.predict_xgboost(booster_s, test_s, names)
            ),
            "baseline": evaluate.regression_metrics(
                actual_s, training.predict_baseline(base_s, test_s, names)
            ),
        }
        decision = evaluate.decide_promotion(holdout["xgboost"], holdout["baseline"], config.thresholds)
        for protocol, values in (("holdout", holdout), ("seed protocol", seed_protocol)):
            for model, m in values.items():
                log.info(
                    "evaluate: %s %s rmse=%.1f mae=%.1f mape=%.2f%% r2=%.4f",
                    protocol,
                    model,
                    m["rmse"],
                    m["mae"],
                    m["mape"],
                    m["r2"],
                )
        log.info("evaluate: %s", "promote" if decision.promoted else f"do not promote: {decision.sentence()}")

    # 5. artifacts ------------------------------------------------------------------------------
    with _Stage(5, "artifacts", timings):
        model_key, metadata_key = artifacts.model_keys(prefix, run_id)
        model_put = store.put_bytes(
            buckets.models, model_key, bytes(booster_h.save_raw("ubj")), content_type="application/ubjson"
        )
        results_base = f"runs/{run_id}"
        metrics: dict[str, Any] = {
            "run_id": run_id,
            "data_version": ingested.data_version,
            "data_sha256": ingested.sha256,
            "dataset": ingested.source,
            "raw_uri": ingested.uri,
            "target": f"zone{config.target_zone}",
            "target_zone": config.target_zone,
            "target_description": target_description(config.target_zone),
            "holdout": holdout,
            "seed_protocol": seed_protocol,
            "seed_reference": {
                **SEED_REFERENCE,
                "protocol": "random 80/20 split, hourly Zone 1 sums (the seed lab's notebooks)",
            },
            "units": {"rmse": "target units", "mae": "target units", "mape": "percent", "r2": "ratio"},
            "splits": {
                "holdout": {
                    "weeks": config.holdout_weeks,
                    "train_rows": len(train_h),
                    "test_rows": len(test_h),
                    "test_start": str(test_h[features.TIMESTAMP].min()),
                    "test_end": str(test_h[features.TIMESTAMP].max()),
                },
                "seed_protocol": {
                    "test_fraction": config.test_fraction,
                    "seed": config.split_seed,
                    "train_rows": len(train_s),
                    "test_rows": len(test_s),
                },
            },
            "promoted": decision.promoted,
            "promotion": {
                "decision": decision.sentence(),
                "reasons": decision.reasons,
                "thresholds": config.thresholds.to_dict(),
            },
            "model_uri": model_put.uri,
            "model_version_id": model_put.version_id,
            "metadata_uri": f"s3://{buckets.models}/{metadata_key}",
            "current_uri": f"s3://{buckets.models}/{artifacts.current_key(prefix)}",
            "features_manifest_uri": manifest_put.uri,
            "features_uri": manifest["parquet_uri"],
            "feature_count": len(names),
            "metrics_uri": f"s3://{buckets.results}/{results_base}/metrics.json",
            "report_uri": f"s3://{buckets.results}/{results_base}/report.md",
            "params": {**asdict(config.xgboost), "objective": "reg:squarederror", "tree_method": "hist"},
            "training": {
                "mode": trained.plan.mode,
                "requested_workers": "auto" if config.num_workers is None else config.num_workers,
                "num_workers": trained.plan.num_workers,
                "placement_strategy": trained.plan.placement_strategy,
                "cpus_per_worker": config.cpus_per_worker,
                "nthread": trained.plan.nthread,
                "reason": trained.plan.reason,
            },
            "features_execution": {
                "executor": fset.executor,
                "requested": config.features_executor,
                "reason": fset.reason,
            },
            "git_sha": artifacts.detect_git_sha(config.git_sha),
            "timings_s": timings,
        }
        model_metadata = {
            "run_id": run_id,
            "created_at": artifacts.now_utc(),
            "model_uri": model_put.uri,
            "model_version_id": model_put.version_id,
            "format": "xgboost-ubj",
            "xgboost_version": xgboost.__version__,
            "target": metrics["target"],
            "target_description": metrics["target_description"],
            "target_column": features.TARGET,
            "features": names,
            "data": {
                "raw_uri": ingested.uri,
                "version_id": ingested.version_id,
                "data_version": ingested.data_version,
                "sha256": ingested.sha256,
                "rows": ingested.rows,
                "source": ingested.source,
                "features_manifest_uri": manifest_put.uri,
                "features_manifest_version_id": manifest_put.version_id,
                "features_uri": manifest["parquet_uri"],
            },
            "params": metrics["params"],
            "training": metrics["training"],
            "package_versions": artifacts.package_versions(),
            "git_sha": metrics["git_sha"],
            "metrics": {"holdout": holdout, "seed_protocol": seed_protocol},
            "promoted": decision.promoted,
        }
        store.put_json(buckets.models, metadata_key, model_metadata)
        gains = booster_h.get_score(importance_type="gain")
        importance = {k: float(v) for k, v in gains.items() if isinstance(v, (int, float))}
        images = artifacts.make_plots(
            test_h[features.TIMESTAMP],
            actual_h,
            pred_h,
            pred_h_base,
            importance,
            f"zone {config.target_zone}",
        )
        for image_name, png in images.items():
            store.put_bytes(buckets.results, f"{results_base}/{image_name}", png, content_type="image/png")
        store.put_bytes(
            buckets.results,
            f"{results_base}/report.md",
            artifacts.render_report(metrics).encode(),
            content_type="text/markdown",
        )
        if decision.promoted:
            store.put_json(
                buckets.models,
                artifacts.current_key(prefix),
                {
                    "run_id": run_id,
                    "promoted_at": artifacts.now_utc(),
                    "model_uri": model_put.uri,
                    "model_version_id": model_put.version_id,
                    "metadata_uri": metrics["metadata_uri"],
                    "target": metrics["target"],
                    "features": names,
                    "data_version": ingested.data_version,
                    "holdout": holdout["xgboost"],
                },
            )
            log.info("artifacts: promoted %s -> %s", model_put.uri, metrics["current_uri"])

    # The run's record, written last (after the promotion pointer), with every stage's time.
    timings["total"] = round(time.perf_counter() - started, 3)
    store.put_json(buckets.results, f"{results_base}/metrics.json", metrics)
    log.info("artifacts: metrics %s, report %s", metrics["metrics_uri"], metrics["report_uri"])

    if not decision.promoted:
        raise NotPromotedError(
            f"the model of run {run_id} was not promoted ({decision.sentence()}); "
            f"s3://{buckets.models}/{artifacts.current_key(prefix)} still names the previous model",
            metrics,
        )
    return metrics
