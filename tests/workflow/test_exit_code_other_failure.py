"""The workflow's exit code 1: a failure that is neither bad input (2) nor a model left unpromoted (3).

An S3 endpoint nobody listens on, with the real dataset: ingest parses it, then cannot upload it. ~4 s.
"""

from __future__ import annotations

import json

from moto_helpers import free_port
from workflow_helpers import REPO, run_cli

DATASET = REPO.parent / "shared" / "data" / "powerconsumption.csv"
BUCKETS = {"raw": "x-raw", "features": "x-features", "models": "x-models", "results": "x-results"}


def test_unreachable_s3_exits_1_with_one_sentence() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(
        "--dataset",
        str(DATASET),
        "--buckets",
        json.dumps(BUCKETS),
        "--s3-endpoint-url",
        endpoint,
        "--target-zone",
        "1",
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("[rayops] error: ")]
    key = "zone1/current.json"  # the run's first S3 request: the live model, after the data is checked
    assert errors == [
        f"[rayops] error: cannot reach s3://x-models/{key} at {endpoint} "
        f'(Could not connect to the endpoint URL: "{endpoint}/x-models/{key}"): '
        "check --s3-endpoint-url and the network"
    ], proc.stderr[-3000:]
    assert "stage 1/5 ingest: failed after" in proc.stdout
