"""Action plugin of the ray_job module: ``follow: true`` follows a Ray Job to its end from the controller.

The module runs on the head and answers one call at a time; with ``follow`` this plugin calls it
again and again (``state=status``, the ``log_offset`` it returned last, ``wait_s`` long polls) and
prints every new log line of the job once, in order, prefixed with the time since the task started,
until the job is SUCCEEDED, FAILED or STOPPED. No task recursion, no cap on the job's length; an
optional ``timeout_s`` fails the task (the job keeps running). Without ``follow`` (and in check mode)
it is the module, called once.
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


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no type information
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result: dict[str, Any] = super().run(tmp, task_vars)
        args = dict(self._task.args)
        do_follow = boolean(args.pop("follow", False), strict=True)
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
        first = call(args)
        if not do_follow or first.get("failed") or self._task.check_mode:
            if do_follow and self._task.check_mode and not first.get("failed"):
                first["msg"] = (first.get("msg", "") + "; check mode: the job is not followed").lstrip("; ")
            return {**result, **first}
        final = follow(call, first, args, timeout_s=timeout_s, show=display.display, started=started)
        final = {k: v for k, v in final.items() if k not in _DROP}
        final["changed"] = bool(first.get("changed"))
        final["elapsed_s"] = round(time.monotonic() - started, 1)
        return {**result, **final}
