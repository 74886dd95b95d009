"""Fixtures of the workflow tests: test-only AWS settings, a moto S3 server on loopback, a local Ray.

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto_helpers import moto_server
from workflow_helpers import TEST_ENV, make_buckets

from rayops.workflow.config import Buckets
from rayops.workflow.s3 import S3Store


@pytest.fixture(scope="module", autouse=True)
def aws_test_env() -> Iterator[dict[str, str]]:
    """Fake credentials for moto, set for this module only (Ray workers started here inherit them)."""
    saved = {k: os.environ.get(k) for k in TEST_ENV}
    os.environ.update(TEST_ENV)
    yield TEST_ENV
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def moto_endpoint(aws_test_env: dict[str, str]) -> Iterator[str]:
    """A moto S3 server on a free loopback port (the .venv's moto_server)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def store(moto_endpoint: str) -> S3Store:
    return S3Store(moto_endpoint)


@pytest.fixture
def buckets(s3: Any) -> Buckets:
    """Four fresh versioned buckets, like the stack creates."""
    return make_buckets(s3)


@pytest.fixture(scope="module")
def ray_local(aws_test_env: dict[str, str]) -> Iterator[None]:
    """A small local Ray (2 CPUs), shut down after the module."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
