#!/usr/bin/env python3
"""Ray Jobs as node-exporter textfile metrics: the head's Jobs API (the dashboard) has no failed-job metric.

Run by rayops-jobs-textfile.timer on the head as the Ray user: reads the jobs from the Jobs API with the
cluster's token and writes, atomically, <textfile dir>/ray_jobs.prom for the node exporter:

- rayops_ray_jobs{kind,status}: how many jobs the API lists, by kind and status;
- rayops_ray_job_last_failed{kind,submission_id}: 1 when the latest finished job of that kind failed, else 0;
- rayops_ray_jobs_query_success: 1 when the API answered.

A job's kind is "train" for train.yml's submission ids (rayops-train-<run id>), else "other".
Standard library only; the pure function `render` is unit tested (tests/monitoring/).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")
KINDS = ("train", "other")
STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")


def kind(job: dict[str, Any]) -> str:
    return "train" if str(job.get("submission_id") or "").startswith("rayops-train-") else "other"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(jobs: list[dict[str, Any]] | None) -> str:
    """The textfile for ``jobs`` (the Jobs API's list), or for a failed query when ``jobs`` is None."""
    lines = [
        "# HELP rayops_ray_jobs_query_success 1 when the head's Jobs API answered.",
        "# TYPE rayops_ray_jobs_query_success gauge",
        f"rayops_ray_jobs_query_success {0 if jobs is None else 1}",
    ]
    if jobs is None:
        return "\n".join(lines) + "\n"
    counts = Counter((kind(j), str(j.get("status"))) for j in jobs)
    lines += [
        "# HELP rayops_ray_jobs Ray Jobs the head's Jobs API lists, by kind and status.",
        "# TYPE rayops_ray_jobs gauge",
    ]
    lines += [
        f'rayops_ray_jobs{{kind="{k}",status="{s}"}} {counts.get((k, s), 0)}' for k in KINDS for s in STATUSES
    ]
    lines += [
        "# HELP rayops_ray_job_last_failed 1 when the latest finished job of the kind failed.",
        "# TYPE rayops_ray_job_last_failed gauge",
    ]
    for k in KINDS:
        finished = [j for j in jobs if kind(j) == k and j.get("status") in FINISHED]
        if finished:
            last = max(finished, key=lambda j: (j.get("end_time") or 0, str(j.get("submission_id"))))
            sid = _label(str(last.get("submission_id") or last.get("job_id") or ""))
            failed = 1 if last.get("status") == "FAILED" else 0
            lines.append(f'rayops_ray_job_last_failed{{kind="{k}",submission_id="{sid}"}} {failed}')
    return "\n".join(lines) + "\n"


def fetch(address: str, token_path: str) -> list[dict[str, Any]] | None:
    headers = {}
    if token_path and Path(token_path).is_file():
        headers["Authorization"] = "Bearer " + Path(token_path).read_text(encoding="utf-8").strip()
    if not address.startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(address.rstrip("/") + "/api/jobs/", headers=headers)  # noqa: S310 (http(s) only, checked above)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 (http(s) only, checked above)
            data = json.loads(reply.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return [j for j in data if isinstance(j, dict)] if isinstance(data, list) else None


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: ray_jobs_textfile.py <dashboard url> <textfile dir>", file=sys.stderr)
        return 2
    address, folder = argv[1], Path(argv[2])
    text = render(fetch(address, os.environ.get("RAY_AUTH_TOKEN_PATH", "")))
    tmp = folder / ".ray_jobs.prom.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(folder / "ray_jobs.prom")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
