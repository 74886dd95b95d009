"""Stage 3, train: XGBoost with Ray Train V2 (one worker per node), and the linear baseline.

Determinism: fixed booster seed, ``hist`` trees, one thread per reserved CPU, and the same rows on
the same worker every run (Ray Data's split with ``preserve_order`` and no locality hints, input
blocks built in time order).

Reporting to Ray Train costs a round trip per call (about 2 s per boosting round measured on the
local cloud), so workers report every ``report_every`` rounds and checkpoint only at the end. Both
protocols' boosters are trained in one Ray Train run: the worker group starts once (~30 s here).
"""

from __future__ import annotations

import itertools
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from rayops.workflow.config import XGBoostParams
from rayops.workflow.errors import WorkflowError
from rayops.workflow.features import TARGET

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- worker placement


@dataclass(frozen=True)
class WorkerPlan:
    """How many Ray Train workers, placed how, and why (logged as one line)."""

    num_workers: int
    placement_strategy: str
    reason: str


def plan_workers(requested: int, cpus_per_worker: int, node_cpus: list[float]) -> WorkerPlan:
    """Place ``requested`` workers: one per node (STRICT_SPREAD) when the nodes allow it.

    ``node_cpus`` lists the CPUs of each alive node. Falls back to SPREAD (several workers per node)
    when there are fewer nodes than workers, and to fewer workers when the CPUs do not suffice.
    """
    fits = [int(c // cpus_per_worker) for c in node_cpus]
    nodes = sum(1 for f in fits if f >= 1)
    slots = sum(fits)
    if nodes >= requested:
        return WorkerPlan(
            requested,
            "STRICT_SPREAD",
            f"{requested} worker(s) on {requested} different node(s) of {nodes} (STRICT_SPREAD)",
        )
    if slots >= requested:
        return WorkerPlan(
            requested,
            "SPREAD",
            f"only {nodes} node(s) can hold a {cpus_per_worker}-CPU worker, fewer than the {requested} "
            "workers asked for: placing them with SPREAD, several per node",
        )
    workers = max(1, slots)
    return WorkerPlan(
        workers,
        "SPREAD",
        f"the cluster has room for {slots} worker(s) of {cpus_per_worker} CPU, fewer than the {requested} "
        f"asked for: training with {workers} worker(s) (SPREAD)",
    )


def cluster_node_cpus() -> list[float]:
    """CPUs of every alive node of the connected Ray cluster."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]  # ray.nodes is untyped
    return [float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes if n.get("Alive")]


# ------------------------------------------------------------------------------- Ray Train


class _ReportEveryN(xgboost.callback.TrainingCallback):
    """Reports the last round's eval metrics to Ray Train every ``every`` rounds (not every round:
    each report is a round trip through the controller) and prints a progress line on rank 0."""

    def __init__(self, job: str, every: int, total: int) -> None:
        super().__init__()
        self._job, self._every, self._total = job, every, total

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        import ray.train

        done = epoch + 1
        if done % self._every == 0 and done < self._total:
            report = {
                f"{self._job}/{data}-{metric}": float(values[-1])
                for data, metrics in evals_log.items()
                for metric, values in metrics.items()
            }
            ray.train.report({"round": done, **report})
            if ray.train.get_context().get_world_rank() == 0:
                shown = " ".join(f"{k}={v:.1f}" for k, v in sorted(report.items()))
                # sys.stdout, not print(): Ray Train patches print() into a logger that echoes twice.
                sys.stdout.write(f"[rayops] train: round {done}/{self._total} {shown}\n")
                sys.stdout.flush()
        return False


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker: for each job, its shard -> DMatrix -> distributed
    ``xgboost.train``; then one final report whose checkpoint (rank 0) holds every job's model.
    The final report also carries the seconds spent inside ``xgboost.train`` per job."""
    import ray.train

    features: list[str] = config["features"]
    total: int = config["num_boost_round"]
    boosters = {}
    boosting: dict[str, float] = {}
    for job in config["jobs"]:
        shard = ray.train.get_dataset_shard(f"train_{job}").materialize().to_pandas()
        dtrain = xgboost.DMatrix(shard[features], label=shard[TARGET], feature_names=features)
        started = time.perf_counter()
        boosters[job] = xgboost.train(
            config["params"],
            dtrain,
            num_boost_round=total,
            evals=[(dtrain, "train")],
            verbose_eval=False,
            callbacks=[_ReportEveryN(job, config["report_every"], total)],
        )
        boosting[job] = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            for job, booster in boosters.items():
                booster.save_model(str(Path(tmp, f"{job}.ubj")))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(
            {"round": total, **{f"boosting_s/{job}": s for job, s in boosting.items()}}, checkpoint=checkpoint
        )


def _blocks(frame: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    """Consecutive row ranges, in order: the same split into blocks on every run."""
    edges = np.linspace(0, len(frame), max(1, parts) + 1).astype(int)
    return [frame.iloc[a:b] for a, b in itertools.pairwise(edges) if b > a]


@dataclass(frozen=True)
class TrainOutcome:
    boosters: dict[str, xgboost.Booster]
    seconds: float  # the whole trainer.fit(): worker group start, data, boosting, checkpoint
    boosting_seconds: dict[str, float]  # inside xgboost.train, per job (rank 0)
    plan: WorkerPlan


def fit_xgboost(
    jobs: dict[str, pd.DataFrame],
    features: list[str],
    params: XGBoostParams,
    *,
    name: str,
    num_workers: int,
    cpus_per_worker: int,
    report_every: int,
    storage_path: str,
    storage_filesystem: Any = None,
) -> TrainOutcome:
    """Train one booster per entry of ``jobs`` (name -> training rows) in ONE Ray Train run with
    XGBoostTrainer (one worker group, started once); the models come back in its final checkpoint."""
    import ray.data
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.xgboost import XGBoostTrainer

    plan = plan_workers(num_workers, cpus_per_worker, cluster_node_cpus())
    log.info("train: %s", plan.reason)
    columns = [*features, TARGET]
    datasets: dict[str, Any] = {
        f"train_{job}": ray.data.from_pandas(_blocks(frame[columns], 2 * plan.num_workers))
        for job, frame in jobs.items()
    }
    trainer = XGBoostTrainer(
        train_fn_per_worker,
        train_loop_config={
            "jobs": list(jobs),
            "features": features,
            "params": params.booster_params(nthread=cpus_per_worker),
            "num_boost_round": params.num_boost_round,
            "report_every": report_every,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers,
            resources_per_worker={"CPU": cpus_per_worker},
            placement_strategy=plan.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(
            execution_options=ExecutionOptions(preserve_order=True), enable_shard_locality=False
        ),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as err:  # TrainingFailedError wraps the worker's own exception
        cause = err.__cause__ or err
        text = str(cause).strip()
        raise WorkflowError(
            f"XGBoost training ({name}) failed on the Ray cluster ({type(cause).__name__}: "
            f"{text.splitlines()[0] if text else 'no message'}): see the Ray job logs"
        ) from err
    seconds = time.perf_counter() - started
    if result.checkpoint is None:
        raise WorkflowError(f"XGBoost training ({name}) ended without a checkpoint: see the Ray job logs")
    boosters = {}
    with result.checkpoint.as_directory() as directory:
        for job in jobs:
            booster = xgboost.Booster()
            booster.load_model(str(Path(directory, f"{job}.ubj")))
            boosters[job] = booster
    final = result.metrics or {}
    boosting = {job: float(final[f"boosting_s/{job}"]) for job in jobs if f"boosting_s/{job}" in final}
    return TrainOutcome(boosters=boosters, seconds=seconds, boosting_seconds=boosting, plan=plan)


# ----------------------------------------------------------------------------------- baseline


def fit_baseline(train: pd.DataFrame, features: list[str]) -> Pipeline:
    """The seed's "simple linear regression" on the same features; the scaler sees training rows only."""
    model = make_pipeline(StandardScaler(), LinearRegression())
    model.fit(train[features].to_numpy(), train[TARGET].to_numpy())
    return model


def predict_xgboost(booster: xgboost.Booster, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    matrix = xgboost.DMatrix(frame[features], feature_names=features)
    return np.asarray(booster.predict(matrix), dtype="float64")


def predict_baseline(model: Pipeline, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    return np.asarray(model.predict(frame[features].to_numpy()), dtype="float64")
