"""Benchmark: Ray Train XGBoost (the workflow's own training path) against plain ``xgboost.train``.

Same rows, same booster parameters, same cores: plain XGBoost uses ``nthread = cores`` in one
process; Ray Train uses ``cores`` workers of one CPU each (what ``--num-workers`` does on a
cluster, all on this one machine here). Two tables:

* ``tetouan``: the workflow's hourly features of the seed lab's CSV (built once, not timed);
* ``synthetic-1m``: 1,000,000 rows x 20 float features with a non-linear target.

Per table it prints the wall time of the boosting itself (inside ``xgboost.train``) and of the
whole job (plain: DMatrix + train; Ray: ``trainer.fit()`` = worker group start, dataset sharding,
DMatrix, boosting, checkpoint to storage, model load), then the Ray/plain ratios.

Run: ``.venv/bin/python bench/bench_train.py [--dataset ../shared/data/powerconsumption.csv]
[--cores 2] [--rounds 100] [--rows 1000000]``. Starts (and stops) its own local Ray.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost

from rayops.workflow import evaluate, features, ingest, training
from rayops.workflow.config import XGBoostParams
from rayops.workflow.features import TARGET

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "powerconsumption.csv"


def tetouan_features(path: str) -> tuple[pd.DataFrame, list[str]]:
    """The workflow's features (Ray Data pipeline), training part of the time-ordered split."""
    table = ingest.parse(ingest.fetch(path), target_zone=1)
    frame = features.build_features(table.frame, target_zone=1).frame
    train, _ = evaluate.time_split(frame, holdout_weeks=4)
    return train, features.feature_columns()


def synthetic(rows: int, columns: int = 20, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    names = [f"x{i:02d}" for i in range(columns)]
    x = rng.normal(size=(rows, columns)).astype("float64")
    y = 10 * np.sin(x[:, 0]) + 5 * (x[:, 1] > 0) * x[:, 2] + x[:, 3] ** 2 + rng.normal(0, 1, rows)
    frame = pd.DataFrame(x, columns=names)
    frame[TARGET] = y
    return frame, names


def plain(frame: pd.DataFrame, names: list[str], params: XGBoostParams, cores: int) -> tuple[float, float]:
    started = time.perf_counter()
    dtrain = xgboost.DMatrix(frame[names], label=frame[TARGET], feature_names=names, nthread=cores)
    boost_started = time.perf_counter()
    xgboost.train(params.booster_params(nthread=cores), dtrain, num_boost_round=params.num_boost_round)
    done = time.perf_counter()
    return done - boost_started, done - started


def ray_train(
    frame: pd.DataFrame, names: list[str], params: XGBoostParams, cores: int, report_every: int
) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as storage:
        outcome = training.fit_xgboost(
            {"bench": frame},
            names,
            params,
            name="bench",
            num_workers=cores,
            cpus_per_worker=1,
            report_every=report_every,
            storage_path=storage,
        )
    return outcome.boosting_seconds["bench"], outcome.seconds, outcome.plan.num_workers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=str(DEFAULT_DATA))
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--report-every", type=int, default=100, help="Ray Train report interval (rounds)")
    args = parser.parse_args()

    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    params = XGBoostParams(num_boost_round=args.rounds)
    tables = {
        "tetouan": tetouan_features(args.dataset),
        f"synthetic-{args.rows // 1000}k": synthetic(args.rows),
    }
    rows = []
    for label, (frame, names) in tables.items():
        p_boost, p_job = plain(frame, names, params, args.cores)
        r_boost, r_job, workers = ray_train(frame, names, params, args.cores, args.report_every)
        rows.append((label, len(frame), len(names), workers, p_boost, r_boost, p_job, r_job))
    ray.shutdown()

    print(
        f"\nbench_train: {args.cores} cores, {args.rounds} rounds, Ray Train reports every "
        f"{args.report_every} rounds; local Ray start (not in any number below): {ray_start:.1f} s"
    )
    header = (
        f"{'table':<16}{'rows':>9}{'feat':>6}{'wrk':>5}"
        f"{'boost plain':>13}{'boost ray':>11}{'ratio':>7}{'job plain':>11}{'job ray':>9}{'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, n, f, workers, p_boost, r_boost, p_job, r_job in rows:
        print(
            f"{label:<16}{n:>9,}{f:>6}{workers:>5}"
            f"{p_boost:>12.2f}s{r_boost:>10.2f}s{r_boost / p_boost:>7.2f}"
            f"{p_job:>10.2f}s{r_job:>8.2f}s{r_job / p_job:>7.2f}"
        )
    print("ratio = Ray Train time / plain xgboost.train time (above 1: Ray is slower)")


if __name__ == "__main__":
    main()
