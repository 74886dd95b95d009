"""Every object the workflow writes and where it goes: the one module that knows the buckets' layout.

Layout (``<zone>`` is ``zone1``, ``zone2`` or ``zone3``; the keys are built only by :class:`Layout`
and :func:`raw_key`):

* raw bucket: ``datasets/sha256/<hex>.csv`` (the validated CSV, named by the SHA-256 of its bytes, so
  a later upload, even of a file with the same name, never makes a pinned version noncurrent).
* features bucket: ``<zone>/runs/<run id>/data/`` (Parquet), ``<zone>/runs/<run id>/manifest.json``
  and ``<zone>/newest-features-manifest.json`` (a copy of the manifest of the newest run that got as
  far as its features: not a trained or promoted model, see ``current.json`` for that).
* models bucket: ``<zone>/runs/<run id>/model.ubj`` (XGBoost's own binary format),
  ``<zone>/runs/<run id>/metadata.json``, ``<zone>/ray-train/<run id>/`` (Ray Train's storage, with a
  worker group only) and ``<zone>/current.json`` (the pointer, written on promotion only).
* results bucket: ``runs/<run id>/run.json`` (the run id's claim, written first, only if absent),
  ``runs/<run id>/metrics.json`` (written before the pointer), ``runs/<run id>/report.md`` and its
  PNG plots.

The objects: :func:`features_manifest`, :func:`metrics_record` (metrics.json, also the job's
``RAYOPS_METRICS_JSON=`` line), :func:`model_metadata` and :func:`current_pointer`.
"""

from __future__ import annotations

import io
import platform
import re
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rayops.workflow.config import SEED_REFERENCE, Buckets, WorkflowConfig
from rayops.workflow.s3 import PutResult

if TYPE_CHECKING:  # ingest and features import this module's raw_key: no import cycle at run time
    from rayops.workflow.evaluate import Decision
    from rayops.workflow.features import FeatureSet
    from rayops.workflow.ingest import IngestResult
    from rayops.workflow.training import WorkerPlan

RAW_PREFIX = "datasets"
SEED_PROTOCOL = "random 80/20 split, hourly Zone 1 sums (the seed lab's notebooks)"
UNITS = {"rmse": "target units", "mae": "target units", "mape": "percent", "r2": "ratio"}

# ------------------------------------------------------------------------------------- layout


def raw_key(sha256: str) -> str:
    """The raw bucket's key of a dataset: its content's SHA-256 (one key per distinct content)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"raw_key needs a SHA-256 hex digest, got {sha256!r}")
    return f"{RAW_PREFIX}/sha256/{sha256}.csv"


@dataclass(frozen=True)
class Layout:
    """The keys of one run's objects in the four buckets."""

    buckets: Buckets
    prefix: str  # the target's key prefix, e.g. zone1
    run_id: str
    # A resubmission continuing its own claim (promotion.claim_run): the run's objects that its lost attempt
    # wrote are replaced (new versions) instead of refused.
    resumed: bool = False

    @property
    def fresh_only(self) -> bool:
        """The ``if_none_match`` of the run's own objects: only a resumed run replaces them."""
        return not self.resumed

    @classmethod
    def of(cls, config: WorkflowConfig) -> Layout:
        return cls(config.buckets, config.model_prefix, config.run_id)

    @property
    def run_base(self) -> str:
        return f"{self.prefix}/runs/{self.run_id}"

    # features bucket
    @property
    def features_data(self) -> str:
        """The Parquet folder, as ``bucket/key`` (what pyarrow and Ray Data write to)."""
        return f"{self.buckets.features}/{self.run_base}/data"

    @property
    def manifest_key(self) -> str:
        return f"{self.run_base}/manifest.json"

    @property
    def newest_manifest_key(self) -> str:
        """A copy of the newest run's features manifest (written before training: not "last good")."""
        return f"{self.prefix}/newest-features-manifest.json"

    # models bucket
    @property
    def model_key(self) -> str:
        return f"{self.run_base}/model.ubj"

    @property
    def metadata_key(self) -> str:
        return metadata_key(self.prefix, self.run_id)

    @property
    def current_key(self) -> str:
        return current_key(self.prefix)

    @property
    def ray_train_storage(self) -> str:
        """Ray Train's storage path, as ``bucket/key``."""
        return f"{self.buckets.models}/{self.prefix}/ray-train/{self.run_id}"

    # results bucket
    @property
    def results_base(self) -> str:
        return f"runs/{self.run_id}"

    @property
    def claim_key(self) -> str:
        """The run id's claim, written once (``IfNoneMatch``) before anything else of the run."""
        return f"{self.results_base}/run.json"

    @property
    def metrics_key(self) -> str:
        return f"{self.results_base}/metrics.json"

    @property
    def report_key(self) -> str:
        return f"{self.results_base}/report.md"

    def result_key(self, name: str) -> str:
        return f"{self.results_base}/{name}"


def metadata_key(model_prefix: str, run_id: str) -> str:
    """A run's metadata.json in the models bucket (``zone1/runs/<run id>/metadata.json``); Serve pins it."""
    return f"{model_prefix}/runs/{run_id}/metadata.json"


def current_key(model_prefix: str) -> str:
    """The promotion pointer of a target (``zone1/current.json``), which Serve reads."""
    return f"{model_prefix}/current.json"


# ------------------------------------------------------------------------------------ objects


def target_description(zone: int) -> str:
    return f"hourly Zone {zone} power consumption (sum of the six 10-minute readings, dataset units)"


def features_manifest(
    config: WorkflowConfig, ingested: IngestResult, fset: FeatureSet, parquet_uri: str
) -> dict[str, Any]:
    """manifest.json: what the feature table is made of and where it came from."""
    from rayops.workflow import features

    frame = fset.frame
    return {
        "schema": "rayops.features.v1",
        "run_id": config.run_id,
        "created_at": now_utc(),
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


@dataclass(frozen=True)
class Splits:
    """The two evaluation protocols' row sets, as metrics.json records them."""

    train_h: pd.DataFrame
    test_h: pd.DataFrame
    train_s: pd.DataFrame
    test_s: pd.DataFrame


def metrics_record(
    config: WorkflowConfig,
    layout: Layout,
    *,
    ingested: IngestResult,
    manifest: dict[str, Any],
    manifest_put: PutResult,
    fset: FeatureSet,
    plan: WorkerPlan,
    splits: Splits,
    scores: dict[str, dict[str, dict[str, float]]],
    decision: Decision,
    model_put: PutResult,
    timings: dict[str, float],
) -> dict[str, Any]:
    """metrics.json (and the job's RAYOPS_METRICS_JSON line). ``scores``: protocol -> model -> metrics.
    ``timings`` is kept by reference: the stages still running add their seconds to it."""
    from rayops.workflow.features import TIMESTAMP

    buckets = layout.buckets
    return {
        "run_id": config.run_id,
        "data_version": ingested.data_version,
        "data_sha256": ingested.sha256,
        "dataset": ingested.source,
        "raw_uri": ingested.uri,
        "target": f"zone{config.target_zone}",
        "target_zone": config.target_zone,
        "target_description": target_description(config.target_zone),
        "holdout": scores["holdout"],
        "seed_protocol": scores["seed_protocol"],
        "seed_reference": {**SEED_REFERENCE, "protocol": SEED_PROTOCOL},
        "units": dict(UNITS),
        "splits": {
            "holdout": {
                "weeks": config.holdout_weeks,
                "train_rows": len(splits.train_h),
                "test_rows": len(splits.test_h),
                "test_start": str(splits.test_h[TIMESTAMP].min()),
                "test_end": str(splits.test_h[TIMESTAMP].max()),
            },
            "seed_protocol": {
                "test_fraction": config.test_fraction,
                "seed": config.split_seed,
                "train_rows": len(splits.train_s),
                "test_rows": len(splits.test_s),
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
        "metadata_uri": f"s3://{buckets.models}/{layout.metadata_key}",
        "current_uri": f"s3://{buckets.models}/{layout.current_key}",
        "features_manifest_uri": manifest_put.uri,
        "features_uri": manifest["parquet_uri"],
        "feature_count": len(manifest["features"]),
        "metrics_uri": f"s3://{buckets.results}/{layout.metrics_key}",
        "report_uri": f"s3://{buckets.results}/{layout.report_key}",
        "params": {**asdict(config.xgboost), "objective": "reg:squarederror", "tree_method": "hist"},
        "training": {
            "mode": plan.mode,
            "requested_workers": "auto" if config.num_workers is None else config.num_workers,
            "num_workers": plan.num_workers,
            "placement_strategy": plan.placement_strategy,
            "cpus_per_worker": config.cpus_per_worker,
            "nthread": plan.nthread,
            "reason": plan.reason,
        },
        "features_execution": {
            "executor": fset.executor,
            "requested": config.features_executor,
            "reason": fset.reason,
        },
        "git_sha": detect_git_sha(config.git_sha),
        "timings_s": timings,
    }


def model_metadata(
    metrics: dict[str, Any], ingested: IngestResult, manifest: dict[str, Any], manifest_put: PutResult
) -> dict[str, Any]:
    """metadata.json next to the model: its lineage (data, features, params, code, libraries)."""
    import xgboost

    from rayops.workflow.features import TARGET

    return {
        "run_id": metrics["run_id"],
        "created_at": now_utc(),
        "model_uri": metrics["model_uri"],
        "model_version_id": metrics["model_version_id"],
        "format": "xgboost-ubj",
        "xgboost_version": xgboost.__version__,
        "target": metrics["target"],
        "target_description": metrics["target_description"],
        "target_column": TARGET,
        "features": manifest["features"],
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
        "package_versions": package_versions(),
        "git_sha": metrics["git_sha"],
        "metrics": {"holdout": metrics["holdout"], "seed_protocol": metrics["seed_protocol"]},
        "splits": metrics["splits"],  # the rows it was trained and scored on (drift: the training rows)
        "promoted": metrics["promoted"],
    }


def current_pointer(metrics: dict[str, Any], features: list[str]) -> dict[str, Any]:
    """current.json: the promoted model, what it needs as input and how it scored."""
    return {
        "run_id": metrics["run_id"],
        "promoted_at": now_utc(),
        "model_uri": metrics["model_uri"],
        "model_version_id": metrics["model_version_id"],
        "metadata_uri": metrics["metadata_uri"],
        "target": metrics["target"],
        "features": features,
        "data_version": metrics["data_version"],
        "holdout": metrics["holdout"]["xgboost"],
    }


def write_features(fset: FeatureSet, layout: Layout, filesystem: Any) -> str:
    """The feature table as Parquet under ``layout.features_data`` (Ray Data writes its blocks; a
    pandas table is one part, the same rows). Returns the folder's s3:// URI."""
    path = layout.features_data
    if fset.dataset is not None:
        fset.dataset.write_parquet(path, filesystem=filesystem)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(fset.frame, preserve_index=False)
        pq.write_table(table, f"{path}/part-00000.parquet", filesystem=filesystem)
    return f"s3://{path}/"


# ----------------------------------------------------------------------------------- lineage


PACKAGES = ("ray", "xgboost-cpu", "xgboost", "scikit-learn", "pandas", "pyarrow", "numpy", "boto3")


def package_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the model (the driver's; the cluster pins the same)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def detect_git_sha(explicit: str | None) -> str | None:
    """``--git-sha`` if given, else the checkout this package runs from (None on the cluster)."""
    if explicit:
        return explicit.lower()
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------- plots


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def make_plots(
    timestamps: pd.Series,
    actual: np.ndarray,
    xgb: np.ndarray,
    baseline: np.ndarray,
    importance: dict[str, float],
    target_label: str,
) -> dict[str, bytes]:
    """PNG plots: predicted vs actual over the holdout, residuals, feature importance (gain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    images: dict[str, bytes] = {}

    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(timestamps, actual, label="actual", color="black", linewidth=1.0)
    ax.plot(timestamps, xgb, label="xgboost", linewidth=0.9)
    ax.plot(timestamps, baseline, label="baseline (linear)", linewidth=0.8, alpha=0.7)
    ax.set_title("Holdout: predicted vs actual")
    ax.set_ylabel(target_label)
    ax.legend(loc="upper right")
    images["pred_vs_actual.png"] = _png(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    residuals = actual - xgb
    left.scatter(xgb, residuals, s=4, alpha=0.5)
    left.axhline(0.0, color="black", linewidth=0.8)
    left.set_xlabel("xgboost prediction")
    left.set_ylabel("actual - predicted")
    left.set_title("Holdout residuals vs prediction")
    right.hist(residuals, bins=50, alpha=0.7, label="xgboost")
    right.hist(actual - baseline, bins=50, alpha=0.5, label="baseline")
    right.set_xlabel("actual - predicted")
    right.set_title("Residual distribution")
    right.legend()
    thousands = FuncFormatter(lambda value, _: f"{value / 1000:g}k")
    for axis in (left.xaxis, left.yaxis, right.xaxis):
        axis.set_major_formatter(thousands)
    images["residuals.png"] = _png(fig)

    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20]
    fig, ax = plt.subplots(figsize=(8, 6))
    names = [k for k, _ in reversed(top)]
    ax.barh(names, [v for _, v in reversed(top)])
    ax.set_xlabel("total gain")
    ax.set_title("XGBoost feature importance (top 20 by gain)")
    images["feature_importance.png"] = _png(fig)
    return images


# ------------------------------------------------------------------------------------ report


def _row(name: str, m: dict[str, float]) -> str:
    return f"| {name} | {m['rmse']:,.1f} | {m['mae']:,.1f} | {m['mape']:.2f} | {m['r2']:.4f} |"


def render_report(metrics: dict[str, Any]) -> str:
    """The run's report in markdown; the PNGs sit next to it in the results bucket."""
    head = "| model | RMSE | MAE | MAPE % | R2 |\n|---|---:|---:|---:|---:|"
    holdout = metrics["holdout"]
    seed = metrics["seed_protocol"]
    split = metrics["splits"]
    ref = metrics["seed_reference"]
    lines = [
        f"# rayops run {metrics['run_id']}",
        "",
        f"- target: {metrics['target_description']}",
        f"- data: {metrics['raw_uri']} version {metrics['data_version']}"
        f" (sha256 {metrics['data_sha256'][:16]}...)",
        f"- features: {metrics['features_manifest_uri']} ({metrics['feature_count']} features)",
        f"- model: {metrics['model_uri']}",
        f"- promoted: **{'yes' if metrics['promoted'] else 'no'}** ({metrics['promotion']['decision']})",
        "",
        f"## Time-ordered holdout (last {split['holdout']['weeks']} weeks:"
        f" {split['holdout']['test_rows']} hours, trained on {split['holdout']['train_rows']})",
        "",
        head,
        _row("xgboost", holdout["xgboost"]),
        _row("baseline (linear regression)", holdout["baseline"]),
        "",
        f"## Seed protocol (random {int(100 * (1 - split['seed_protocol']['test_fraction']))}/"
        f"{int(100 * split['seed_protocol']['test_fraction'])} split, seed {split['seed_protocol']['seed']}; "
        "leaks neighbouring hours, for comparison only)",
        "",
        head,
        _row("xgboost", seed["xgboost"]),
        _row("baseline (linear regression)", seed["baseline"]),
        f"| seed lab (recorded) | {ref['rmse']:,.1f} | {ref['mae']:,.1f} | | |",
        "",
        "## Plots",
        "",
        "![predicted vs actual](pred_vs_actual.png)",
        "",
        "![residuals](residuals.png)",
        "",
        "![feature importance](feature_importance.png)",
        "",
    ]
    return "\n".join(lines)
