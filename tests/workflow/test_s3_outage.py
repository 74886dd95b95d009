"""Issue 16, item 5: an S3 outage during a run. The endpoint (a moto server of this test) is paused
with SIGSTOP, as the chaos row pauses the cluster's: connections hang, as on a partition. With the
attempt timeouts shortened (the module's constants), a pause shorter than the retry bound is ridden
out by boto3 and by pyarrow (Ray Data's and Ray Train's filesystem); a longer one fails the call with
one sentence. ~15 s."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto_helpers import moto_server_process

from rayops.workflow import s3
from rayops.workflow.errors import WorkflowError
from rayops.workflow.s3 import S3Store

# Timing-sensitive fault rows: `make test` runs them alone (tests/lanes.py, stage 3), not beside Molecule.
pytestmark = pytest.mark.solo


@pytest.fixture
def paused_endpoint(aws_test_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with moto_server_process() as (endpoint, proc):
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
        yield endpoint, proc
        os.kill(proc.pid, signal.SIGCONT)  # never leave it stopped


@pytest.fixture
def short_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "S3_CONNECT_TIMEOUT_S", 1)
    monkeypatch.setattr(s3, "S3_READ_TIMEOUT_S", 1)


def _pause(proc: subprocess.Popen[bytes], seconds: float) -> threading.Thread:
    os.kill(proc.pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, os.kill, (proc.pid, signal.SIGCONT))
    resume.start()
    return resume


def test_an_outage_shorter_than_the_bound_is_ridden_out(
    paused_endpoint: tuple[str, Any], short_attempts: None
) -> None:
    endpoint, proc = paused_endpoint
    store = S3Store(endpoint)
    fs = store.filesystem()
    resume = _pause(proc, 4)
    started = time.monotonic()
    put = store.put_json("outage", "k.json", {"a": 1})  # boto3: attempts time out, then one succeeds
    boto_s = time.monotonic() - started
    with fs.open_output_stream("outage/arrow.bin") as out:  # pyarrow: the same bound
        out.write(b"x")
    resume.join()
    assert boto_s >= 3, f"the put returned after {boto_s:.1f} s, during the pause: nothing was retried"
    assert store.get_json("outage", "k.json") == {"a": 1} and put.key == "k.json"
    assert fs.open_input_stream("outage/arrow.bin").read() == b"x"
    print(f"S3 paused 4 s: the put succeeded after {boto_s:.1f} s (retried)")


def test_an_outage_longer_than_the_bound_is_one_sentence(
    paused_endpoint: tuple[str, Any], short_attempts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3, "S3_MAX_ATTEMPTS", 2)
    endpoint, proc = paused_endpoint
    store = S3Store(endpoint)
    resume = _pause(proc, 8)
    started = time.monotonic()
    with pytest.raises(WorkflowError) as caught:
        store.put_json("outage", "k.json", {"a": 1})
    took = time.monotonic() - started
    resume.join()
    assert str(caught.value).startswith(f"cannot write s3://outage/k.json at {endpoint} (Read timeout")
    assert "\n" not in str(caught.value)
    assert took < 8, f"2 attempts of 1 s took {took:.1f} s"
    assert store.get_json("outage", "k.json") is None  # nothing written
