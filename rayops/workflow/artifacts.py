"""Stage 5, artifacts: model + lineage metadata, metrics.json, a markdown report with plots,
and the ``current.json`` pointer that makes a model the promoted one.

Layout (``<zone>`` is ``zone1``, ``zone2`` or ``zone3``):

* models bucket: ``<zone>/runs/<run id>/model.ubj`` (XGBoost's own binary format),
  ``<zone>/runs/<run id>/metadata.json``, and ``<zone>/current.json`` (written on promotion only).
* results bucket: ``runs/<run id>/metrics.json``, ``runs/<run id>/report.md`` and its PNG plots.
"""

from __future__ import annotations

import io
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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


# --------------------------------------------------------------------------------- promotion


def current_key(model_prefix: str) -> str:
    return f"{model_prefix}/current.json"


def model_keys(model_prefix: str, run_id: str) -> tuple[str, str]:
    base = f"{model_prefix}/runs/{run_id}"
    return f"{base}/model.ubj", f"{base}/metadata.json"
