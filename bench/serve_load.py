"""The serving benchmark's load side, run ON THE HEAD by bench_serve.py (all traffic stays on that machine).

Measures, in one run and on one node: the floor (the served model's in-process predict of 1 row and of
1,000 rows), the peer (the same FastAPI app under plain uvicorn, no Ray, on a free loopback port) and Ray
Serve (the head's proxy on 127.0.0.1:8000): p50/p99 at concurrency 1, requests/s at concurrency 32, and
rows/s of /predict with 1,000-row bodies. Bounded in count and time. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes) -> int:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        try:
            self.conn.request("POST", path, body=body, headers=headers)
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return -1


def latency(port: int, token: str, path: str, body: bytes, count: int) -> dict[str, float]:
    client = Client(port, token)
    for _ in range(20):  # warm-up
        client.post(path, body)
    times, bad = [], 0
    for _ in range(count):
        start = time.perf_counter()
        bad += client.post(path, body) != 200
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "failed": bad, "n": count}


def throughput(
    port: int, token: str, path: str, body: bytes, threads: int, count: int, max_s: float
) -> dict[str, float]:
    done, bad, lock = 0, 0, threading.Lock()
    deadline = time.monotonic() + max_s

    def run() -> None:
        nonlocal done, bad
        client = Client(port, token)
        while time.monotonic() < deadline:
            with lock:
                if done >= count:
                    return
                done += 1
            if client.post(path, body) != 200:
                with lock:
                    bad += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run) for _ in range(threads)]:
            f.result()
    elapsed = time.perf_counter() - start
    return {"per_s": done / elapsed, "n": done, "failed": bad, "seconds": elapsed}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def quality_cost(user_config: dict[str, Any], row: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    """What the model-quality monitor adds to a predict call: the same service with it and without it
    (``quality`` None), alternating blocks so that the host's load hits both alike; and one snapshot of a
    full window (what the replica's exporter computes every 5 s)."""
    from rayops.serving.service import ModelService, Settings

    service = ModelService(Settings(zone=1))
    await service.reconfigure(user_config)
    monitor = service.quality
    out: dict[str, Any] = {}
    for name, matrix, n in (("1_row", row, 2000), ("1000_rows", rows, 40)):
        times: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(10):
            for state in ("with", "without"):
                service.quality = monitor if state == "with" else None
                for _ in range(n // 10):
                    start = time.perf_counter()
                    await service.predict(matrix)
                    times[state].append((time.perf_counter() - start) * 1e6)
        out[name] = {state: percentile(t, 50) for state, t in times.items()}
    service.quality = monitor
    assert monitor is not None
    snaps = []
    for _ in range(20):
        start = time.perf_counter()
        monitor.snapshot()
        snaps.append((time.perf_counter() - start) * 1000)
    out["snapshot_ms"] = percentile(snaps, 50)
    out["scored"] = monitor.snapshot()["drift"]["state"]
    return out


def main() -> None:
    from rayops.serving.app import build_app
    from rayops.serving.model import ModelSource, load
    from rayops.serving.service import ModelService, Settings
    from rayops.workflow.s3 import S3Store

    token = sys.stdin.readline().strip()  # the serve token, on stdin (never in argv or the environment)
    with open(sys.argv[1]) as f:
        config = json.load(f)
    app = next(a for a in config["applications"] if a["name"] == "zone1")
    user_config = app["deployments"][0]["user_config"]
    model = load(S3Store(), ModelSource.from_dict(user_config["model"]))
    row = np.ones((1, len(model.features)))
    rows = np.ones((1000, len(model.features)))
    floor = {}
    for name, matrix, n in (("1_row", row, 300), ("1000_rows", rows, 50)):
        model.predict(matrix)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            model.booster.inplace_predict(matrix)
            times.append((time.perf_counter() - start) * 1000)
        floor[name] = {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}
    one = json.dumps({"instances": [dict.fromkeys(model.features, 1.0)]}).encode()
    thousand = json.dumps({"instances": [dict.fromkeys(model.features, 1.0)] * 1000}).encode()

    quality = asyncio.run(quality_cost(user_config, row, rows))

    # The peer: the same app (no batching: @serve.batch needs a replica) under plain uvicorn, in a thread.
    import uvicorn

    service = ModelService(Settings(zone=1))
    asyncio.run(service.reconfigure(user_config))
    peer_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(service), host="127.0.0.1", port=peer_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    results: dict[str, Any] = {"floor": floor, "quality": quality}
    for name, port, path in (
        ("peer", peer_port, "/predict"),
        ("serve", int(config["http_options"]["port"]), "/zone1/predict"),
    ):
        results[name] = {
            "c1": latency(port, token, path, one, 300),
            "c32": throughput(port, token, path, one, 32, 3000, 30.0),
            "batch_1000": throughput(port, token, path, thousand, 2, 40, 30.0),
        }
    server.should_exit = True
    thread.join(timeout=10)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
