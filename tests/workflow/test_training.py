"""Stage 3: one process or a worker group (the choice and its reason), worker placement, Ray Train
XGBoost (two jobs in one run, in one process and distributed), the linear baseline."""

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
    assert plan.mode == "distributed"
    assert reason in plan.reason


@pytest.mark.parametrize(
    ("requested", "cpus", "nodes", "cores", "workers", "strategy", "reason"),
    [
        # the local cloud: 3 nodes of 1 CPU sharing a 2-core host
        (
            3,
            1,
            [1.0, 1.0, 1.0],
            2,
            2,
            "STRICT_SPREAD",
            "2 physical core(s), room for 2 worker(s) of 1 CPU, not 3",
        ),
        (None, 1, [1.0, 1.0, 1.0], 2, 2, "STRICT_SPREAD", "not 3; 2 worker(s) on 2 different node(s)"),
        (None, 1, [2.0, 2.0, 2.0], 6, 3, "STRICT_SPREAD", "3 worker(s) on 3 different node(s) of 3"),
        (4, 2, [4.0, 4.0], 4, 2, "STRICT_SPREAD", "room for 2 worker(s) of 2 CPU, not 4"),
        (2, 1, [2.0], 8, 2, "SPREAD", "workers asked for (--num-workers 2)"),
    ],
)
def test_no_more_workers_than_physical_cores(
    requested: int | None,
    cpus: int,
    nodes: list[float],
    cores: int,
    workers: int,
    strategy: str,
    reason: str,
) -> None:
    plan = training.plan_workers(requested, cpus, nodes, cores)
    assert (plan.num_workers, plan.placement_strategy) == (workers, strategy)
    assert reason in plan.reason


def test_auto_trains_a_small_table_in_one_process_with_every_core() -> None:
    plan = training.choose_execution(None, rows=8_000, features=87, cpus_per_worker=1, local_cores=2)
    assert plan is not None
    assert (plan.mode, plan.num_workers, plan.placement_strategy, plan.nthread) == ("local", 0, None, 2)
    assert "8,000 rows x 87 features = 696,000 values <= 50,000,000" in plan.reason
    assert "--num-workers N forces" in plan.reason


def test_auto_distributes_a_table_too_big_for_one_process() -> None:
    rows = training.LOCAL_MAX_VALUES // 20 + 1
    assert training.choose_execution(None, rows, 20, cpus_per_worker=1, local_cores=2) is None
    edge = training.choose_execution(None, training.LOCAL_MAX_VALUES // 20, 20, 1, 2)
    assert edge is not None and edge.mode == "local"


@pytest.mark.parametrize("rows", [100, 10**9])
def test_num_workers_forces_either_way(rows: int) -> None:
    forced_local = training.choose_execution(0, rows, 20, cpus_per_worker=1, local_cores=4)
    assert forced_local is not None
    assert (forced_local.num_workers, forced_local.nthread) == (0, 4)
    assert "as asked (--num-workers 0)" in forced_local.reason
    assert training.choose_execution(3, rows, 20, cpus_per_worker=1, local_cores=4) is None


HYPERTHREADED = "\n\n".join(
    f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i % 2}\nflags\t\t: ht" for i in range(4)
)


def test_host_key_is_shared_by_containers_of_one_kernel_only() -> None:
    stat = "cpu  1 2 3\nbtime 1764581280\nprocesses 9\n"
    mem = "MemTotal:       24576000 kB\nMemFree: 1 kB\n"
    same = training.host_key(stat, mem, "6.1.0")
    assert same == training.host_key(stat, mem, "6.1.0") == "1764581280/6.1.0/24576000"
    assert training.host_key(stat.replace("1764581280", "1764581999"), mem, "6.1.0") != same  # booted apart
    assert training.host_key(stat, mem.replace("24576000", "8000000"), "6.1.0") != same  # other size
    assert training.host_key(stat, mem, "6.8.0") != same


def test_physical_cores_count_cores_not_hyperthreads() -> None:
    logical = training.physical_cores("")  # nothing to read: the affinity mask
    assert logical >= 1
    assert training.physical_cores(HYPERTHREADED) == min(2, logical)
    assert training.physical_cores("processor\t: 0\n\nprocessor\t: 1\n") == logical  # no core ids


def table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.uniform(-2, 2, size=(rows, 3)), columns=["a", "b", "c"])
    frame[TARGET] = 100 * np.sin(2 * frame["a"]) + 40 * (frame["b"] > 0) + rng.normal(0, 1, rows)
    return frame


def _check_jobs(outcome: training.TrainOutcome, names: list[str]) -> None:
    assert set(outcome.boosters) == {"one", "two"}
    assert set(outcome.boosting_seconds) == {"one", "two"}  # measured inside xgboost.train, per job
    fresh = table(300, seed=2)
    one = training.predict_xgboost(outcome.boosters["one"], fresh, names)
    two = training.predict_xgboost(outcome.boosters["two"], fresh, names)
    assert outcome.boosters["one"].feature_names == names
    assert outcome.boosters["one"].num_boosted_rounds() == 60
    assert np.sqrt(np.mean((one - fresh[TARGET]) ** 2)) < 0.2 * fresh[TARGET].std()
    np.testing.assert_allclose(two, 2 * one, rtol=0.1, atol=5.0)


def _fit(tmp_path: Path, num_workers: int | None) -> training.TrainOutcome:
    first = table(600, seed=1)
    doubled = first.assign(**{TARGET: 2 * first[TARGET]})
    return training.fit_xgboost(
        {"one": first, "two": doubled},
        ["a", "b", "c"],
        XGBoostParams(num_boost_round=60, eta=0.3, max_depth=4),
        name="unit",
        num_workers=num_workers,
        cpus_per_worker=1,
        report_every=20,
        storage_path=str(tmp_path),
    )


def test_ray_train_distributed_fits_each_job_on_its_own_rows(ray_local: Any, tmp_path: Path) -> None:
    outcome = _fit(tmp_path, num_workers=3)
    assert outcome.plan.mode == "distributed"
    assert outcome.plan.num_workers == 2  # the local Ray has 2 CPUs: fewer workers, logged
    _check_jobs(outcome, ["a", "b", "c"])


def test_one_process_fits_each_job_and_is_the_auto_choice(tmp_path: Path) -> None:
    """No Ray needed (no fixture): one process boosts in the driver."""
    auto = _fit(tmp_path / "auto", num_workers=None)
    assert (auto.plan.mode, auto.plan.num_workers, auto.plan.nthread) == (
        "local",
        0,
        training.physical_cores(),
    )
    _check_jobs(auto, ["a", "b", "c"])
    forced = _fit(tmp_path / "forced", num_workers=0)
    assert forced.plan.mode == "local"
    assert "as asked (--num-workers 0)" in forced.plan.reason
    # one process, same threads: the same model, to the last bit
    for job in ("one", "two"):
        assert forced.boosters[job].save_raw("json") == auto.boosters[job].save_raw("json")


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
