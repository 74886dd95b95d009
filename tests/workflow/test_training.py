"""Stage 3: worker placement, Ray Train XGBoost (two jobs in one run), the linear baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rayops.workflow import training
from rayops.workflow.config import XGBoostParams
from rayops.workflow.features import TARGET


@pytest.mark.parametrize(
    ("requested", "cpus", "nodes", "workers", "strategy", "reason"),
    [
        (3, 1, [2.0, 2.0, 2.0], 3, "STRICT_SPREAD", "3 worker(s) on 3 different node(s) of 3"),
        (2, 1, [2.0, 2.0, 2.0], 2, "STRICT_SPREAD", "on 2 different node(s) of 3"),
        (3, 1, [4.0], 3, "SPREAD", "only 1 node(s) can hold a 1-CPU worker, fewer than the 3 workers"),
        (3, 1, [2.0], 2, "SPREAD", "room for 2 worker(s) of 1 CPU, fewer than the 3 asked for"),
        (3, 2, [2.0, 2.0, 1.0], 2, "SPREAD", "room for 2 worker(s) of 2 CPU"),
        (3, 1, [0.0], 1, "SPREAD", "training with 1 worker(s)"),
    ],
)
def test_plan_workers(
    requested: int, cpus: int, nodes: list[float], workers: int, strategy: str, reason: str
) -> None:
    plan = training.plan_workers(requested, cpus, nodes)
    assert (plan.num_workers, plan.placement_strategy) == (workers, strategy)
    assert reason in plan.reason


def table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.uniform(-2, 2, size=(rows, 3)), columns=["a", "b", "c"])
    frame[TARGET] = 100 * np.sin(2 * frame["a"]) + 40 * (frame["b"] > 0) + rng.normal(0, 1, rows)
    return frame


def test_ray_train_fits_each_job_on_its_own_rows(ray_local: Any, tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    first = table(600, seed=1)
    doubled = first.assign(**{TARGET: 2 * first[TARGET]})
    outcome = training.fit_xgboost(
        {"one": first, "two": doubled},
        names,
        XGBoostParams(num_boost_round=60, eta=0.3, max_depth=4),
        name="unit",
        num_workers=3,
        cpus_per_worker=1,
        report_every=20,
        storage_path=str(tmp_path),
    )
    assert outcome.plan.num_workers == 2  # the local Ray has 2 CPUs: fewer workers, logged
    assert set(outcome.boosters) == {"one", "two"}
    assert set(outcome.boosting_seconds) == {"one", "two"}  # measured inside xgboost.train, per job
    fresh = table(300, seed=2)
    one = training.predict_xgboost(outcome.boosters["one"], fresh, names)
    two = training.predict_xgboost(outcome.boosters["two"], fresh, names)
    assert outcome.boosters["one"].feature_names == names
    assert np.sqrt(np.mean((one - fresh[TARGET]) ** 2)) < 0.2 * fresh[TARGET].std()
    np.testing.assert_allclose(two, 2 * one, rtol=0.1, atol=5.0)


def test_baseline_scaler_is_fitted_on_training_rows_only() -> None:
    names = ["a", "b", "c"]
    train = table(400, seed=3)
    test = table(100, seed=4) + 1000.0
    model = training.fit_baseline(train, names)
    scaler = model.named_steps["standardscaler"]
    np.testing.assert_allclose(scaler.mean_, train[names].mean().to_numpy())
    linear = pd.DataFrame({"a": [0.0, 1.0], "b": [0.0, 0.0], "c": [0.0, 0.0], TARGET: [0.0, 0.0]})
    assert training.predict_baseline(model, linear, names).shape == (2,)
    assert training.predict_baseline(model, test, names).shape == (100,)
