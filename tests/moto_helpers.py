"""A moto S3 server on a free loopback port, for the tests of every folder (``tests/`` is on sys.path)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_server() -> Iterator[str]:
    """The .venv's moto_server on 127.0.0.1 until the block ends; yields its endpoint URL."""
    with moto_server_process() as (endpoint, _proc):
        yield endpoint


@contextmanager
def moto_server_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``moto_server`` that also yields the process (a test may pause it: an S3 outage)."""
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(endpoint, timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
