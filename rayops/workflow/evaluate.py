"""Stage 4, evaluate: splits, metrics in the target's own units, and the promotion decision.

Two protocols:

* ``holdout`` (decides promotion): train on everything before the last ``holdout_weeks`` weeks,
  test on those weeks. Time-ordered, so no information flows from the test period into training.
* ``seed_protocol`` (comparison only): the seed lab's random 80/20 split with its fixed seed. A
  random split of a time series leaks neighbouring hours into training; it is kept only so the
  numbers can be put next to the seed's recorded valid RMSE of 8029 and MAE of 5502.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import (
    mean_absolute_error,
    mean_absolute_percentage_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import train_test_split

from rayops.workflow.config import Thresholds
from rayops.workflow.features import TIMESTAMP

Metrics = dict[str, float]


def time_split(frame: pd.DataFrame, holdout_weeks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows before / within the last ``holdout_weeks`` weeks (by timestamp, not by row count)."""
    cutoff = frame[TIMESTAMP].max() - pd.Timedelta(weeks=holdout_weeks)
    later = frame[TIMESTAMP] > cutoff
    return frame.loc[~later].reset_index(drop=True), frame.loc[later].reset_index(drop=True)


def seed_split(frame: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed lab's protocol: shuffled 80/20 split with a fixed random state."""
    train, test = train_test_split(frame, test_size=test_fraction, random_state=seed, shuffle=True)
    # Back to time order inside each part: the same rows, and the same blocks for Ray Train.
    return (
        train.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True),
        test.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True),
    )


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> Metrics:
    """RMSE, MAE (target units), MAPE (percent) and R2."""
    actual = np.asarray(actual, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    return {
        "rmse": float(root_mean_squared_error(actual, predicted)),
        "mae": float(mean_absolute_error(actual, predicted)),
        "mape": float(100.0 * mean_absolute_percentage_error(actual, predicted)),
        "r2": float(r2_score(actual, predicted)),
    }


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reasons: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        if self.promoted:
            return "the model beats the baseline and every threshold on the holdout"
        return "; ".join(self.reasons)


def decide_promotion(
    xgb: Metrics,
    baseline: Metrics,
    thresholds: Thresholds,
    live: Metrics | None = None,
    live_run: str | None = None,
    live_problem: str | None = None,
) -> Decision:
    """Promote only if XGBoost beats the baseline's holdout RMSE, meets every threshold and is no worse
    than the live model (``live``: its metrics on the same holdout; None: no live model) by more than
    ``thresholds.live_tolerance``; ``live_problem`` says why the live model could not be scored."""
    reasons = []
    if live_problem:
        reasons.append(f"{live_problem}, so the new model cannot be compared with it")
    if live is not None:
        allowed = live["rmse"] * (1.0 + thresholds.live_tolerance)
        if not xgb["rmse"] <= allowed:
            reasons.append(
                f"xgboost's holdout RMSE {xgb['rmse']:.1f} is worse than the live model's (run {live_run}) "
                f"{live['rmse']:.1f} on the same holdout by more than --live-tolerance "
                f"{thresholds.live_tolerance:g}"
            )
    if not xgb["rmse"] < baseline["rmse"]:
        reasons.append(
            f"xgboost's holdout RMSE {xgb['rmse']:.1f} does not beat the baseline's {baseline['rmse']:.1f}"
        )
    if thresholds.min_r2 is not None and not xgb["r2"] >= thresholds.min_r2:
        reasons.append(f"holdout R2 {xgb['r2']:.4f} is below --min-r2 {thresholds.min_r2:g}")
    for key, limit, flag in (
        ("rmse", thresholds.max_rmse, "--max-rmse"),
        ("mae", thresholds.max_mae, "--max-mae"),
        ("mape", thresholds.max_mape, "--max-mape"),
    ):
        if limit is not None and not xgb[key] <= limit:
            reasons.append(f"holdout {key.upper()} {xgb[key]:.4g} is above {flag} {limit:g}")
    return Decision(promoted=not reasons, reasons=reasons)
