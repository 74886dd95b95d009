"""Stage 4: splits, metrics in target units, and the promotion decision."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rayops.workflow import evaluate
from rayops.workflow.config import Thresholds
from rayops.workflow.features import TARGET, TIMESTAMP


def hourly(hours: int) -> pd.DataFrame:
    stamps = pd.date_range("2017-01-08", periods=hours, freq="h")
    return pd.DataFrame({TIMESTAMP: stamps, TARGET: np.arange(hours, dtype=float)})


def test_metrics_in_target_units() -> None:
    m = evaluate.regression_metrics(np.array([100.0, 200.0, 300.0]), np.array([110.0, 190.0, 300.0]))
    assert m["rmse"] == pytest.approx(math.sqrt(200 / 3))
    assert m["mae"] == pytest.approx(20 / 3)
    assert m["mape"] == pytest.approx((10 + 5 + 0) / 3)  # percent
    assert m["r2"] == pytest.approx(1 - 200 / 20000)
    assert set(m) == {"rmse", "mae", "mape", "r2"}


def test_time_split_keeps_the_last_weeks_out() -> None:
    frame = hourly(6 * 168)
    train, test = evaluate.time_split(frame, holdout_weeks=2)
    assert len(test) == 2 * 168
    assert len(train) == 4 * 168
    assert train[TIMESTAMP].max() < test[TIMESTAMP].min()
    assert test[TIMESTAMP].max() == frame[TIMESTAMP].max()


def test_time_split_is_by_time_not_by_row_count() -> None:
    frame = hourly(6 * 168)
    frame = frame.drop(index=range(5 * 168, 5 * 168 + 24)).reset_index(drop=True)  # a day missing
    train, test = evaluate.time_split(frame, holdout_weeks=1)
    assert len(test) == 168 - 24  # the last 7 days, not the last 168 rows
    assert test[TIMESTAMP].min() == frame[TIMESTAMP].max() - pd.Timedelta(hours=167) + pd.Timedelta(hours=24)
    assert train[TIMESTAMP].max() == pd.Timestamp("2017-01-08") + pd.Timedelta(hours=5 * 168 - 1)


def test_seed_split_is_the_seeds_random_80_20() -> None:
    frame = hourly(1000)
    train, test = evaluate.seed_split(frame, 0.2, seed=42)
    again_train, again_test = evaluate.seed_split(frame, 0.2, seed=42)
    _, other_test = evaluate.seed_split(frame, 0.2, seed=7)
    assert (len(train), len(test)) == (800, 200)
    assert set(train[TARGET]).isdisjoint(test[TARGET])
    assert set(train[TARGET]) | set(test[TARGET]) == set(frame[TARGET])
    pd.testing.assert_frame_equal(test, again_test)
    pd.testing.assert_frame_equal(train, again_train)
    assert set(test[TARGET]) != set(other_test[TARGET])
    # random, not the tail: test rows are spread over the whole period
    assert test[TIMESTAMP].min() < frame[TIMESTAMP].iloc[100]


GOOD = {"rmse": 100.0, "mae": 80.0, "mape": 2.0, "r2": 0.95}
BASE = {"rmse": 150.0, "mae": 120.0, "mape": 3.0, "r2": 0.90}


def test_promote_when_better_than_baseline_and_thresholds() -> None:
    decision = evaluate.decide_promotion(GOOD, BASE, Thresholds(min_r2=0.9, max_rmse=120, max_mape=2.5))
    assert decision.promoted
    assert decision.reasons == []


def test_no_promotion_when_the_baseline_is_better() -> None:
    decision = evaluate.decide_promotion(GOOD, {**BASE, "rmse": 99.0}, Thresholds(min_r2=None))
    assert not decision.promoted
    assert decision.sentence() == "xgboost's holdout RMSE 100.0 does not beat the baseline's 99.0"


def test_equal_to_baseline_is_not_better() -> None:
    assert not evaluate.decide_promotion(GOOD, {**BASE, "rmse": 100.0}, Thresholds()).promoted


@pytest.mark.parametrize(
    ("thresholds", "reason"),
    [
        (Thresholds(min_r2=0.99), "holdout R2 0.9500 is below --min-r2 0.99"),
        (Thresholds(min_r2=None, max_rmse=50), "holdout RMSE 100 is above --max-rmse 50"),
        (Thresholds(min_r2=None, max_mae=10), "holdout MAE 80 is above --max-mae 10"),
        (Thresholds(min_r2=None, max_mape=1.5), "holdout MAPE 2 is above --max-mape 1.5"),
    ],
)
def test_each_threshold_blocks_promotion(thresholds: Thresholds, reason: str) -> None:
    decision = evaluate.decide_promotion(GOOD, BASE, thresholds)
    assert not decision.promoted
    assert decision.reasons == [reason]
