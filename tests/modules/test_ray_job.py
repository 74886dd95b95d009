"""The ray_job module: log reading (progress, the job's own error, its metrics, new lines after an
offset) and main() end to end against a stand-in for the Ray Jobs SDK's JobSubmissionClient.

main() runs for real (AnsibleModule, argument spec, check mode, exit/fail JSON); only the SDK's
client class is replaced, at the import the module does (``ray.job_submission``), so that each case
(an unreachable API, a job that fails, logs that grow between calls) is exact and takes milliseconds.
test_ray_job_real.py runs the module and its action plugin against a real Jobs API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray.job_submission
from ansible.module_utils.testing import patch_module_args
from plugin_files import load_plugin
from ray.job_submission import JobStatus

ray_job = load_plugin("modules", "ray_job")


def test_summarize_logs_finds_last_progress_metrics_and_error() -> None:
    metrics = {"run_id": "r1", "holdout": {"xgboost": {"rmse": 1.5}}}
    logs = "\n".join(
        [
            "some ray noise",
            "[rayops] ingest: 52416 rows",
            "[rayops] train: round 10/200",
            f"RAYOPS_METRICS_JSON={json.dumps(metrics)}",
            "[rayops] error: target zone 4 is unknown: use 1, 2 or 3",
            "tail line",
        ]
    )
    out = ray_job.summarize_logs(logs, tail=2)
    assert out["progress"] == "[rayops] train: round 10/200"
    assert out["metrics"] == metrics
    assert out["error"] == "target zone 4 is unknown: use 1, 2 or 3"
    assert out["logs_tail"] == ["[rayops] error: target zone 4 is unknown: use 1, 2 or 3", "tail line"]


def test_summarize_logs_without_markers_reports_nothing_invented() -> None:
    out = ray_job.summarize_logs("a\nb\n", tail=10)
    assert out == {"logs_tail": ["a", "b"], "progress": ""}


def test_env_file_sets_variables_and_returns_only_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "ray-client.env"
    env.write_text('# comment\nRAY_AUTH_MODE=token\nRAYOPS_TEST_TOKEN_PATH="/etc/rayops/ray_auth_token"\n\n')
    # load_env_file writes os.environ: set then delete through monkeypatch, so that the teardown
    # removes what the call sets (RAY_AUTH_MODE=token must not reach the tests that run after this one).
    for key in ("RAY_AUTH_MODE", "RAYOPS_TEST_TOKEN_PATH"):
        monkeypatch.setenv(key, "unset-by-teardown")
        monkeypatch.delenv(key)
    keys = ray_job.load_env_file(str(env))
    assert keys == ["RAY_AUTH_MODE", "RAYOPS_TEST_TOKEN_PATH"]
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAYOPS_TEST_TOKEN_PATH"] == "/etc/rayops/ray_auth_token"
    assert ray_job.load_env_file(str(tmp_path / "missing.env")) == []


@pytest.mark.parametrize(
    ("logs", "offset", "finished", "expected"),
    [
        ("a\nb\nc", 0, False, (["a", "b"], 2)),  # c is still being written
        ("a\nb\nc", 0, True, (["a", "b", "c"], 3)),  # the job ended: c is complete
        ("a\nb\nc\nd\n", 2, False, (["c", "d"], 4)),
        ("a\nb\n", 2, False, ([], 2)),
        ("", 0, False, ([], 0)),
        ("a\n\nb\n", 0, False, (["a", "", "b"], 3)),  # empty lines are counted (the action hides them)
    ],
)
def test_new_lines_after_an_offset(logs: str, offset: int, finished: bool, expected: Any) -> None:
    assert ray_job.new_lines(logs, offset, finished) == expected


# ------------------------------------------------------------------- main() against a fake SDK


class FakeJobs:
    """Stands in for ray.job_submission.JobSubmissionClient: the same methods, names and errors the
    module uses (get_job_info raises RuntimeError for an unknown id, as the SDK does)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submitted: list[dict[str, Any]] = []
        self.stopped: list[str] = []
        self.addresses: list[str] = []
        self.unreachable: Exception | None = None

    def __call__(self, address: str) -> FakeJobs:  # the class call: JobSubmissionClient(address)
        self.addresses.append(address)
        if self.unreachable is not None:
            raise self.unreachable
        return self

    def add(
        self,
        job_id: str,
        status: str,
        *logs: str,
        message: str = "",
        error_type: str | None = None,
        metadata: dict[str, str] | None = None,
        start_time: int = 0,
    ) -> None:
        """A job whose successive get_job_logs calls return ``logs`` (the last one stays)."""
        self.jobs[job_id] = {
            "status": status,
            "logs": list(logs) or [""],
            "message": message,
            "error_type": error_type,
            "metadata": metadata or {},
            "start_time": start_time or len(self.jobs) + 1,
        }

    def _details(self, job_id: str) -> Any:
        job = self.jobs[job_id]
        return SimpleNamespace(
            submission_id=job_id,
            status=JobStatus(job["status"]),
            message=job["message"],
            error_type=job["error_type"],
            metadata=job["metadata"],
            start_time=job["start_time"],
        )

    def get_job_info(self, job_id: str) -> Any:
        if job_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return self._details(job_id)

    def list_jobs(self) -> list[Any]:
        return [self._details(job_id) for job_id in self.jobs]

    def get_job_logs(self, job_id: str) -> str:
        logs: list[str] = self.jobs[job_id]["logs"]
        return logs.pop(0) if len(logs) > 1 else logs[0]

    def submit_job(self, **kwargs: Any) -> str:
        self.submitted.append(kwargs)
        self.add(kwargs["submission_id"], "PENDING", metadata=kwargs.get("metadata"))
        return str(kwargs["submission_id"])

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        self.jobs[job_id]["status"] = "STOPPED"
        return True


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> FakeJobs:
    fake = FakeJobs()
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", fake)
    monkeypatch.setattr(ray_job.time, "sleep", lambda _s: None)
    return fake


def run_main(capsys: pytest.CaptureFixture[str], tmp_path: Path, **args: Any) -> tuple[int, dict[str, Any]]:
    """main() with these module args (env_file: a missing file unless given); (exit code, JSON)."""
    args.setdefault("env_file", str(tmp_path / "no-such.env"))
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        ray_job.main()
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return int(exited.value.code or 0), out


def test_present_submits_once_per_submission_id(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = {"submission_id": "rayops-train-r1", "state": "present", "entrypoint": "python -m x"}
    code, first = run_main(capsys, tmp_path, **args, metadata={"run_id": "r1", "n": 3})
    assert (code, first["changed"], first["status"], first["finished"]) == (0, True, "PENDING", False)
    assert jobs.submitted == [
        {
            "entrypoint": "python -m x",
            "submission_id": "rayops-train-r1",
            "runtime_env": None,
            "metadata": {"run_id": "r1", "n": "3"},
        }
    ]
    code, again = run_main(capsys, tmp_path, **args)
    assert (code, again["changed"]) == (0, False)
    assert len(jobs.submitted) == 1
    assert jobs.addresses == ["http://127.0.0.1:8265"] * 2  # the default; train.yml passes its own


def test_argument_validation(jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run_main(capsys, tmp_path, submission_id="j", state="present")
    assert code == 1 and "entrypoint" in out["msg"]
    code, out = run_main(capsys, tmp_path, submission_id="j", state="status", log_offset=-1)
    assert (code, out["msg"]) == (1, "wait_s, log_offset and log_tail must be 0 or more.")
    code, out = run_main(capsys, tmp_path, submission_id="j", state="running")
    assert code == 1 and "state" in out["msg"]
    assert not jobs.submitted


def test_unreachable_api_is_one_sentence(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs.unreachable = ConnectionError(
        "Failed to connect to Ray at address: http://10.0.0.9:8265.\nTraceback (most recent call last): ..."
    )
    code, out = run_main(capsys, tmp_path, submission_id="j", address="http://10.0.0.9:8265")
    assert code == 1
    assert out["msg"] == (
        "Cannot reach the Ray Jobs API at http://10.0.0.9:8265 (ConnectionError: Failed to connect to Ray "
        "at address: http://10.0.0.9:8265.): is ray-head running, and is address the head's dashboard?"
    )


def test_status_of_an_unknown_job_fails_with_its_id(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = run_main(capsys, tmp_path, submission_id="nope")
    assert (code, out["msg"]) == (1, "No Ray job with submission id 'nope' on http://127.0.0.1:8265.")


def test_check_mode_submits_and_stops_nothing_and_says_so(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = run_main(
        capsys, tmp_path, submission_id="j1", state="present", entrypoint="python x", _ansible_check_mode=True
    )
    assert (code, out["changed"], out["status"]) == (0, True, "PENDING")
    assert out["msg"] == "check mode: job j1 would be submitted (nothing was submitted)"
    assert not jobs.submitted
    code, out = run_main(capsys, tmp_path, submission_id="j1", _ansible_check_mode=True)
    assert (code, out["changed"], out["status"]) == (0, False, "PENDING")
    assert out["msg"].startswith("check mode: no Ray job j1")
    jobs.add("j2", "RUNNING", "line\n")
    code, out = run_main(capsys, tmp_path, submission_id="j2", state="stopped", _ansible_check_mode=True)
    assert (code, out["changed"], out["msg"]) == (
        0,
        True,
        "check mode: job j2 would be stopped (it is still running)",
    )
    assert not jobs.stopped


def test_stopped_stops_a_running_job_only(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs.add("run", "RUNNING", "[rayops] stage 3/5 train: started\n")
    jobs.add("done", "SUCCEEDED", "[rayops] run done: promoted\n")
    code, out = run_main(capsys, tmp_path, submission_id="run", state="stopped")
    assert (code, out["changed"], out["status"], out["finished"]) == (0, True, "STOPPED", True)
    code, out = run_main(capsys, tmp_path, submission_id="done", state="stopped")
    assert (code, out["changed"], out["status"]) == (0, False, "SUCCEEDED")
    assert jobs.stopped == ["run"]


def test_status_returns_the_lines_after_the_offset(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs.add("j", "RUNNING", "one\ntwo\nthr")
    code, out = run_main(capsys, tmp_path, submission_id="j")
    assert (code, out["log_lines"], out["log_offset"], out["finished"]) == (0, ["one", "two"], 2, False)
    metrics = {"run_id": "r", "holdout": {"xgboost": {"rmse": 1.0}}}
    jobs.add("j", "SUCCEEDED", f"one\ntwo\nthree\nRAYOPS_METRICS_JSON={json.dumps(metrics)}")
    code, out = run_main(capsys, tmp_path, submission_id="j", log_offset=2)
    assert out["log_lines"] == ["three", f"RAYOPS_METRICS_JSON={json.dumps(metrics)}"]
    assert (out["log_offset"], out["status"], out["finished"], out["metrics"]) == (
        4,
        "SUCCEEDED",
        True,
        metrics,
    )


def test_status_waits_for_a_new_line(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs.add("j", "RUNNING", "a\n", "a\n", "a\n", "a\nb\n")
    code, out = run_main(capsys, tmp_path, submission_id="j", log_offset=1, wait_s=30)
    assert (code, out["log_lines"], out["log_offset"]) == (0, ["b"], 2)


def test_a_failed_job_reports_its_own_error_else_rays_message(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs.add("ours", "FAILED", "[rayops] stage 1/5 ingest: started\n[rayops] error: column x is missing\n")
    jobs.add("rays", "FAILED", "", message="Job entrypoint command failed with exit code 137")
    _, out = run_main(capsys, tmp_path, submission_id="ours")
    assert (out["status"], out["error"], out["progress"]) == (
        "FAILED",
        "column x is missing",
        "[rayops] stage 1/5 ingest: started",
    )
    _, out = run_main(capsys, tmp_path, submission_id="rays")
    assert out["error"] == "Job entrypoint command failed with exit code 137"


def test_main_loads_the_env_file_before_connecting(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "ray-client.env"
    env.write_text("RAYOPS_TEST_AUTH=token\n")
    monkeypatch.setenv("RAYOPS_TEST_AUTH", "unset-by-teardown")
    monkeypatch.delenv("RAYOPS_TEST_AUTH")
    jobs.add("j", "RUNNING")
    code, out = run_main(capsys, tmp_path, submission_id="j", env_file=str(env))
    assert code == 0 and os.environ["RAYOPS_TEST_AUTH"] == "token"
    assert "token" not in json.dumps({k: v for k, v in out.items() if k != "invocation"})


# ---------------------------------------------------------------- issue 16: lost jobs, one run per zone


def test_a_followed_job_the_jobs_api_forgot_is_lost_in_one_sentence(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A head restart without the job (a new cluster): the follow's status call finds no such job."""
    code, out = run_main(capsys, tmp_path, submission_id="rayops-train-r1", log_offset=12)
    assert (code, out["status"], out["finished"], out["lost"]) == (0, "LOST", True, True)
    assert out["error"] == (
        "The Ray job rayops-train-r1 was lost with the Ray head (the Jobs API no longer knows it): the run "
        "did not finish and promoted nothing; train again with a new train_run_id."
    )


@pytest.mark.parametrize(
    ("error_type", "message", "lost"),
    [
        ("JOB_SUPERVISOR_ACTOR_DIED", "Job supervisor actor died: The actor died unexpectedly", True),
        (None, "Job supervisor actor died: ActorDiedError", True),
        ("JOB_ENTRYPOINT_COMMAND_ERROR", "Job entrypoint command failed with exit code 1", False),
        # Ray 2.60's answer for a RUNNING job whose supervisor went with a restarted head (seen on the
        # local cloud after kill -9 of the GCS): typed as a start failure, told apart by its message.
        (
            "JOB_SUPERVISOR_ACTOR_START_FAILURE",
            "Unexpected error occurred: failed to get job supervisor.",
            True,
        ),
        ("JOB_SUPERVISOR_ACTOR_START_FAILURE", "Failed to start supervisor actor: no resources", False),
    ],
)
def test_a_job_failed_with_its_supervisor_is_lost_not_its_own_error(
    jobs: FakeJobs,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    error_type: str | None,
    message: str,
    lost: bool,
) -> None:
    jobs.add("j", "FAILED", "[rayops] train: round 10/400\n", message=message, error_type=error_type)
    code, out = run_main(capsys, tmp_path, submission_id="j")
    assert (code, out["status"], out["lost"]) == (0, "FAILED", lost)
    if lost:
        assert out["error"].startswith(
            f"The Ray job j was lost with the Ray head (Ray: {message.split(':')[0]}"
        )
    else:
        assert out["error"] == message


def _present(run: str, **extra: Any) -> dict[str, Any]:
    return {
        "submission_id": f"rayops-train-{run}",
        "state": "present",
        "entrypoint": "python -m x",
        "metadata": {"run_id": run, "target": "zone1"},
        "exclusive_key": "target",
        **extra,
    }


def test_a_second_run_for_a_zone_is_refused_with_the_running_runs_id(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs.add("rayops-train-a", "RUNNING", metadata={"run_id": "a", "target": "zone1"})
    jobs.add("rayops-train-z2", "RUNNING", metadata={"run_id": "z2", "target": "zone2"})  # another zone
    jobs.add("rayops-train-old", "FAILED", metadata={"run_id": "old", "target": "zone1"})  # ended
    code, out = run_main(capsys, tmp_path, **_present("b"))
    assert (code, out["status"]) == (1, "REFUSED")
    assert out["msg"] == (
        "Training run a (Ray job rayops-train-a, RUNNING) is already running for target zone1: wait for it "
        "to end, stop it (ray_job state=stopped), or pass -e train_queue=true to queue behind it."
    )
    assert not jobs.submitted
    # zone 3 is free: submitted
    code, out = run_main(
        capsys, tmp_path, **{**_present("c"), "metadata": {"run_id": "c", "target": "zone3"}}
    )
    assert (code, out["changed"]) == (0, True)


def test_a_queued_run_waits_for_the_running_one(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs.add("rayops-train-a", "RUNNING", metadata={"run_id": "a", "target": "zone1"})
    polls: list[float] = []

    def sleep(seconds: float) -> None:  # the running job ends after the second poll
        polls.append(seconds)
        if len(polls) == 2:
            jobs.jobs["rayops-train-a"]["status"] = "SUCCEEDED"

    monkeypatch.setattr(ray_job.time, "sleep", sleep)
    code, out = run_main(capsys, tmp_path, **_present("b", queue=True))
    assert (code, out["changed"], len(polls)) == (0, True, 2)
    assert [s["submission_id"] for s in jobs.submitted] == ["rayops-train-b"]


def test_two_runs_that_race_end_with_the_older_running(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both listed the jobs before either submitted: once submitted, the later one sees the older, stops."""
    original = jobs.submit_job

    def submit_while_another_does(**kwargs: Any) -> str:
        jobs.add("rayops-train-a", "PENDING", metadata={"run_id": "a", "target": "zone1"}, start_time=1)
        answer = original(**kwargs)
        jobs.jobs[kwargs["submission_id"]]["start_time"] = 2
        return answer

    monkeypatch.setattr(jobs, "submit_job", submit_while_another_does)
    code, out = run_main(capsys, tmp_path, **_present("b"))
    assert (code, out["status"]) == (1, "REFUSED")
    assert out["msg"].startswith("Training run a (Ray job rayops-train-a, PENDING) is already running")
    assert jobs.stopped == ["rayops-train-b"]


def test_a_worker_size_no_node_has_is_refused_before_submission(
    jobs: FakeJobs, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_job, "largest_node_cpus", lambda address: 2)
    args = {**_present("b"), "min_node_cpus": 4, "min_node_cpus_name": "train_params.cpus_per_worker"}
    code, out = run_main(capsys, tmp_path, **args)
    assert code == 1
    assert out["msg"] == (
        "train_params.cpus_per_worker is 4, more than any node of the cluster offers: the largest offers 2 "
        "CPU(s) to Ray, so pass at most 2 (nothing was submitted)."
    )
    assert not jobs.submitted
    code, out = run_main(capsys, tmp_path, **{**args, "min_node_cpus": 2})
    assert (code, out["changed"]) == (0, True)
