#!/usr/bin/python
"""Ansible module: submit a Ray Job with the Ray Jobs SDK and report its state, progress and result."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ray_job
short_description: Submit a Ray Job and follow it with the Ray Jobs SDK
description:
  - Runs on the Ray head with the cluster's venv Python (set C(ansible_python_interpreter) for the task).
  - O(state=present) submits the job once per O(submission_id); running it again does not resubmit.
  - O(state=status) returns the job's status, its last progress line, the log lines after
    O(log_offset) and, when it has finished, the metrics it printed as a C(RAYOPS_METRICS_JSON=...) line.
  - The action plugin of the same name adds O(follow) (with O(timeout_s)) on the controller, which calls
    this module with O(state=status) and a growing O(log_offset) until the job ends, printing every
    new log line once, in order, with the elapsed time.
  - Token authentication is read from O(env_file) (KEY=VALUE lines); its values are never returned.
options:
  submission_id:
    description: Unique id of the job (the run id).
    type: str
    required: true
  state:
    description: V(present) submits, V(status) reports, V(stopped) stops a running job.
    type: str
    choices: [present, status, stopped]
    default: status
  entrypoint:
    description:
      - Shell command the job runs on the head (name the venv's python).
      - Required with O(state=present).
    type: str
  runtime_env:
    description: Ray runtime_env (py_modules, env_vars, ...).
    type: dict
    default: {}
  metadata:
    description: String metadata attached to the job.
    type: dict
    default: {}
  address:
    description: Jobs API of the head (the dashboard), reachable from the head itself.
    type: str
    default: http://127.0.0.1:8265
  env_file:
    description: File of KEY=VALUE lines (e.g. RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH) loaded before connecting.
    type: path
    default: /etc/rayops/ray-client.env
  wait_s:
    description:
      - With O(state=status), wait up to this many seconds for the job to print a line after
        O(log_offset) or to change state before returning (0 returns at once).
    type: int
    default: 0
  log_offset:
    description:
      - Number of the job's log lines already seen; RV(log_lines) holds the complete lines after them.
    type: int
    default: 0
  follow:
    description:
      - (action plugin) After O(state=present) or O(state=status), poll the job until it ends, print each
        new log line once with the elapsed time, and return the final status. Ignored in check mode.
    type: bool
    default: false
  timeout_s:
    description:
      - (action plugin) With O(follow), fail when the job has not ended after this many seconds (the job
        keeps running). Default none.
    type: int
  log_tail:
    description: Number of log lines to return.
    type: int
    default: 30
author: rayops
"""

EXAMPLES = r"""
- name: Train | submit the workflow
  ray_job:
    submission_id: "rayops-train-{{ run_id }}"
    state: present
    entrypoint: /opt/rayops/venv/bin/python -m rayops.workflow run --dataset /data/x.csv
    runtime_env: {env_vars: {RAYOPS_EXAMPLE: "1"}}
  vars:
    ansible_python_interpreter: /opt/rayops/venv/bin/python

- name: Train | follow the job to its end, printing its log lines as they come
  ray_job:
    submission_id: "rayops-train-{{ run_id }}"
    state: status
    follow: true
    wait_s: 20
  vars:
    ansible_python_interpreter: /opt/rayops/venv/bin/python
  register: job
"""

RETURN = r"""
status:
  description: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED.
  type: str
  returned: always
finished:
  description: Whether the job reached a terminal state.
  type: bool
  returned: always
progress:
  description: The last progress line the job printed (lines starting with C([rayops])).
  type: str
  returned: always
error:
  description: The job's own error sentence when it failed (its C([rayops] error:) line, else Ray's message).
  type: str
  returned: when failed
metrics:
  description: The object the job printed as C(RAYOPS_METRICS_JSON=...).
  type: dict
  returned: when the job printed it
logs_tail:
  description: The last O(log_tail) lines of the job's logs.
  type: list
  elements: str
  returned: always
log_lines:
  description:
    - The complete log lines after O(log_offset) (a last line still being written is held back until
      it ends or the job does). The action plugin's O(follow) returns them all.
  type: list
  elements: str
  returned: always
log_offset:
  description: The O(log_offset) to pass next time (lines seen so far).
  type: int
  returned: always
msg:
  description: What check mode would have done.
  type: str
  returned: in check mode
"""

import json
import os
import re
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
_METRICS = re.compile(r"^RAYOPS_METRICS_JSON=(\{.*\})\s*$")
_ERROR = re.compile(r"^\[rayops\] error: (.+)$")


def load_env_file(path: str) -> list[str]:
    """Load KEY=VALUE lines into os.environ; return the keys (never the values)."""
    keys: list[str] = []
    if not path or not os.path.exists(path):
        return keys
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            os.environ[key.strip()] = value.strip().strip('"')
            keys.append(key.strip())
    return keys


def summarize_logs(logs: str, tail: int) -> dict[str, object]:
    """Progress, error and metrics found in a job's logs."""
    lines = logs.splitlines()
    result: dict[str, object] = {"logs_tail": lines[-tail:], "progress": ""}
    for line in lines:
        if line.startswith("[rayops]") and not _ERROR.match(line):
            result["progress"] = line
        if m := _METRICS.match(line):
            result["metrics"] = json.loads(m.group(1))
        if m := _ERROR.match(line):
            result["error"] = m.group(1)
    return result


def _status(job_info: Any) -> str:
    status = job_info.status
    return str(getattr(status, "value", status))


def new_lines(logs: str, offset: int, finished: bool) -> tuple[list[str], int]:
    """The complete lines after the first ``offset`` lines of ``logs``, and the next offset. A last
    line without its newline is still being written: it waits for the next call unless the job ended."""
    lines = logs.split("\n")
    if lines[-1] == "" or not finished:
        lines = lines[:-1]  # the empty string after the last newline, or a partial line
    return lines[offset:], max(offset, len(lines))


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _check_mode_exit(module: AnsibleModule, changed: bool, status: str, msg: str) -> None:
    """Check mode's answer: what a real run would do, with the keys the play reads."""
    module.exit_json(
        changed=changed,
        status=status,
        finished=False,
        progress="",
        logs_tail=[],
        log_lines=[],
        log_offset=module.params["log_offset"],
        msg=msg,
    )


API_ARGS = {
    "submission_id": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "status", "stopped"], "default": "status"},
    "entrypoint": {"type": "str"},
    "runtime_env": {"type": "dict", "default": {}},
    "metadata": {"type": "dict", "default": {}},
    "address": {"type": "str", "default": "http://127.0.0.1:8265"},
    "env_file": {"type": "path", "default": "/etc/rayops/ray-client.env"},
    "wait_s": {"type": "int", "default": 0},
    "log_tail": {"type": "int", "default": 30},
    "log_offset": {"type": "int", "default": 0},
    # handled by the action plugin on the controller; accepted here so that both share one spec
    "follow": {"type": "bool", "default": False},
    "timeout_s": {"type": "int"},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=API_ARGS,
        required_if=[("state", "present", ["entrypoint"])],
        supports_check_mode=True,
    )
    p = module.params
    if p["wait_s"] < 0 or p["log_offset"] < 0 or p["log_tail"] < 0:
        module.fail_json(msg="wait_s, log_offset and log_tail must be 0 or more.")
    # Ray reads RAY_AUTH_MODE and the token when it is imported: load the env file first.
    load_env_file(p["env_file"])
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        module.fail_json(msg=missing_required_lib("ray") + "; run the task with the cluster venv's python")
    try:
        client = JobSubmissionClient(p["address"])
    except Exception as err:
        if "Authentication" in type(err).__name__:
            module.fail_json(
                msg=f"The Ray Jobs API at {p['address']} refused this client ({_one_line(err)}): "
                f"env_file ({p['env_file']}) must set RAY_AUTH_MODE=token and the head's token path."
            )
        module.fail_json(
            msg=f"Cannot reach the Ray Jobs API at {p['address']} ({_one_line(err)}): "
            "is ray-head running, and is address the head's dashboard?"
        )
    job_id = p["submission_id"]

    def info() -> Any:
        try:
            return client.get_job_info(job_id)
        except RuntimeError:  # the SDK's "job does not exist"
            return None

    changed = False
    current = info()
    if p["state"] == "present" and current is None:
        changed = True
        if module.check_mode:
            _check_mode_exit(
                module,
                True,
                "PENDING",
                f"check mode: job {job_id} would be submitted (nothing was submitted)",
            )
        client.submit_job(
            entrypoint=p["entrypoint"],
            submission_id=job_id,
            runtime_env=p["runtime_env"] or None,
            metadata={k: str(v) for k, v in p["metadata"].items()},
        )
        current = info()
    elif p["state"] == "stopped" and current is not None and _status(current) not in _TERMINAL:
        changed = True
        if module.check_mode:
            _check_mode_exit(
                module,
                True,
                _status(current),
                f"check mode: job {job_id} would be stopped (it is still running)",
            )
        client.stop_job(job_id)
        current = info()
    if current is None:
        if module.check_mode:  # e.g. the job that check mode did not submit
            _check_mode_exit(
                module,
                False,
                "PENDING",
                f"check mode: no Ray job {job_id} on {p['address']} (a real run submits it first)",
            )
        module.fail_json(msg=f"No Ray job with submission id {job_id!r} on {p['address']}.")
    status = _status(current)
    logs = client.get_job_logs(job_id)
    lines, offset = new_lines(logs, p["log_offset"], status in _TERMINAL)
    deadline = time.monotonic() + p["wait_s"]
    while p["state"] == "status" and not lines and status not in _TERMINAL and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        current = info()
        if current is None:
            module.fail_json(msg=f"The Ray job {job_id!r} disappeared from {p['address']} while followed.")
        status_now = _status(current)
        logs = client.get_job_logs(job_id)
        lines, offset = new_lines(logs, p["log_offset"], status_now in _TERMINAL)
        if status_now != status:
            status = status_now
            break
    result: dict[str, object] = {"changed": changed, "status": status, "finished": status in _TERMINAL}
    result.update(summarize_logs(logs, p["log_tail"]))
    result.update(log_lines=lines, log_offset=offset)
    if status == "FAILED" and "error" not in result:
        result["error"] = current.message or "the job failed without a message; see logs_tail"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
