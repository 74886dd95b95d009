"""The cloud's S3 endpoint: a moto server on the bridge's gateway, its buckets, and what a node needs for it.

The server carries its cloud's name in its environment (``RAYOPS_LOCAL_CLOUD=<name>``), so ``down``
finds it by name. A server without that mark (started by an older rayops) is matched by its
``-H <gateway>`` only when the caller can prove that gateway is the cloud's (its state file, or the
address its bridge carries): never by a subnet that is merely assumed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayops.localcloud import system
from rayops.localcloud.errors import LocalCloudError
from rayops.localcloud.state import CloudSpec

CLOUD_ENV = "RAYOPS_LOCAL_CLOUD"  # marks a server with the name of its cloud
# moto takes any key pair and any region: placeholders, not credentials.
PLACEHOLDER_KEY = "rayops-local"
REGION = "us-east-1"


def start(spec: CloudSpec) -> int:
    """Start the server in the background (``<state dir>/logs/s3.log``); its pid."""
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        raise LocalCloudError(f"moto_server is not installed next to {sys.executable}: run `make setup`")
    log = (spec.logs_dir / "s3.log").open("ab")
    proc = subprocess.Popen(
        [str(moto), "-H", spec.gateway, "-p", str(spec.s3_port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, CLOUD_ENV: spec.name},
    )
    return proc.pid


def _is_moto(argv: list[str]) -> bool:
    return any(a.endswith("moto_server") for a in argv[:2])


def is_server(pid: int | None, cloud: str) -> bool:
    """Whether ``pid`` is alive and is the S3 server of ``cloud`` (a pid in a state file may belong to another
    process by now: pids are reused, and this host's pid_max is 32768)."""
    return (
        pid is not None
        and system.pid_alive(pid)
        and _is_moto(system.cmdline(pid))
        and system.environ(pid).get(CLOUD_ENV) == cloud
    )


def server_pids(cloud: str, gateway: str | None) -> list[int]:
    """The S3 servers of ``cloud``: marked with its name, or unmarked on its proven ``gateway``."""

    found = []
    for pid in system.find_pids(_is_moto):
        mark = system.environ(pid).get(CLOUD_ENV)
        if mark == cloud:
            found.append(pid)
        elif mark is None and gateway is not None:
            argv = system.cmdline(pid)
            if any(a == "-H" and b == gateway for a, b in itertools.pairwise(argv)):
                found.append(pid)
    return found


def stop(cloud: str, gateway: str | None) -> None:
    """Stop every S3 server of ``cloud`` (see server_pids): SIGTERM, then SIGKILL after 10 s."""
    pids = server_pids(cloud, gateway)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    system.wait_gone(pids, 10)
    for p in pids:
        if system.pid_alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def node_env(spec: CloudSpec) -> dict[str, str]:
    """What a process on a node needs for this S3 (the contract's ``s3_env``): no instance metadata
    service to ask, a region, and a placeholder key pair that moto accepts."""
    return {
        "AWS_ENDPOINT_URL_S3": spec.s3_endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": PLACEHOLDER_KEY,
        "AWS_SECRET_ACCESS_KEY": PLACEHOLDER_KEY,
    }


def client(spec: CloudSpec) -> Any:
    """A boto3 S3 client for this cloud's endpoint (moto accepts any credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=spec.s3_endpoint_url,
        region_name=REGION,
        aws_access_key_id=PLACEHOLDER_KEY,
        aws_secret_access_key=PLACEHOLDER_KEY,
    )


def create_buckets(spec: CloudSpec, log: Callable[[str], None]) -> None:
    """Wait up to 30 s for the server to answer, then create the four buckets, versioning on."""
    s3 = client(spec)
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.list_buckets()
            break
        except Exception as err:
            if time.monotonic() > deadline:
                raise LocalCloudError(f"the S3 endpoint {spec.s3_endpoint_url} did not start: {err}") from err
            time.sleep(0.3)
    for bucket in spec.buckets().values():
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    log(f"buckets {', '.join(spec.buckets().values())} created, versioning on")
