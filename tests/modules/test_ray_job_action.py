"""The ray_job action plugin's follow loop, driven by a stand-in for ``_execute_module`` (the call
that runs the module on the head): each new log line printed once, in order, with the elapsed time;
empty lines skipped; the loop ends on a terminal status, on the timeout, or after repeated failures.
"""

from __future__ import annotations

import re
from typing import Any

from plugin_files import load_plugin

action = load_plugin("action", "ray_job")
ELAPSED = re.compile(r"^\s*(\d+:\d\d) (\S.*)$")


class Head:
    """Answers status calls from a script of module results and records every call's args."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, module_args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(dict(module_args))
        return self.answers.pop(0)


def answer(status: str, *lines: str, offset: int, **extra: Any) -> dict[str, Any]:
    terminal = status in ("SUCCEEDED", "FAILED", "STOPPED")
    return {"status": status, "finished": terminal, "log_lines": list(lines), "log_offset": offset, **extra}


class Clock:
    def __init__(self, step: float = 1.0) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_every_line_once_in_order_until_the_job_ends() -> None:
    first = answer("PENDING", offset=0, changed=True)
    head = Head(
        answer("RUNNING", "[rayops] stage 1/5 ingest: started", "", "   ", offset=3),
        answer("RUNNING", "[rayops] stage 1/5 ingest: done in 0.4 s", offset=4),
        answer("RUNNING", offset=4),  # a long poll that saw nothing new
        answer("SUCCEEDED", "[rayops] train: round 100/400", "RAYOPS_METRICS_JSON={}", offset=6, metrics={}),
    )
    shown: list[str] = []
    args = {"submission_id": "j1", "state": "present", "entrypoint": "python x", "wait_s": 20}
    final = action.follow(head, first, args, timeout_s=None, show=shown.append, clock=Clock(), started=0.0)
    assert final["status"] == "SUCCEEDED" and final["metrics"] == {}
    elapsed = [ELAPSED.match(line) for line in shown]
    assert all(elapsed), shown  # every line starts with the time since the task started
    assert [m.group(2) for m in elapsed if m] == [
        "job j1: PENDING",
        "job j1: RUNNING",
        "[rayops] stage 1/5 ingest: started",
        "[rayops] stage 1/5 ingest: done in 0.4 s",
        "[rayops] train: round 100/400",
        "RAYOPS_METRICS_JSON={}",
        "job j1: SUCCEEDED",
    ]
    assert [m.group(1) for m in elapsed if m][:2] == ["0:01", "0:02"]
    # each call asks for status after the lines already shown, with the task's long poll
    assert [(c["state"], c["log_offset"], c["wait_s"]) for c in head.calls] == [
        ("status", 0, 20),
        ("status", 3, 20),
        ("status", 4, 20),
        ("status", 4, 20),
    ]
    assert "entrypoint" in head.calls[0]  # the other args ride along unchanged


def test_timeout_fails_and_says_the_job_keeps_running() -> None:
    head = Head(*[answer("RUNNING", offset=0) for _ in range(10)])
    shown: list[str] = []
    clock = Clock(step=30.0)
    final = action.follow(
        head,
        answer("RUNNING", offset=0),
        {"submission_id": "j2"},
        timeout_s=100,
        show=shown.append,
        clock=clock,
    )
    assert final["failed"] is True
    assert final["msg"] == (
        "The Ray job j2 is still RUNNING after 100 s (timeout_s); it keeps running on the cluster: "
        "follow it again, or stop it with state=stopped."
    )
    assert len(head.calls) < 5
    assert all(1 <= c["wait_s"] <= action.DEFAULT_WAIT_S for c in head.calls)  # never waits past the timeout


def test_a_few_failed_calls_are_retried_then_the_failure_is_returned() -> None:
    down = {"failed": True, "msg": "Cannot reach the Ray Jobs API at http://127.0.0.1:8265 (...)"}
    head = Head(down, answer("SUCCEEDED", "done", offset=1))
    shown: list[str] = []
    final = action.follow(
        head, answer("RUNNING", offset=0), {"submission_id": "j"}, timeout_s=None, show=shown.append
    )
    assert final["status"] == "SUCCEEDED"
    assert sum("status call failed, retrying" in line for line in shown) == 1
    head = Head(*[down] * (action.STATUS_RETRIES + 1))
    final = action.follow(
        head,
        answer("RUNNING", offset=0),
        {"submission_id": "j"},
        timeout_s=None,
        show=shown.append,
        sleep=lambda _s: None,
        unreachable_s=0,
    )
    assert final == down


def test_a_head_restart_is_waited_for_up_to_the_bound() -> None:
    """Issue 16: a head down for a minute (Ray restarting) is not the job's end; past the bound it is."""
    now = [0.0]
    down = {"failed": True, "msg": "Cannot reach the Ray Jobs API at http://127.0.0.1:8265 (...)"}

    def follow_with_a_fake_clock(head: Head) -> dict[str, Any]:
        now[0] = 0.0
        return action.follow(
            head,
            answer("RUNNING", offset=0),
            {"submission_id": "j"},
            timeout_s=None,
            show=lambda _line: None,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )

    calls_down = int(60 / action.RETRY_PAUSE_S)  # a minute of failed calls, one every RETRY_PAUSE_S
    final = follow_with_a_fake_clock(Head(*[down] * calls_down, answer("SUCCEEDED", "done", offset=1)))
    assert final["status"] == "SUCCEEDED"
    assert follow_with_a_fake_clock(Head(*[down] * 1000)) == down
    assert action.UNREACHABLE_S <= now[0] <= action.UNREACHABLE_S + 2 * action.RETRY_PAUSE_S


DOWN = {
    "failed": True,
    "msg": "Cannot reach the Ray Jobs API at http://127.0.0.1:8265 (ConnectionError: ...)",
}


def fake_time() -> tuple[Any, Any]:
    now = [0.0]
    return (lambda: now[0]), (lambda s: now.__setitem__(0, now[0] + s))


def test_a_submission_waits_for_a_restarting_jobs_api_and_not_for_a_refusal() -> None:
    """Issue 16: train.yml started while the head restarts waits for its Jobs API (up to the bound);
    any other failure (a refusal, a bad argument) is returned at once."""
    clock, sleep = fake_time()
    shown: list[str] = []
    args = {"submission_id": "j", "state": "present", "entrypoint": "python x"}
    head = Head(DOWN, DOWN, answer("PENDING", offset=0, changed=True))
    first = action.submit(head, args, show=shown.append, clock=clock, sleep=sleep, started=0.0)
    assert first["status"] == "PENDING" and len(head.calls) == 3
    assert all(call == args for call in head.calls)  # the same submission each time
    assert sum("cannot be reached yet, retrying" in line for line in shown) == 2
    refused = {
        "failed": True,
        "status": "REFUSED",
        "msg": "Training run a (...) is already running for target zone1",
    }
    head = Head(refused)
    assert action.submit(head, args, show=shown.append, clock=clock, sleep=sleep, started=0.0) == refused
    head = Head(*[DOWN] * 1000)
    assert action.submit(head, args, show=shown.append, clock=clock, sleep=sleep, started=0.0) == DOWN
    assert len(head.calls) == int(action.UNREACHABLE_S / action.RETRY_PAUSE_S) + 1


def lost(offset: int) -> dict[str, Any]:
    return answer(
        "FAILED", offset=offset, lost=True, error="The Ray job ... was lost with the Ray head (...)"
    )


def test_a_job_lost_with_the_head_is_resubmitted_and_followed_up_to_the_bound() -> None:
    """Issue 16: with resubmit_lost, a lost job is submitted again as <id>-r1 (the same entrypoint and
    metadata, state present, log offset 0) and followed; resubmissions stop at the bound, a refused one
    ends it, and a job's own failure is never resubmitted."""
    clock, sleep = fake_time()
    shown: list[str] = []
    args = {"submission_id": "rayops-train-a", "state": "present", "entrypoint": "python x", "log_offset": 0}

    def resubmitting(head: Head, bound: int) -> dict[str, Any]:
        return action.follow_resubmitting(
            head,
            answer("RUNNING", offset=0),
            args,
            resubmit_lost=bound,
            timeout_s=None,
            show=shown.append,
            clock=clock,
            sleep=sleep,
            started=0.0,
        )

    head = Head(
        lost(5),  # the first job's status after the head came back
        answer("PENDING", offset=0, changed=True),  # the resubmission
        answer("SUCCEEDED", "[rayops] done", offset=1, metrics={"promoted": True}),
    )
    final = resubmitting(head, 2)
    assert final["status"] == "SUCCEEDED" and final["metrics"] == {"promoted": True}
    assert (final["submission_id"], final["resubmitted"]) == ("rayops-train-a-r1", 1)
    resubmission = head.calls[1]
    assert resubmission == {**args, "submission_id": "rayops-train-a-r1", "log_offset": 0}
    assert head.calls[2]["state"] == "status" and head.calls[2]["submission_id"] == "rayops-train-a-r1"
    assert any(
        "job rayops-train-a was lost with the Ray head; resubmitting it as rayops-train-a-r1 (1 of 2)" in line
        for line in shown
    ), shown

    # Lost every time: two resubmissions, then the last loss is the answer.
    head = Head(lost(5), answer("PENDING", offset=0), lost(2), answer("PENDING", offset=0), lost(2))
    final = resubmitting(head, 2)
    assert final["lost"] and (final["submission_id"], final["resubmitted"]) == ("rayops-train-a-r2", 2)
    assert not head.answers

    # A refused resubmission (another run took the zone meanwhile) ends it with the refusal.
    refused = {"failed": True, "status": "REFUSED", "msg": "Training run b (...) is already running"}
    head = Head(lost(5), refused)
    final = resubmitting(head, 2)
    assert final["failed"] and final["msg"] == refused["msg"] and final["resubmitted"] == 1

    # The job's own failure (not lost) and resubmit_lost 0 are never resubmitted.
    for answers, bound in (([answer("FAILED", offset=1, lost=False, error="bad data")], 2), ([lost(5)], 0)):
        head = Head(*answers)
        final = resubmitting(head, bound)
        assert (
            final["resubmitted"] == 0 and final["submission_id"] == "rayops-train-a" and len(head.calls) == 1
        )
