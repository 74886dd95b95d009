"""Issue 16, item 2: a Ray Train worker group survives a lost worker (restart from the last checkpoint)
and a worker group that cannot be placed fails within the bound with one sentence. On a local Ray of
2 CPUs (the module's fixture): the faults are real (a worker process SIGKILLed, CPUs held by an actor)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_training import table

from rayops.workflow import training
from rayops.workflow.config import XGBoostParams
from rayops.workflow.errors import WorkflowError
from rayops.workflow.features import TARGET

# Timing-sensitive fault rows: `make test` runs them alone (tests/lanes.py, stage 3), not beside Molecule.
pytestmark = pytest.mark.solo

ROUNDS = 300  # 30 checkpoints per job: the kill lands well before the end


def _fit(storage: Path, **faults: Any) -> training.TrainOutcome:
    first = table(600, seed=1)
    return training.fit_xgboost(
        {"one": first, "two": first.assign(**{TARGET: 2 * first[TARGET]})},
        ["a", "b", "c"],
        XGBoostParams(num_boost_round=ROUNDS, eta=0.1, max_depth=4),
        name="unit",
        num_workers=2,
        cpus_per_worker=1,
        report_every=1000,
        storage_path=str(storage),
        **faults,
    )


def _registered_checkpoint(storage: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint of this run: its checkpoint manager
    writes checkpoint_manager_snapshot.json with the latest one when it registers it, and that is what a
    restarted worker group is given. (A checkpoint folder in storage is not enough: a worker uploads it,
    then waits in its one-slot result queue for the controller's next poll; killed there, the group
    restarts from the checkpoint before, or from round 0. On an idle CI host that happened twice.)"""
    for snapshot in storage.glob("**/checkpoint_manager_snapshot.json"):
        try:
            if json.loads(snapshot.read_text(encoding="utf-8")).get("latest_checkpoint_result"):
                return True
        except (OSError, ValueError):  # being written: look again
            continue
    return False


def _kill_a_worker_after_the_first_checkpoint(storage: Path, killed: list[int]) -> None:
    """SIGKILL one Ray Train worker process once the controller has registered a checkpoint. Only this
    test's own processes are looked at: the local Ray's processes are descendants of this one."""
    import psutil

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _registered_checkpoint(storage):
        time.sleep(0.02)
    for process in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(process.cmdline()):
                os.kill(process.pid, signal.SIGKILL)
                killed.append(process.pid)
                return
        except psutil.Error:
            continue


def test_lost_worker_resumes_from_the_last_checkpoint(ray_local: Any, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_the_first_checkpoint, args=(storage, killed))
    killer.start()
    started = time.perf_counter()
    outcome = _fit(storage, checkpoint_every=10, max_failures=2)
    took = time.perf_counter() - started
    killer.join()
    assert killed, "no Ray Train worker was found to kill"
    # The restarted group resumed a job from a checkpoint round (a multiple of checkpoint_every), not 0.
    assert outcome.resumed_from, "the run did not resume from a checkpoint"
    assert all(done > 0 and done % 10 == 0 for done in outcome.resumed_from.values()), outcome.resumed_from
    fresh = table(300, seed=2)
    for job in ("one", "two"):
        assert outcome.boosters[job].num_boosted_rounds() == ROUNDS
    one = training.predict_xgboost(outcome.boosters["one"], fresh, ["a", "b", "c"])
    assert np.sqrt(np.mean((one - fresh[TARGET]) ** 2)) < 0.2 * fresh[TARGET].std()
    print(f"worker killed after a checkpoint: run done in {took:.1f} s, resumed {outcome.resumed_from}")


def test_without_retries_a_lost_worker_fails_the_run(ray_local: Any, tmp_path: Path) -> None:
    """The guard of the test above: with max_failures=0 the same fault fails the run."""
    storage = tmp_path / "storage"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_the_first_checkpoint, args=(storage, killed))
    killer.start()
    with pytest.raises(WorkflowError, match=r"XGBoost training \(unit\) failed on the Ray cluster"):
        _fit(storage, checkpoint_every=10, max_failures=0)
    killer.join()
    assert killed


def test_unplaceable_worker_group_fails_within_the_bound(ray_local: Any, tmp_path: Path) -> None:
    """Another job holds one of the 2 CPUs: a group of 2 workers cannot start; the run fails after
    placement_timeout_s (not Ray Train's endless retries) with the sentence naming what was asked and what
    is free. (Holding both CPUs would block Ray Data's own tasks before Ray Train even starts.)"""
    import ray

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()  # type: ignore[attr-defined]  # ray.remote's class wrapper is untyped
    ray.get(holder.ready.remote())
    try:
        started = time.monotonic()
        with pytest.raises(WorkflowError) as caught:
            _fit(tmp_path / "storage", placement_timeout_s=10)
        took = time.monotonic() - started
    finally:
        ray.kill(holder)
    sentence = str(caught.value)
    assert "could not place 2 worker(s) of 1 CPU" in sentence, sentence
    assert "within 10 s (placement_timeout_s)" in sentence, sentence
    assert "1 alive node(s) with 1 of 2 CPU(s) free, 1 of them with 1 free" in sentence, sentence
    assert took < 60, f"the unplaceable group took {took:.0f} s to fail"
    print(f"unplaceable worker group failed after {took:.1f} s: {sentence}")
