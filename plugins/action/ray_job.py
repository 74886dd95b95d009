"""Action plugin of the ray_job module: ``follow: true`` follows a Ray Job to its end from the controller.

The module runs on the head and answers one call at a time; with ``follow`` this plugin calls it
again and again (``state=status``, the ``log_offset`` it returned last, ``wait_s`` long polls) and
prints every new log line of the job once, in order, prefixed with the time since the task started,
until the job is SUCCEEDED, FAILED or STOPPED. No task recursion, no cap on the job's length; an
optional ``timeout_s`` fails the task (the job keeps running). Without ``follow`` (and in check mode)
it is the module, called once.

A submission (``state=present``) is retried while the Jobs API cannot be reached, for UNREACHABLE_S (a
head that is restarting). With ``resubmit_lost: N`` (and ``state=present``, ``follow``), a job that was
lost with the head (the module's ``lost``) is submitted again, up to N times, as ``<submission_id>-rK``
with the same entrypoint and metadata, and followed: the workflow continues the run it claimed (its
``--claim-token``) from Ray Train's last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

#: Consecutive failed status calls always tolerated while following (a head busy for seconds) ...
STATUS_RETRIES = 3
#: ... and for this long after the first of them, one call every RETRY_PAUSE_S: a head that restarts
#: (20-40 s measured, tests/cluster/test_faults.py) is waited for; then the job is found or reported lost.
UNREACHABLE_S = 300.0
RETRY_PAUSE_S = 5.0
#: Default long-poll of one status call, seconds (the module returns as soon as a line comes).
DEFAULT_WAIT_S = 10
#: The module's sentence for a Jobs API it cannot connect to (a head that is down or restarting).
UNREACHABLE_PREFIX = "Cannot reach the Ray Jobs API"
#: Keys of the module's last answer that the follow result keeps (log_lines is dropped: they were shown).
_DROP = ("log_lines", "invocation")


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:3d}:{secs:02d}"


def follow(
    call: Callable[[dict[str, Any]], dict[str, Any]],
    first: dict[str, Any],
    args: dict[str, Any],
    *,
    timeout_s: float | None,
    show: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    started: float | None = None,
    unreachable_s: float = UNREACHABLE_S,
) -> dict[str, Any]:
    """Poll with ``call(module_args)`` from the answer ``first`` until the job is terminal; print each
    new non-empty log line once with ``show``. Failed calls are retried (see UNREACHABLE_S). Returns
    the last answer (with the module's keys)."""
    started = clock() if started is None else started
    wait_s = int(args.get("wait_s") or DEFAULT_WAIT_S)
    status_args = {**args, "state": "status"}
    result, failures, last_status, failing_since = first, 0, None, 0.0
    while True:
        if result.get("failed"):
            failures += 1
            failing_since = clock() if failures == 1 else failing_since
            if failures > STATUS_RETRIES and clock() - failing_since >= unreachable_s:
                return result
            show(f"{_elapsed(clock() - started)} (status call failed, retrying: {result.get('msg', '')})")
            if failures > 1:
                sleep(RETRY_PAUSE_S)
        else:
            failures = 0
            changed_status = result.get("status") != last_status
            last_status = result.get("status")
            # a new status before the lines printed under it; the final one after the last lines
            if changed_status and not result.get("finished"):
                show(f"{_elapsed(clock() - started)} job {args['submission_id']}: {last_status}")
            for line in result.get("log_lines") or []:
                if line.strip():
                    show(f"{_elapsed(clock() - started)} {line.rstrip()}")
            status_args["log_offset"] = result.get("log_offset", status_args.get("log_offset", 0))
            if result.get("finished"):
                show(f"{_elapsed(clock() - started)} job {args['submission_id']}: {last_status}")
                return result
        left = None if timeout_s is None else timeout_s - (clock() - started)
        if left is not None and left <= 0:
            return {
                **result,
                "failed": True,
                "msg": f"The Ray job {args['submission_id']} is still {last_status} after {timeout_s:g} s "
                "(timeout_s); it keeps running on the cluster: follow it again, or stop it with "
                "state=stopped.",
            }
        status_args["wait_s"] = wait_s if left is None else max(1, min(wait_s, int(left)))
        result = call(status_args)


def submit(
    call: Callable[[dict[str, Any]], dict[str, Any]],
    args: dict[str, Any],
    *,
    show: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    started: float,
    unreachable_s: float = UNREACHABLE_S,
) -> dict[str, Any]:
    """``call(args)`` (a submission), again every RETRY_PAUSE_S while the module says the Jobs API cannot
    be reached, for ``unreachable_s``; any other answer at once."""
    deadline = clock() + unreachable_s
    while True:
        answer = call(args)
        unreachable = bool(answer.get("failed")) and str(answer.get("msg", "")).startswith(UNREACHABLE_PREFIX)
        if not unreachable or clock() >= deadline:
            return answer
        show(
            f"{_elapsed(clock() - started)} (the Ray Jobs API cannot be reached yet, retrying: "
            f"{answer['msg']})"
        )
        sleep(RETRY_PAUSE_S)


def follow_resubmitting(
    call: Callable[[dict[str, Any]], dict[str, Any]],
    first: dict[str, Any],
    args: dict[str, Any],
    *,
    resubmit_lost: int,
    timeout_s: float | None,
    show: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    started: float,
    unreachable_s: float = UNREACHABLE_S,
) -> dict[str, Any]:
    """``follow``; then, while the job was lost with its head and resubmissions are left, submit it again
    as ``<submission_id>-rK`` and follow that. The answer carries ``submission_id`` (the last one) and
    ``resubmitted`` (how many times)."""

    def follow_one(answer: dict[str, Any], job_args: dict[str, Any]) -> dict[str, Any]:
        return follow(
            call,
            answer,
            job_args,
            timeout_s=timeout_s,
            show=show,
            clock=clock,
            sleep=sleep,
            started=started,
            unreachable_s=unreachable_s,
        )

    final = follow_one(first, args)
    current, attempt = args, 0
    while final.get("lost") and not final.get("failed") and attempt < resubmit_lost:
        attempt += 1
        lost_id = current["submission_id"]
        current = {**args, "submission_id": f"{args['submission_id']}-r{attempt}", "log_offset": 0}
        show(
            f"{_elapsed(clock() - started)} job {lost_id} was lost with the Ray head; resubmitting it as "
            f"{current['submission_id']} ({attempt} of {resubmit_lost}): the run continues from its last "
            "checkpoint"
        )
        first = submit(
            call, current, show=show, clock=clock, sleep=sleep, started=started, unreachable_s=unreachable_s
        )
        if first.get("failed"):
            final = first
            break
        final = follow_one(first, current)
    return {**final, "submission_id": current["submission_id"], "resubmitted": attempt}


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no type information
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result: dict[str, Any] = super().run(tmp, task_vars)
        args = dict(self._task.args)
        do_follow = boolean(args.pop("follow", False), strict=True)
        resubmit_lost = int(args.pop("resubmit_lost", 0) or 0)
        if resubmit_lost < 0:
            return {**result, "failed": True, "msg": "resubmit_lost must be 0 or more."}
        timeout = args.pop("timeout_s", None)
        timeout_s = None if timeout in (None, "") else float(timeout)
        if timeout_s is not None and timeout_s <= 0:
            return {**result, "failed": True, "msg": "timeout_s must be a positive number of seconds."}
        module = self._task.action  # ray_job, or its FQCN once the repo is a collection

        def call(module_args: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = self._execute_module(
                module_name=module, module_args=module_args, task_vars=task_vars
            )
            return answer

        started = time.monotonic()
        submitting = args.get("state") == "present" and not self._task.check_mode
        first = submit(call, args, show=display.display, started=started) if submitting else call(args)
        if not do_follow or first.get("failed") or self._task.check_mode:
            if do_follow and self._task.check_mode and not first.get("failed"):
                first["msg"] = (first.get("msg", "") + "; check mode: the job is not followed").lstrip("; ")
            return {**result, **first}
        final = follow_resubmitting(
            call,
            first,
            args,
            resubmit_lost=resubmit_lost if submitting else 0,
            timeout_s=timeout_s,
            show=display.display,
            started=started,
        )
        final = {k: v for k, v in final.items() if k not in _DROP}
        final["changed"] = bool(first.get("changed"))
        final["elapsed_s"] = round(time.monotonic() - started, 1)
        return {**result, **final}
