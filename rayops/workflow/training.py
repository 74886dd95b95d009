"""Stage 3, train: XGBoost in one process or on a Ray Train V2 worker group, and the linear baseline.

Execution (``choose_execution``): a training table small enough for one process is boosted by
``xgboost.train`` in the driver with every physical core of its machine (no worker group, no data
sharding, no cluster); a larger one by Ray Train's ``XGBoostTrainer`` on a worker group of at most
one worker per physical core, one per node (``STRICT_SPREAD``) where the nodes allow it. Both run
``boost_jobs``. Distributed XGBoost pays a worker-group start (seconds) and an allreduce of
histograms per tree level, which a table that one machine boosts in seconds never wins back.
``--num-workers 0`` forces one process, ``--num-workers N`` a worker group of N (capped by the
cluster). Ray Train's own local mode (``num_workers=0``) was measured too: the same boosting, plus
its import (1.4 s here, about 3 s on a loaded head) and nothing it adds in one process (its
checkpoint is only a reference to a local folder).

Determinism: fixed booster seed, ``hist`` trees, a fixed thread count, and (distributed) the same
rows on the same worker every run (Ray Data's split with ``preserve_order`` and no locality hints,
input blocks built in time order).

Reporting and fault tolerance: every ``ray.train.report`` waits for the controller's poll (2 s by
default; ``HEALTH_CHECK_INTERVAL_S`` here), so workers report every ``checkpoint_every`` rounds, each
time with a checkpoint (rank 0: every job's booster so far and where it stands) in the run's storage
(``storage_path``, the models bucket), and once at the end. A worker lost mid-run (a raylet killed, a
machine stopped) fails the attempt; Ray Train restarts the worker group up to ``max_failures`` times
(``FailureConfig``), and the new workers continue from the latest checkpoint (``ray.train.get_checkpoint``
-> ``xgboost.train(xgb_model=...)``). A driver resubmitted with the same run id (same run name and
storage) resumes the same way: Ray Train V2 restores a run from its (storage_path, name).
What resuming changes: an undisturbed run is deterministic as before; a resumed one boosts the rounds
after the checkpoint with XGBoost's row and column samplers restarted from ``seed``, so its trees from
there differ from an undisturbed run's (same data, same parameters: the metrics differ by noise, not
by quality). The metrics record the round each job resumed from.
A worker group that cannot be placed (a node gone, CPUs held by another job) fails after
``placement_timeout_s`` (Ray Train's worker group start timeout, not retried) with one sentence naming
what was asked and what the alive nodes offer. rank 0 prints a progress line every ``report_every``
rounds. Both protocols' boosters are trained in one Ray Train run: the worker group starts once.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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

#: Training tables of at most this many values (rows x features) train in one process when the
#: worker count is "auto": 50M float64 values are 400 MB, which the driver already holds as a
#: frame; bench/bench_train.py shows one process is faster than a worker group at 1M x 20.
LOCAL_MAX_VALUES = 50_000_000
#: The Ray Train controller's poll interval we set (its default, 2 s, delays every report).
HEALTH_CHECK_INTERVAL_S = "0.1"
_HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
#: Ray Train V2's bound on starting (placing) a worker group; we set it from ``placement_timeout_s``.
_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
#: The checkpoint's record of where each job stands (the boosters sit beside it as ``<job>.ubj``).
_STATE_FILE = "rayops_state.json"


# --------------------------------------------------------------------------- worker placement


@dataclass(frozen=True)
class WorkerPlan:
    """How training runs (one process, or how many Ray Train workers placed how), and why."""

    num_workers: int  # 0: one process (xgboost.train in the driver)
    placement_strategy: str | None  # None for one process
    reason: str
    nthread: int = 1  # XGBoost threads per process

    @property
    def mode(self) -> str:
        return "local" if self.num_workers == 0 else "distributed"


def physical_cores(cpuinfo: str | None = None) -> int:
    """Physical cores this process may use: distinct (physical id, core id) pairs of /proc/cpuinfo,
    at most the CPUs of its affinity mask (logical CPUs where cpuinfo does not say)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return logical
    cores: set[tuple[str, str]] = set()
    for block in cpuinfo.split("\n\n"):
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines())
        )
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return min(len(cores), logical) if cores else logical


def choose_execution(
    requested: int | None, rows: int, features: int, cpus_per_worker: int, local_cores: int
) -> WorkerPlan | None:
    """One process (a ``WorkerPlan`` with ``num_workers=0``), or None for a worker group.

    ``requested`` is ``--num-workers``: None is "auto" (one process up to ``LOCAL_MAX_VALUES``
    values), 0 forces one process, N >= 1 forces a worker group (placed by ``plan_workers``)."""
    values = rows * features
    if requested == 0:
        return WorkerPlan(
            0, None, f"one process with {local_cores} thread(s), as asked (--num-workers 0)", local_cores
        )
    if requested is not None:
        return None
    if values <= LOCAL_MAX_VALUES:
        return WorkerPlan(
            0,
            None,
            f"one process with {local_cores} thread(s) (xgboost.train in the driver): the table has "
            f"{rows:,} rows x {features} features = {values:,} values <= {LOCAL_MAX_VALUES:,}, where a "
            "worker group's start and per-level allreduce cost more than they save "
            "(--num-workers N forces N workers)",
            local_cores,
        )
    return None


def plan_workers(
    requested: int | None, cpus_per_worker: int, node_cpus: list[float], cores: int | None = None
) -> WorkerPlan:
    """Place a worker group: ``requested`` workers (None: one per node), one per node (STRICT_SPREAD)
    when the nodes allow it, never more than the cluster's ``cores`` (physical cores) allow.

    ``node_cpus`` lists the CPUs of each alive node. Falls back to SPREAD (several workers per node)
    when there are fewer nodes than workers, and to fewer workers when the CPUs do not suffice.
    """
    fits = [int(c // cpus_per_worker) for c in node_cpus]
    nodes = sum(1 for f in fits if f >= 1)
    slots = sum(fits)
    auto = requested is None
    wanted = max(1, nodes) if requested is None else requested
    capped = ""
    if cores is not None and wanted * cpus_per_worker > cores:
        limit = max(1, cores // cpus_per_worker)
        capped = (
            f"the cluster has {cores} physical core(s), room for {limit} worker(s) of {cpus_per_worker} "
            f"CPU, not {wanted}; "
        )
        wanted = limit
    asked = "" if auto else f" (--num-workers {requested})"
    if nodes >= wanted:
        return WorkerPlan(
            wanted,
            "STRICT_SPREAD",
            f"{capped}{wanted} worker(s) on {wanted} different node(s) of {nodes} (STRICT_SPREAD){asked}",
            cpus_per_worker,
        )
    if slots >= wanted:
        return WorkerPlan(
            wanted,
            "SPREAD",
            f"{capped}only {nodes} node(s) can hold a {cpus_per_worker}-CPU worker, fewer than the {wanted} "
            f"workers asked for{asked}: placing them with SPREAD, several per node",
            cpus_per_worker,
        )
    workers = max(1, slots)
    return WorkerPlan(
        workers,
        "SPREAD",
        f"{capped}the cluster has room for {slots} worker(s) of {cpus_per_worker} CPU, fewer than the "
        f"{wanted} asked for{asked}: training with {workers} worker(s) (SPREAD)",
        cpus_per_worker,
    )


def cluster_node_cpus() -> list[float]:
    """CPUs of every alive node of the connected Ray cluster."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]  # ray.nodes is untyped
    return [float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes if n.get("Alive")]


def host_key(proc_stat: str, meminfo: str, release: str) -> str:
    """What nodes on one machine share: the kernel's boot time (``btime``), its release and the
    memory size. Containers on one host (the local cloud's machines) share all three; nspawn gives
    each its own boot_id, so that cannot tell. Two hosts of one type booted in the same second
    would count as one: fewer workers, never more than the cores."""
    btime = next((line.split()[1] for line in proc_stat.splitlines() if line.startswith("btime ")), "?")
    total = next((line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:")), "?")
    return f"{btime}/{release}/{total}"


def _host_of_node() -> tuple[str, int]:
    """(host key, physical cores) of the machine this runs on (see ``host_key``)."""
    try:
        stat = Path("/proc/stat").read_text(encoding="utf-8")
        meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return os.uname().nodename, physical_cores()
    return host_key(stat, meminfo, os.uname().release), physical_cores()


def cluster_physical_cores() -> int:
    """Physical cores behind the alive nodes, each host counted once (one zero-CPU task per node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_host_of_node)
    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]  # untyped
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes
    ]
    hosts = dict(ray.get(refs, timeout=60))
    return sum(hosts.values())


# ------------------------------------------------------------------------------- Ray Train


class _ProgressEveryN(xgboost.callback.TrainingCallback):
    """Prints the last round's eval metrics every ``every`` rounds, on rank 0 only, and calls
    ``checkpoint(job, round, booster)`` every ``checkpoint_every`` rounds before the last (on every
    worker: a Ray Train report is collective). Rounds count from ``start`` (a resumed booster's)."""

    def __init__(
        self,
        job: str,
        every: int,
        total: int,
        rank0: bool,
        *,
        start: int = 0,
        checkpoint_every: int = 0,
        checkpoint: Callable[[str, int, xgboost.Booster], None] | None = None,
    ) -> None:
        super().__init__()
        self._job, self._every, self._total, self._rank0 = job, every, total, rank0
        self._start, self._checkpoint_every, self._checkpoint = start, checkpoint_every, checkpoint

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        done = self._start + epoch + 1
        if self._rank0 and done % self._every == 0 and done < self._total:
            shown = " ".join(
                f"{self._job}/{data}-{metric}={float(values[-1]):.1f}"
                for data, metrics in sorted(evals_log.items())
                for metric, values in sorted(metrics.items())
            )
            # sys.stdout, not print(): Ray Train patches print() into a logger that echoes twice.
            sys.stdout.write(f"[rayops] train: round {done}/{self._total} {shown}\n")
            sys.stdout.flush()
        if (
            self._checkpoint is not None
            and self._checkpoint_every
            and done % self._checkpoint_every == 0
            and done < self._total
        ):
            self._checkpoint(self._job, done, model)
        return False


def boost_jobs(
    config: dict[str, Any],
    rows_of: Callable[[str], pd.DataFrame],
    rank0: bool,
    *,
    resume: dict[str, tuple[int, xgboost.Booster]] | None = None,
    checkpoint: Callable[[str, int, dict[str, xgboost.Booster]], None] | None = None,
) -> tuple[dict[str, xgboost.Booster], dict[str, float]]:
    """For each job: its rows -> DMatrix -> ``xgboost.train`` (across the worker group when called
    on Ray Train workers, else in this process). Returns the boosters and the seconds spent inside
    ``xgboost.train`` per job. The one code path of both execution modes.

    ``resume`` maps a job to (rounds done, booster) from a checkpoint: a finished job is not boosted
    again, an unfinished one continues (``xgb_model``). ``checkpoint(job, round, boosters)`` is called
    every ``config["checkpoint_every"]`` rounds with every job's booster so far."""
    features: list[str] = config["features"]
    total: int = config["num_boost_round"]
    resume = resume or {}
    boosters: dict[str, xgboost.Booster] = {}
    boosting: dict[str, float] = {}
    for job in config["jobs"]:
        start, previous = resume.get(job, (0, None))
        if previous is not None and start >= total:
            boosters[job] = previous
            continue
        shard = rows_of(job)
        dtrain = xgboost.DMatrix(
            shard[features], label=shard[TARGET], feature_names=features, nthread=config["params"]["nthread"]
        )

        def save(name: str, done: int, booster: xgboost.Booster) -> None:
            if checkpoint is not None:
                checkpoint(name, done, {**boosters, name: booster})

        started = time.perf_counter()
        boosters[job] = xgboost.train(
            config["params"],
            dtrain,
            num_boost_round=total - start,
            evals=[(dtrain, "train")],
            verbose_eval=False,
            xgb_model=previous,
            callbacks=[
                _ProgressEveryN(
                    job,
                    config["report_every"],
                    total,
                    rank0,
                    start=start,
                    checkpoint_every=int(config.get("checkpoint_every") or 0),
                    checkpoint=save,
                )
            ],
        )
        boosting[job] = time.perf_counter() - started
    return boosters, boosting


def save_checkpoint(directory: Path, rounds: dict[str, int], boosters: dict[str, xgboost.Booster]) -> None:
    """Write every job's booster and the rounds each has done into ``directory``."""
    for job, booster in boosters.items():
        booster.save_model(str(directory / f"{job}.ubj"))
    (directory / _STATE_FILE).write_text(json.dumps({"rounds": rounds}), encoding="utf-8")


def load_checkpoint(directory: Path) -> dict[str, tuple[int, xgboost.Booster]]:
    """The (rounds done, booster) of each job in a checkpoint folder ``save_checkpoint`` wrote."""
    state = json.loads((directory / _STATE_FILE).read_text(encoding="utf-8"))
    found: dict[str, tuple[int, xgboost.Booster]] = {}
    for job, done in state["rounds"].items():
        booster = xgboost.Booster()
        booster.load_model(str(directory / f"{job}.ubj"))
        found[job] = (int(done), booster)
    return found


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker: ``boost_jobs`` on the worker's shards, resumed from Ray Train's
    latest checkpoint if this is a restart, a report with a checkpoint every ``checkpoint_every`` rounds,
    then one final report whose checkpoint (rank 0) holds every job's model and whose metrics carry the
    boosting seconds and the round each job resumed from."""
    import ray.train

    rank0 = ray.train.get_context().get_world_rank() == 0
    resume: dict[str, tuple[int, xgboost.Booster]] = {}
    latest = ray.train.get_checkpoint()
    if latest is not None:
        with latest.as_directory() as directory:
            resume = load_checkpoint(Path(directory))
        if rank0:
            where = ", ".join(f"{job} at round {done}" for job, (done, _) in sorted(resume.items()))
            sys.stdout.write(f"[rayops] train: resuming from the last checkpoint ({where})\n")
            sys.stdout.flush()
    total = config["num_boost_round"]

    def report(rounds: dict[str, int], boosters: dict[str, xgboost.Booster], metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank0:
                save_checkpoint(Path(tmp), rounds, boosters)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    def periodic(job: str, done: int, boosters: dict[str, xgboost.Booster]) -> None:
        rounds = {name: (done if name == job else total) for name in boosters}
        report(rounds, boosters, {"round": done, "job": job})

    boosters, boosting = boost_jobs(
        config,
        lambda job: ray.train.get_dataset_shard(f"train_{job}").materialize().to_pandas(),
        rank0,
        resume=resume,
        checkpoint=periodic,
    )
    final = {
        "round": total,
        **{f"boosting_s/{job}": s for job, s in boosting.items()},
        **{f"resumed_from/{job}": done for job, (done, _) in resume.items()},
    }
    report({job: total for job in boosters}, boosters, final)


def _blocks(frame: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    """Consecutive row ranges, in order: the same split into blocks on every run."""
    edges = np.linspace(0, len(frame), max(1, parts) + 1).astype(int)
    return [frame.iloc[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


@dataclass(frozen=True)
class TrainOutcome:
    boosters: dict[str, xgboost.Booster]
    seconds: float  # the whole trainer.fit(): worker group start, data, boosting, checkpoint
    boosting_seconds: dict[str, float]  # inside xgboost.train, per job (rank 0), in the last attempt
    plan: WorkerPlan
    resumed_from: dict[str, int] = field(default_factory=dict)  # job -> round it resumed from (a restart)


def fit_xgboost(
    jobs: dict[str, pd.DataFrame],
    features: list[str],
    params: XGBoostParams,
    *,
    name: str,
    num_workers: int | None,
    cpus_per_worker: int,
    report_every: int,
    storage_path: str,
    storage_filesystem: Any = None,
    before_cluster: Callable[[], None] | None = None,
    checkpoint_every: int = 0,
    max_failures: int = 0,
    placement_timeout_s: float = 180.0,
) -> TrainOutcome:
    """Train one booster per entry of ``jobs`` (name -> training rows) in ONE Ray Train run with
    XGBoostTrainer and one worker group started once, or in this process (see the module docstring).
    ``num_workers``: None (auto), 0 (one process) or N (a worker group of N). ``before_cluster``
    (e.g. connecting to Ray) is called only for a worker group: one process needs no cluster.
    ``checkpoint_every`` (0: only the final report), ``max_failures`` and ``placement_timeout_s``:
    see the module docstring (they matter for a worker group only)."""
    rows = max((len(frame) for frame in jobs.values()), default=0)
    plan = choose_execution(num_workers, rows, len(features), cpus_per_worker, physical_cores())
    if plan is None:
        if before_cluster is not None:
            before_cluster()
        plan = plan_workers(num_workers, cpus_per_worker, cluster_node_cpus(), cluster_physical_cores())
    log.info("train: %s", plan.reason)
    columns = [*features, TARGET]
    loop_config: dict[str, Any] = {
        "jobs": list(jobs),
        "features": features,
        "params": params.booster_params(nthread=plan.nthread),
        "num_boost_round": params.num_boost_round,
        "report_every": report_every,
        "checkpoint_every": checkpoint_every,
    }
    started = time.perf_counter()
    if plan.num_workers == 0:
        try:
            boosters, boosting = boost_jobs(loop_config, lambda job: jobs[job][columns], rank0=True)
        except xgboost.core.XGBoostError as err:
            text = str(err).strip()
            raise WorkflowError(
                f"XGBoost training ({name}) failed ({text.splitlines()[0] if text else 'no message'}): "
                "see the job log"
            ) from err
        return TrainOutcome(boosters, time.perf_counter() - started, boosting, plan)

    import ray.data
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.v2.api.config import FailureConfig  # what ray.train.FailureConfig is under Train V2
    from ray.train.xgboost import XGBoostTrainer

    datasets: dict[str, Any] = {
        f"train_{job}": ray.data.from_pandas(_blocks(frame[columns], 2 * plan.num_workers))
        for job, frame in jobs.items()
    }
    # The controller reads it from the driver's environment (Ray Train propagates it).
    os.environ.setdefault(_HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_S)
    os.environ[_START_TIMEOUT_ENV] = f"{placement_timeout_s:g}"
    trainer = XGBoostTrainer(
        train_fn_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers,
            resources_per_worker={"CPU": cpus_per_worker},
            placement_strategy=plan.placement_strategy or "SPREAD",
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # A lost worker restarts the group from the latest checkpoint; a group that cannot be placed
            # within placement_timeout_s is not retried (Ray Train's own default retries it forever).
            failure_config=FailureConfig(max_failures=max_failures, controller_failure_limit=0),
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
        if _is_start_timeout(err):
            raise WorkflowError(
                unplaceable_sentence(name, plan, placement_timeout_s, _alive_nodes())
            ) from err
        cause = err.__cause__ or err
        text = str(cause).strip()
        raise WorkflowError(
            f"XGBoost training ({name}) failed on the Ray cluster ({type(cause).__name__}: "
            f"{text.splitlines()[0] if text else 'no message'}): see the Ray job logs"
        ) from err
    seconds = time.perf_counter() - started
    if result.checkpoint is None:
        raise WorkflowError(f"XGBoost training ({name}) ended without a checkpoint: see the Ray job logs")
    with result.checkpoint.as_directory() as directory:
        found = load_checkpoint(Path(directory))
    missing = sorted(set(jobs) - set(found))
    if missing:
        raise WorkflowError(
            f"XGBoost training ({name}) ended without the model(s) of {', '.join(missing)}: "
            "see the Ray job logs"
        )
    boosters = {job: found[job][1] for job in jobs}
    final = result.metrics or {}
    boosting = {job: float(final[f"boosting_s/{job}"]) for job in jobs if f"boosting_s/{job}" in final}
    resumed = {job: int(final[f"resumed_from/{job}"]) for job in jobs if f"resumed_from/{job}" in final}
    if resumed:
        log.info(
            "train: resumed from a checkpoint (%s)",
            ", ".join(f"{j} at round {r}" for j, r in resumed.items()),
        )
    return TrainOutcome(boosters, seconds, boosting, plan, resumed)


def _is_start_timeout(err: BaseException) -> bool:
    """Whether Ray Train gave up starting the worker group (its WorkerGroupStartupTimeoutError, carried
    as a ControllerError's ``controller_failure`` or in the exception chain)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__name__ == "WorkerGroupStartupTimeoutError":
            return True
        todo += [current.__cause__, current.__context__, getattr(current, "controller_failure", None)]
    return False


def _alive_nodes() -> list[tuple[float, float]]:
    """(CPUs, free CPUs) of each alive node, as the GCS sees them now (empty if it cannot say)."""
    try:
        from ray._private import state

        total = state.total_resources_per_node()  # type: ignore[no-untyped-call]  # Ray's own, untyped
        free = state.available_resources_per_node()  # type: ignore[no-untyped-call]  # Ray's own, untyped
        return [(float(r.get("CPU", 0.0)), float(free.get(n, {}).get("CPU", 0.0))) for n, r in total.items()]
    except Exception:  # the sentence is built without the figures then
        return []


def unplaceable_sentence(
    name: str, plan: WorkerPlan, timeout_s: float, nodes: list[tuple[float, float]]
) -> str:
    """The one sentence of a worker group Ray could not place within the bound."""
    need = plan.nthread
    where = (
        "each on a different node (STRICT_SPREAD)"
        if plan.placement_strategy == "STRICT_SPREAD"
        else "(SPREAD)"
    )
    if nodes:
        fitting = sum(1 for _, free in nodes if free >= need)
        have = (
            f"the cluster has {len(nodes)} alive node(s) with "
            f"{', '.join(f'{free:g} of {cpus:g}' for cpus, free in nodes)} CPU(s) free, "
            f"{fitting} of them with {need} free"
        )
    else:
        have = "the cluster's nodes could not be read"
    return (
        f"XGBoost training ({name}) could not place {plan.num_workers} worker(s) of {need} CPU {where} "
        f"within {timeout_s:g} s (placement_timeout_s): {have}; start the missing node(s), wait for the "
        "other job holding the CPUs, or pass fewer num_workers"
    )


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
