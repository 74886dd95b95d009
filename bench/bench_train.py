"""Benchmark: the workflow's training path against plain ``xgboost.train``, and the job's fixed cost.

Three parts, each with its baseline in the same run:

1. ``train``: ``training.fit_xgboost`` (what the job runs: auto choice of one process or a worker
   group, Ray Train) against plain ``xgboost.train`` on the same rows, booster parameters, rounds,
   evals and cores (``nthread = cores`` in one process). Tables: ``tiny`` (1,000 rows, to expose
   the fixed cost), ``tetouan`` (the workflow's hourly features of the seed CSV, training part of
   the time-ordered split) and ``synthetic-1m`` (1,000,000 rows x 20 features, non-linear target).
   Per table: boosting seconds (inside ``xgboost.train``), whole-call seconds (plain: DMatrix +
   train; Ray: ``trainer.fit()``), their ratios, the fixed overhead (whole call minus boosting) and
   whether both models reach the same training RMSE within 1e-6 relative. ``--distributed`` adds a
   forced worker group of ``cores`` workers per table.
2. ``job``: the whole workflow (``python -m rayops.workflow run``, a moto S3 server on loopback, a
   local Ray only if a stage needs the cluster) on the seed CSV with the default settings: wall time
   from process start to exit, the job's own stage times, and the fixed overhead = wall - boosting.
3. ``--real``: the real path on a local cloud of its own (``rtrain``, 10.213.150.0/24, S3 port 5750,
   state in /tmp/rtrain; never the user's cloud, always torn down): boot, ``site.yml``, then
   ``train.yml`` on the seed CSV (a Ray Job on the head, data through S3), once with the auto choice
   and once with a worker group of 3; prints the seconds from the submit task to the job's end as
   the playbook saw it, the job's stage times and the overhead.

Run: ``.venv/bin/python bench/bench_train.py [--dataset ../shared/data/powerconsumption.csv]
[--cores N] [--rounds 100] [--rows 1000000] [--distributed] [--skip-job] [--real]``.
Wall times depend on the host's load (2 shared cores here): compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost

from rayops.workflow import evaluate, features, ingest, training
from rayops.workflow.config import XGBoostParams
from rayops.workflow.features import TARGET

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "powerconsumption.csv"
TEST_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


# ---------------------------------------------------------------------------------- 1. training


def tetouan_features(path: str) -> tuple[pd.DataFrame, list[str]]:
    """The workflow's features (its own executor choice), training part of the time-ordered split."""
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


def rmse(booster: xgboost.Booster, frame: pd.DataFrame, names: list[str]) -> float:
    predicted = training.predict_xgboost(booster, frame, names)
    return float(np.sqrt(np.mean((predicted - frame[TARGET].to_numpy()) ** 2)))


@dataclass
class Row:
    table: str
    rows: int
    feats: int
    how: str  # "local" or "N wrk"
    p_boost: float
    r_boost: float
    p_job: float
    r_job: float
    rel_rmse: float


def plain(
    frame: pd.DataFrame, names: list[str], params: XGBoostParams, cores: int
) -> tuple[float, float, xgboost.Booster]:
    """The baseline: DMatrix + ``xgboost.train`` with the job's evals, ``nthread = cores``."""
    started = time.perf_counter()
    dtrain = xgboost.DMatrix(frame[names], label=frame[TARGET], feature_names=names, nthread=cores)
    boost_started = time.perf_counter()
    booster = xgboost.train(
        params.booster_params(nthread=cores),
        dtrain,
        num_boost_round=params.num_boost_round,
        evals=[(dtrain, "train")],
        verbose_eval=False,
    )
    done = time.perf_counter()
    return done - boost_started, done - started, booster


def ray_train(
    frame: pd.DataFrame, names: list[str], params: XGBoostParams, num_workers: int | None, report_every: int
) -> tuple[float, float, training.WorkerPlan, xgboost.Booster]:
    with tempfile.TemporaryDirectory() as storage:
        outcome = training.fit_xgboost(
            {"bench": frame},
            names,
            params,
            name="bench",
            num_workers=num_workers,
            cpus_per_worker=1,
            report_every=report_every,
            storage_path=storage,
        )
    booster = outcome.boosters["bench"]
    return outcome.boosting_seconds["bench"], outcome.seconds, outcome.plan, booster


def bench_training(args: argparse.Namespace) -> list[Row]:
    import ray

    ray.init(address="local", num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    params = XGBoostParams(num_boost_round=args.rounds)
    tables = {
        f"tiny-{args.tiny_rows // 1000}k": synthetic(args.tiny_rows, seed=1),
        "tetouan": tetouan_features(args.dataset),
        f"synthetic-{args.rows // 1000}k": synthetic(args.rows),
    }
    modes: list[int | None] = [None, args.cores] if args.distributed else [None]
    rows = []
    try:
        for label, (frame, names) in tables.items():
            say(f"train: {label} ({len(frame):,} rows x {len(names)} features)")
            p_boost, p_job, p_model = plain(frame, names, params, args.cores)
            baseline_rmse = rmse(p_model, frame, names)
            for workers in modes:
                r_boost, r_job, plan, model = ray_train(frame, names, params, workers, args.report_every)
                how = "local" if plan.num_workers == 0 else f"{plan.num_workers} wrk"
                rel = abs(rmse(model, frame, names) - baseline_rmse) / baseline_rmse
                rows.append(Row(label, len(frame), len(names), how, p_boost, r_boost, p_job, r_job, rel))
    finally:
        ray.shutdown()
    return rows


def print_training(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\n1. training: {args.cores} cores, {args.rounds} rounds, evals=[train] on both sides "
        "(plain = one process, nthread = cores)"
    )
    header = (
        f"{'table':<15}{'rows':>10}{'feat':>5}{'how':>7}{'boost plain':>12}{'boost ray':>10}{'ratio':>7}"
        f"{'job plain':>10}{'job ray':>9}{'ratio':>7}{'overhead':>9}{'rmse rel':>10}  same"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        same = "yes" if r.rel_rmse <= 1e-6 else "NO"
        print(
            f"{r.table:<15}{r.rows:>10,}{r.feats:>5}{r.how:>7}{r.p_boost:>11.2f}s{r.r_boost:>9.2f}s"
            f"{r.r_boost / r.p_boost:>7.2f}{r.p_job:>9.2f}s{r.r_job:>8.2f}s{r.r_job / r.p_job:>7.2f}"
            f"{r.r_job - r.r_boost:>8.2f}s{r.rel_rmse:>10.1e}  {same}"
        )
    print(
        "ratio = Ray Train / plain xgboost.train (above 1: slower); overhead = Ray's whole call minus "
        "its boosting; rmse rel = |RMSE ray - RMSE plain| / RMSE plain on the training rows (same: <= 1e-6)"
    )


# ------------------------------------------------------------------------------------- 2. job


def moto_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2):  # loopback
                return proc
        except urllib.error.HTTPError:
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("bench: moto_server did not start") from None
            time.sleep(0.2)


def bench_job(args: argparse.Namespace) -> dict[str, Any]:
    """The whole workflow in a subprocess: its metrics, with the wall seconds as ``_wall_s``."""
    import os
    import socket

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, **TEST_AWS}
    env.pop("RAY_ADDRESS", None)
    os.environ.update(TEST_AWS)
    server = moto_server(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        buckets = {kind: f"bench-{kind}" for kind in ("raw", "features", "models", "results")}
        for name in buckets.values():
            s3.create_bucket(Bucket=name)
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "metrics.json"
            say("job: python -m rayops.workflow run on the seed CSV (local Ray, moto S3)")
            started = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rayops.workflow",
                    "run",
                    "--dataset",
                    args.dataset,
                    "--buckets",
                    json.dumps(buckets),
                    "--s3-endpoint-url",
                    endpoint,
                    "--run-id",
                    "bench",
                    "--local-cpus",
                    str(args.cores),
                    "--output-metrics",
                    str(out),
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                check=False,
            )
            wall = time.perf_counter() - started
            if proc.returncode not in (0, 3):
                sys.stdout.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                raise SystemExit(f"bench: the workflow failed (rc {proc.returncode})")
            metrics: dict[str, Any] = json.loads(out.read_text())
    finally:
        server.terminate()
        server.wait(timeout=20)
    metrics["_wall_s"] = wall
    return metrics


def print_job(label: str, metrics: dict[str, Any], wall: float, wall_what: str) -> None:
    t = metrics["timings_s"]
    boosting = sum(v for k, v in t.items() if k.startswith("boosting_"))
    print(f"\n{label}")
    print(
        f"  {wall_what}: {wall:.1f} s; boosting (both protocols, inside xgboost.train): {boosting:.1f} s; "
        f"fixed overhead: {wall - boosting:.1f} s (goal <= 10 s)"
    )
    stages = ", ".join(f"{k} {t[k]:.1f}" for k in ("ingest", "features", "train", "evaluate", "artifacts"))
    fit = t["ray_train_fit"]
    print(f"  the job's own stages (s): {stages}, total {t['total']:.1f}; Ray Train fit {fit:.1f}")
    print(
        f"  features: {metrics['features_execution']['executor']}; training: {metrics['training']['mode']} "
        f"({metrics['training']['reason']})"
    )
    print(
        f"  holdout RMSE xgboost {metrics['holdout']['xgboost']['rmse']:.1f}, "
        f"baseline {metrics['holdout']['baseline']['rmse']:.1f}; promoted {metrics['promoted']}"
    )


# --------------------------------------------------------------------------------- 3. real path


def train_playbook(playbook: list[str], dataset: str, run_id: str, params: dict[str, Any]) -> float:
    """Run train.yml; return the seconds from its submit task to the job's end as the playbook saw it."""
    from rayops.ansible_env import ansible_env

    extra = json.dumps({"dataset": dataset, "train_run_id": run_id, "train_params": params})
    proc = subprocess.Popen(
        [*playbook, "train.yml", "-e", extra],
        cwd=REPO,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    submitted = ended = None
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-200:], line]
        if "TASK [Train | submit the Ray Job" in line:
            submitted = time.perf_counter()
        elif submitted is not None and ended is None and "TASK [Train | create the run folder" in line:
            ended = time.perf_counter()
    if proc.wait() != 0 or submitted is None or ended is None:
        sys.stdout.write("".join(tail))
        raise SystemExit(f"bench: train.yml ({params}) failed (rc {proc.returncode})")
    return ended - submitted


_JOB_TIMES = (
    "import json; from ray.job_submission import JobSubmissionClient as C; "
    "i = C('http://127.0.0.1:8265').get_job_info('{sid}'); "
    "print('TIMES=' + json.dumps([i.start_time, i.end_time]))"
)


def job_seconds(inventory: Path, run_id: str) -> float:
    """Ray's own record of the job, read on the head: submission to the end, in seconds."""
    from rayops.ansible_env import BIN, ansible_env

    code = _JOB_TIMES.format(sid=f"rayops-train-{run_id}")
    command = f'set -a; . /etc/rayops/ray-client.env; set +a; /opt/rayops/venv/bin/python -c "{code}"'
    proc = subprocess.run(
        [
            str(BIN / "ansible"),
            "ray_head",
            "-i",
            str(inventory),
            "-b",
            "-m",
            "ansible.builtin.shell",
            "-a",
            command,
        ],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"TIMES=(\[[^\]]*\])", proc.stdout)
    if proc.returncode != 0 or found is None:
        sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-2000:])
        raise SystemExit("bench: cannot read the job's times on the head")
    start_ms, end_ms = json.loads(found[1])
    return float(end_ms - start_ms) / 1000


#: train.yml variants of the real path: the auto choice, and a worker group of one per node
#: (what train.yml passed before the auto choice existed).
REAL_VARIANTS: dict[str, dict[str, Any]] = {
    "auto": {"num_workers": "auto"},
    "distributed": {"num_workers": 3},
}


RealRun = tuple[float, float, dict[str, Any]]  # playbook's submit-to-end s, Ray's submit-to-end s, metrics


def bench_real(args: argparse.Namespace) -> tuple[float, dict[str, RealRun]]:
    """Boot cloud rtrain, site.yml, train.yml per variant; return (site s, {variant: run})."""
    from rayops.ansible_env import BIN, ansible_env
    from rayops.localcloud.cloud import CloudSpec, LocalCloud

    state = Path("/tmp/rtrain")  # noqa: S108  # this bench's own cloud, named in the docstring
    cloud = LocalCloud(
        CloudSpec(name="rtrain", workers=2, subnet="10.213.150.0/24", s3_port=5750, state_dir=str(state)),
        log=lambda _msg: None,
    )
    stamp = time.strftime("%Y%m%dT%H%M%S")
    runs: dict[str, RealRun] = {}
    try:
        say("real: booting 3 machines (cloud rtrain)")
        cloud.up()
        inventory = state / "rtrain.pulumi_stack.yml"
        inventory.write_text(f"plugin: pulumi_stack\noutputs_file: {cloud.outputs_path.resolve()}\n")
        playbook = [str(BIN / "ansible-playbook"), "-i", str(inventory)]
        say("real: site.yml")
        started = time.perf_counter()
        site = subprocess.run(
            [*playbook, "site.yml"], cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False
        )
        site_s = time.perf_counter() - started
        if site.returncode != 0:
            sys.stdout.write(site.stdout[-5000:] + site.stderr[-2000:])
            raise SystemExit(f"bench: site.yml failed (rc {site.returncode})")
        say(f"real: site.yml took {site_s:.0f} s")
        for variant, params in REAL_VARIANTS.items():
            run_id = f"bench-{stamp}-{variant}"
            say(f"real: train.yml, {variant} ({params})")
            seconds = train_playbook(playbook, args.dataset, run_id, params)
            record = REPO / ".rayops" / "runs" / run_id / "metrics.json"
            runs[variant] = seconds, job_seconds(inventory, run_id), json.loads(record.read_text())
        return site_s, runs
    finally:
        say("real: removing the machines")
        cloud.down(quiet=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=str(DEFAULT_DATA))
    parser.add_argument(
        "--cores", type=int, default=training.physical_cores(), help="default: physical cores"
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tiny-rows", type=int, default=1_000)
    parser.add_argument("--report-every", type=int, default=100, help="rounds between progress lines")
    parser.add_argument("--distributed", action="store_true", help="also a forced worker group per table")
    parser.add_argument("--skip-train", action="store_true", help="skip part 1 (the training call)")
    parser.add_argument("--skip-job", action="store_true", help="skip part 2 (the whole workflow)")
    parser.add_argument("--real", action="store_true", help="part 3: a Ray Job on a local cloud (root)")
    args = parser.parse_args()
    args.dataset = str(Path(args.dataset).resolve())

    # Each part prints when it is done, so a failure in a later part keeps the earlier numbers.
    if not args.skip_train:
        print_training(bench_training(args), args)
    job = None
    if not args.skip_job:
        job = bench_job(args)
        print_job(
            "2. job in-process (python -m rayops.workflow run, moto S3, a local Ray if a stage needs one)",
            job,
            job["_wall_s"],
            "process start to exit",
        )
    real = bench_real(args) if args.real else None
    if real is not None:
        site_s, runs = real
        for variant, (play_s, job_s, metrics) in runs.items():
            print_job(
                f"3. real path, {variant} (cloud rtrain: site.yml {site_s:.0f} s, then train.yml; "
                "a Ray Job on the head, data through S3)",
                metrics,
                job_s,
                "Ray's submit to SUCCEEDED",
            )
            print(f"  train.yml from its submit task until it saw the end: {play_s:.1f} s")
            if job is not None:
                ours, local = metrics["holdout"]["xgboost"]["rmse"], job["holdout"]["xgboost"]["rmse"]
                print(f"  holdout RMSE vs the in-process job: {abs(ours - local) / local:.1e} relative")


if __name__ == "__main__":
    main()
