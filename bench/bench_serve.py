"""Benchmark: the served model through Ray Serve against its floor and a plain-uvicorn peer, in one run.

On the local cloud after ``make local`` (a served model; ``--outputs`` names another cloud's contract): copies
``serve_load.py`` to the head and runs it there as ``ray`` with the venv's Python, so every request goes to
127.0.0.1 on that machine (bounded: a few thousand requests, at most ~2 minutes). Then prints the figures and
the ratios against the issue's goals:

- p99 at concurrency 1 through Serve <= the floor's p50 (in-process predict of one row) + 10 ms;
- >= 300 single-row requests/s at concurrency 32 (2 replicas);
- Serve's throughput >= 0.5x the plain-uvicorn peer's (the same app, no Ray);
- rows/s with 1,000-row bodies >= 20x the single-row requests/s;
- and what the model-quality monitor (drift window, live error) adds to one predict call, with it and
  without it in the same process.

Run: ``.venv/bin/python bench/bench_serve.py [--outputs .rayops/local/outputs.json]``. Wall times depend
on the host's load (2 shared cores here): compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", type=Path, default=REPO / ".rayops" / "local" / "outputs.json")
    args = parser.parse_args()
    if not args.outputs.exists():
        print(
            f"{args.outputs} is missing: run `make local` first (a cluster with a served model)",
            file=sys.stderr,
        )
        return 2
    outputs = json.loads(args.outputs.read_text())
    head = next(n for n in outputs["nodes"] if n["role"] == "head")
    ssh = [
        "ssh",
        "-i",
        outputs["ssh_private_key_file"],
        "-o",
        f"UserKnownHostsFile={outputs['ssh_known_hosts_file']}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "LogLevel=ERROR",
        f"{outputs['ssh_user']}@{head['private_ip']}",
    ]
    token_file = REPO / ".rayops" / "secrets" / outputs["cluster_name"] / "serve_token"
    target = f"{outputs['ssh_user']}@{head['private_ip']}"
    copy = ["scp", *ssh[1:-1], str(REPO / "bench" / "serve_load.py"), f"{target}:/tmp/rayops-serve-load.py"]
    subprocess.run(copy, check=True, timeout=60)
    run = (
        "sudo -u ray bash -c 'set -a; . /etc/rayops/ray-client.env; set +a; "
        "exec /opt/rayops/venv/bin/python /tmp/rayops-serve-load.py /etc/rayops/serve/config.json'"
    )
    proc = subprocess.run(
        [*ssh, run],
        input=token_file.read_text().strip() + "\n",
        text=True,
        capture_output=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    floor1, floor1000 = r["floor"]["1_row"], r["floor"]["1000_rows"]
    print(
        f"floor (in-process inplace_predict): 1 row p50 {floor1['p50_ms']:.2f} ms, 1,000 rows p50 "
        f"{floor1000['p50_ms']:.2f} ms"
    )
    q = r["quality"]
    for name in ("1_row", "1000_rows"):
        with_, without = q[name]["with"], q[name]["without"]
        print(
            f"quality monitor, {name.replace('_', ' ')} per predict call: p50 {with_:.0f} us with it, "
            f"{without:.0f} us without (+{with_ - without:.0f} us, {with_ / without:.2f}x)"
        )
    print(f"quality snapshot ({q['scored']}): {q['snapshot_ms']:.2f} ms, every 5 s per replica")
    for name in ("peer", "serve"):
        x = r[name]
        failed = x["c1"]["failed"] + x["c32"]["failed"] + x["batch_1000"]["failed"]
        print(
            f"{name:5}: c1 p50 {x['c1']['p50_ms']:.1f} ms p99 {x['c1']['p99_ms']:.1f} ms; "
            f"c32 {x['c32']['per_s']:.0f} req/s; "
            f"1,000-row bodies {x['batch_1000']['per_s'] * 1000:.0f} rows/s; failed {failed}"
        )
    s, p = r["serve"], r["peer"]
    p99_over_floor = s["c1"]["p99_ms"] - floor1["p50_ms"]
    vs_peer = s["c32"]["per_s"] / p["c32"]["per_s"]
    batch_ratio = s["batch_1000"]["per_s"] * 1000 / s["c32"]["per_s"]
    checks = [
        ("Serve p99 at c1 - floor p50 (goal <= 10 ms)", p99_over_floor, "ms", p99_over_floor <= 10),
        ("Serve req/s at c32 (goal >= 300)", s["c32"]["per_s"], "req/s", s["c32"]["per_s"] >= 300),
        ("Serve / peer throughput at c32 (goal >= 0.5)", vs_peer, "x", vs_peer >= 0.5),
        ("Serve 1,000-row rows/s / single-row req/s (goal >= 20)", batch_ratio, "x", batch_ratio >= 20),
    ]
    for label, value, unit, ok in checks:
        print(f"{label}: {value:.2f} {unit} {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
