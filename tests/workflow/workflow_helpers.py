"""Helpers shared by the workflow tests (imported by name: `conftest` is ambiguous across folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

from rayops.ansible_env import REPO
from rayops.workflow.cli import METRICS_PREFIX
from rayops.workflow.config import Buckets

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def make_buckets(s3: Any, versioned: bool = True) -> Buckets:
    """Four fresh buckets, versioned like the stack creates them unless told otherwise."""
    suffix = uuid.uuid4().hex[:10]
    names = {kind: f"t-{kind}-{suffix}" for kind in ("raw", "features", "models", "results")}
    for name in names.values():
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return Buckets(**names)


def run_cli(
    *args: str, timeout: int = 900, program: tuple[str, ...] = ("-m", "rayops.workflow")
) -> subprocess.CompletedProcess[str]:
    """``python -m rayops.workflow run ARGS``; ``program`` replaces ``-m rayops.workflow`` (``-c CODE``)."""
    env = {**os.environ, **TEST_ENV}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, *program, "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )


def data_args(dataset: object, buckets: Any, endpoint: str) -> list[str]:
    """The workflow CLI's data options: a dataset, the buckets (a dict or Buckets), the S3 endpoint."""
    mapping = buckets.to_dict() if isinstance(buckets, Buckets) else buckets
    return ["--dataset", str(dataset), "--buckets", json.dumps(mapping), "--s3-endpoint-url", endpoint]


def metrics_line(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith(METRICS_PREFIX)]
    assert len(lines) == 1, stdout[-3000:]
    parsed: dict[str, Any] = json.loads(lines[0][len(METRICS_PREFIX) :])
    return parsed
