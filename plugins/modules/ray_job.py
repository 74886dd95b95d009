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
    new log line once, in order, with the elapsed time. It retries a submission while the Jobs API
    cannot be reached (a head restarting) and, with O(resubmit_lost), resubmits a job lost with the head.
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
  resubmit_lost:
    description:
      - (action plugin) With O(state=present) and O(follow), submit a job that was lost with the Ray head
        (RV(lost)) again, up to this many times, as C(<submission_id>-r1), C(-r2)... with the same
        entrypoint, metadata and checks, and follow it. The entrypoint must be safe to run again (the
        rayops workflow continues the run it claimed, from its last checkpoint). 0 does not resubmit.
    type: int
    default: 0
  log_tail:
    description: Number of log lines to return.
    type: int
    default: 30
  exclusive_key:
    description:
      - With O(state=present), a key of O(metadata), e.g. C(target). The job is not submitted while
        another job of the Jobs API with the same value under that key is PENDING or RUNNING; the
        module fails with one sentence naming that job's C(run_id) (or waits, see O(queue)). Two
        submissions that race both see each other after submitting, and the later one (by start time,
        then id) stops itself.
    type: str
  queue:
    description:
      - With O(exclusive_key), wait (up to O(queue_timeout_s)) for the other job to end instead of failing.
    type: bool
    default: false
  queue_timeout_s:
    description: With O(queue), seconds to wait for the other job before failing.
    type: int
    default: 3600
  min_node_cpus:
    description:
      - With O(state=present), refuse to submit unless at least one alive node of the cluster offers
        this many CPUs to Ray (a worker of that size could never be placed); 0 checks nothing.
    type: int
    default: 0
  min_node_cpus_name:
    description: The name of the setting behind O(min_node_cpus), for the sentence of a refusal.
    type: str
    default: min_node_cpus
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
  description:
    - PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED; LOST (with O(state=status)) when the Jobs API no
      longer knows a job it was asked about (its head restarted without it).
  type: str
  returned: always
lost:
  description:
    - The job is gone or its driver died with the head (FAILED with Ray's "supervisor/driver died"
      message), so the run did not finish. C(finished) is true and C(error) says so in one sentence.
  type: bool
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
submission_id:
  description: (action plugin, O(follow)) The submission id of the job followed last (a resubmission's).
  type: str
  returned: with O(follow)
resubmitted:
  description: (action plugin, O(follow)) How many times a lost job was resubmitted (O(resubmit_lost)).
  type: int
  returned: with O(follow)
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
#: How long a submission is retried while the head's job agent is not up yet (a head that just started).
SUBMIT_RETRY_S = 60
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


#: Ray's error types of a job whose supervisor (so its driver) died with a node, not by its own error.
_LOST_TYPES = {"JOB_SUPERVISOR_ACTOR_DIED", "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE"}
#: ... and its messages: a RUNNING job whose supervisor is gone after a head restart is failed by Ray 2.60 as
#: JOB_SUPERVISOR_ACTOR_START_FAILURE with "failed to get job supervisor" (that type alone also means a
#: supervisor that never started, which is the job's own failure).
_LOST_MESSAGE = re.compile(
    r"^(Job supervisor actor died|Job monitoring .* failed unexpectedly"
    r"|Unexpected error occurred: failed to get job supervisor)",
    re.IGNORECASE,
)


def driver_lost(status: str, info: Any) -> bool:
    """Whether a FAILED job failed because its supervisor/driver was lost (a head restart), by Ray's
    ``error_type`` (or its message), as opposed to the job's own error (a non-zero exit)."""
    if status != "FAILED":
        return False
    kind = getattr(info, "error_type", None)
    kind = str(getattr(kind, "value", kind) or "")
    return kind in _LOST_TYPES or bool(_LOST_MESSAGE.search(str(getattr(info, "message", "") or "")))


def lost_sentence(job_id: str, why: str) -> str:
    return (
        f"The Ray job {job_id} was lost with the Ray head ({why}): the run did not finish and promoted "
        "nothing; train again with a new train_run_id."
    )


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
        lost=False,
        progress="",
        logs_tail=[],
        log_lines=[],
        log_offset=module.params["log_offset"],
        msg=msg,
    )


def _exit_lost(module: AnsibleModule, job_id: str, lines: list[str], offset: int, why: str) -> None:
    """The answer about a job the Jobs API lost: terminal, status LOST, the sentence as its error."""
    module.exit_json(
        changed=False,
        status="LOST",
        finished=True,
        lost=True,
        progress="",
        logs_tail=[],
        log_lines=lines,
        log_offset=offset,
        error=lost_sentence(job_id, why),
    )


def _metadata_of(job: Any) -> dict[str, str]:
    return dict(getattr(job, "metadata", None) or {})


def _order(job: Any) -> tuple[int, str]:
    return (int(getattr(job, "start_time", None) or 0), str(getattr(job, "submission_id", "") or ""))


def others_holding(jobs: list[Any], job_id: str, key: str, value: str) -> list[Any]:
    """The jobs other than ``job_id`` that are PENDING or RUNNING with ``metadata[key] == value``,
    oldest first."""
    holding = [
        job
        for job in jobs
        if getattr(job, "submission_id", None) != job_id
        and _status(job) not in _TERMINAL
        and _metadata_of(job).get(key) == value
    ]
    return sorted(holding, key=_order)


def held_sentence(holder: Any, key: str, value: str) -> str:
    meta = _metadata_of(holder)
    run = meta.get("run_id") or holder.submission_id
    return (
        f"Training run {run} (Ray job {holder.submission_id}, {_status(holder)}) is already running for "
        f"{key} {value}: wait for it to end, stop it (ray_job state=stopped), or pass -e train_queue=true "
        "to queue behind it."
    )


def largest_node_cpus(address: str) -> int:
    """CPUs of the largest alive node, from Ray's state API on the dashboard (token auth applies)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return int(max((float((n.resources_total or {}).get("CPU", 0)) for n in nodes), default=0))


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
    "resubmit_lost": {"type": "int", "default": 0},
    "exclusive_key": {"type": "str"},
    "queue": {"type": "bool", "default": False},
    "queue_timeout_s": {"type": "int", "default": 3600},
    "min_node_cpus": {"type": "int", "default": 0},
    "min_node_cpus_name": {"type": "str", "default": "min_node_cpus"},
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
        except RuntimeError as err:  # the SDK's "job does not exist" (HTTP 404), or another refusal
            if "does not exist" in str(err) or "404" in str(err):
                return None
            module.fail_json(
                msg=f"The Ray Jobs API at {p['address']} refused a status call ({_one_line(err)})."
            )
        except Exception as err:  # the head went away between calls (restarting): one sentence
            module.fail_json(
                msg=f"Cannot reach the Ray Jobs API at {p['address']} ({_one_line(err)}): the head may be "
                "restarting; the job's state is unknown."
            )

    changed = False
    current = info()
    key = p["exclusive_key"]
    value = str(p["metadata"].get(key, "")) if key else ""
    if key and not value:
        module.fail_json(
            msg=f"exclusive_key {key!r} is not a key of metadata: add it or leave exclusive_key out."
        )
    if p["state"] == "present" and current is None and p["min_node_cpus"] > 0:
        try:
            largest = largest_node_cpus(p["address"])
        except Exception as err:
            module.fail_json(msg=f"Cannot list the Ray cluster's nodes at {p['address']} ({_one_line(err)}).")
        if p["min_node_cpus"] > largest:
            module.fail_json(
                msg=f"{p['min_node_cpus_name']} is {p['min_node_cpus']}, more than any node of the cluster "
                f"offers: the largest offers {largest} CPU(s) to Ray, so pass at most {largest} "
                "(nothing was submitted)."
            )
    if p["state"] == "present" and current is None and key:
        deadline = time.monotonic() + p["queue_timeout_s"]
        while holders := others_holding(client.list_jobs(), job_id, key, value):
            if not p["queue"] or time.monotonic() >= deadline:
                waited = f" (waited {p['queue_timeout_s']} s in the queue)" if p["queue"] else ""
                module.fail_json(msg=held_sentence(holders[0], key, value) + waited, status="REFUSED")
            time.sleep(5)
    if p["state"] == "present" and current is None:
        changed = True
        if module.check_mode:
            _check_mode_exit(
                module,
                True,
                "PENDING",
                f"check mode: job {job_id} would be submitted (nothing was submitted)",
            )
        submit_deadline = time.monotonic() + SUBMIT_RETRY_S
        while True:
            try:
                client.submit_job(
                    entrypoint=p["entrypoint"],
                    submission_id=job_id,
                    runtime_env=p["runtime_env"] or None,
                    metadata={k: str(v) for k, v in p["metadata"].items()},
                )
                break
            except Exception as err:  # a head just (re)started has no job agent for some seconds
                if "No available agent" in str(err) and time.monotonic() < submit_deadline:
                    time.sleep(2)
                    continue
                module.fail_json(
                    msg=f"The Ray Jobs API at {p['address']} did not take job {job_id} ({_one_line(err)})."
                )
        current = info()
        if key:  # a race: both submitted after seeing none; the older one runs, this one stops
            mine = next((j for j in client.list_jobs() if j.submission_id == job_id), None)
            older = [
                j
                for j in others_holding(client.list_jobs(), job_id, key, value)
                if mine is None or _order(j) < _order(mine)
            ]
            if older:
                client.stop_job(job_id)
                module.fail_json(msg=held_sentence(older[0], key, value), status="REFUSED")
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
        if p["state"] == "status" and p["log_offset"] > 0:  # it was followed, so it existed: lost
            _exit_lost(module, job_id, [], p["log_offset"], "the Jobs API no longer knows it")
        module.fail_json(msg=f"No Ray job with submission id {job_id!r} on {p['address']}.")
    status = _status(current)
    logs = client.get_job_logs(job_id)
    lines, offset = new_lines(logs, p["log_offset"], status in _TERMINAL)
    deadline = time.monotonic() + p["wait_s"]
    while p["state"] == "status" and not lines and status not in _TERMINAL and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        current = info()
        if current is None:
            _exit_lost(module, job_id, lines, offset, "it disappeared from the Jobs API while followed")
        status_now = _status(current)
        logs = client.get_job_logs(job_id)
        lines, offset = new_lines(logs, p["log_offset"], status_now in _TERMINAL)
        if status_now != status:
            status = status_now
            break
    lost = driver_lost(status, current)
    result: dict[str, object] = {
        "changed": changed,
        "status": status,
        "finished": status in _TERMINAL,
        "lost": lost,
    }
    result.update(summarize_logs(logs, p["log_tail"]))
    result.update(log_lines=lines, log_offset=offset)
    if lost and "metrics" not in result:
        said = (str(current.message or "").strip().splitlines() or ["no message"])[0]
        result["error"] = lost_sentence(job_id, f"Ray: {said}")
    elif status == "FAILED" and "error" not in result:
        result["error"] = current.message or "the job failed without a message; see logs_tail"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
