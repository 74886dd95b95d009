"""Benchmark: site.yml on fresh local-cloud machines (cold), its idempotent re-run, and the
controller wheelhouse against independent per-node installs from the package index.

Runs, in one go and on machines of its own (cloud ``rbench``, 10.213.191.0/24, never the user's):

1. ``wheelhouse-cold``: fresh machines, empty controller wheel cache: site.yml downloads the pins
   once on the controller (pip download for the nodes' Python/platform), pushes one archive to every
   node, installs offline;
2. ``idempotent``: site.yml again on the same cluster (changed=0);
3. ``wheelhouse-warm``: fresh machines, the cache from run 1 (what a second cluster costs);
4. ``index``: fresh machines, ``ray_node_install_method=index``: every node resolves and downloads
   from PyPI itself.

It prints each wall time and the ratios (cold/idempotent, index/wheelhouse). Wall times depend on the
host's load (2 shared cores here): compare ratios within one run, not across runs.

Run (root): ``.venv/bin/python bench/bench_site.py [--skip-index] [--skip-warm]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rayops.ansible_env import BIN, REPO, ansible_env
from rayops.localcloud.cloud import CloudSpec, LocalCloud

RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def site(inventory: Path, *extra: str) -> tuple[float, int]:
    """Run site.yml; return (seconds, total changed) or exit with its output on failure."""
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "site.yml", *extra],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-5000:] + proc.stderr[-2000:])
        raise SystemExit(f"bench: site.yml {' '.join(extra)} failed (rc {proc.returncode})")
    return took, sum(int(m[1]) for m in RECAP.findall(proc.stdout))


Timing = tuple[float, int, float | None, int | None]


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def fresh_cluster(label: str, state: Path, *extra: str, rerun: bool = False) -> Timing:
    """Boot fresh machines, run site.yml (and optionally again), always tear the machines down."""
    cloud = LocalCloud(
        CloudSpec(name="rbench", workers=2, subnet="10.213.191.0/24", s3_port=5795, state_dir=str(state)),
        log=lambda _msg: None,
    )
    try:
        say(f"{label}: booting 3 fresh machines")
        cloud.up()
        inventory = state / "bench.pulumi_stack.yml"
        inventory.write_text(f"plugin: pulumi_stack\noutputs_file: {cloud.outputs_path.resolve()}\n")
        say(f"{label}: site.yml")
        cold, cold_changed = site(inventory, *extra)
        say(f"{label}: site.yml took {cold:.0f} s (changed={cold_changed})")
        again, again_changed = None, None
        if rerun:
            say(f"{label}: site.yml again (idempotent re-run)")
            again, again_changed = site(inventory, *extra)
            say(f"{label}: the re-run took {again:.0f} s (changed={again_changed})")
        return cold, cold_changed, again, again_changed
    finally:
        say(f"{label}: removing the machines")
        cloud.down(quiet=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-index", action="store_true", help="skip the per-node index install run")
    parser.add_argument("--skip-warm", action="store_true", help="skip the warm-cache wheelhouse run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: the local cloud needs root; run it as root")

    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="rayops-bench-") as tmp:
        cache = Path(tmp) / "wheelhouse"
        wheel_args = ("-e", f"ray_node_wheelhouse_dir={cache}")
        cold, cold_changed, again, again_changed = fresh_cluster(
            "wheelhouse-cold", Path(tmp) / "a", *wheel_args, rerun=True
        )
        rows.append(("wheelhouse-cold (fresh machines, empty cache)", cold, cold_changed))
        assert again is not None and again_changed is not None
        rows.append(("idempotent re-run", again, again_changed))
        warm = None
        if not args.skip_warm:
            warm, warm_changed, _, _ = fresh_cluster("wheelhouse-warm", Path(tmp) / "b", *wheel_args)
            rows.append(("wheelhouse-warm (fresh machines, cached wheels)", warm, warm_changed))
        index = None
        if not args.skip_index:
            index, index_changed, _, _ = fresh_cluster(
                "index", Path(tmp) / "c", "-e", "ray_node_install_method=index"
            )
            rows.append(("index (fresh machines, every node from PyPI)", index, index_changed))

    print(f"\n{'run':52} {'seconds':>8} {'changed':>8}")
    for name, seconds, changed in rows:
        print(f"{name:52} {seconds:8.1f} {changed:8d}")
    print("\nratios")
    print(f"  cold / idempotent re-run:         {cold / again:6.2f}x")
    if warm is not None:
        print(f"  wheelhouse cold / warm cache:     {cold / warm:6.2f}x")
    if index is not None:
        print(f"  index / wheelhouse (cold cache):  {index / cold:6.2f}x")
        if warm is not None:
            print(f"  index / wheelhouse (warm cache):  {index / warm:6.2f}x")


if __name__ == "__main__":
    main()
