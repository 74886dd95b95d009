"""Benchmark: cluster bring-up (fresh machines + site.yml), the idempotent re-run, and the install step of the
controller wheelhouse against per-node index installs, each against a floor measured in the same run.

Runs on machines of its own (clouds ``rbench*``, 10.213.191.0/24, never the user's), every variant
``--repeat`` times (default 3) on fresh machines, each cluster with a fact cache of its own (nothing
from an earlier cluster) and a cloud name of its own (a machine booted right after the removal of one of
the same name failed to boot twice here):

1. ``cold``: boot 3 fresh machines and run site.yml, the controller's wheel cache warm (it is filled once
   first, untimed: that download is the same for every later cluster). Floor: installing the same locked
   packages into one venv on this controller with the same installer (uv, offline, from the same wheels).
2. ``idempotent``: site.yml again on that cluster; ``changed=0`` is asserted. Floor: a one-task ping
   play on the same inventory (what any Ansible run costs).
3. ``index``: fresh machines, ``ray_node_install_method=index`` (every node downloads from its index).
   The install steps of 1 and 3 are compared from a per-task profile
   (bench/callback_plugins/rayops_profile.py), not the whole play.

It prints min/median of each, the ratios, and the slowest tasks of the median cold run. Wall times
depend on the host's load (2 shared cores here): compare ratios within one run, not across runs.

Run (root): ``.venv/bin/python bench/bench_site.py [--repeat 3] [--skip-index]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayops.ansible_env import BIN, REPO, ansible_env
from rayops.localcloud.cloud import CloudSpec, LocalCloud

RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# The tasks that make up "the install step" in the per-task profile.
WHEELHOUSE_STEP = (
    "Download the wheelhouse",
    "Push and unpack the wheelhouse",
    "Unpack uv from its wheel",
    "Install the pinned packages with uv",
)
INDEX_STEP = (
    "Download uv's wheel from the index",
    "Unpack uv from its wheel",
    "Install the pinned packages with uv",
)


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


@dataclass
class Run:
    seconds: float
    changed: int
    profile: list[dict[str, Any]] = field(default_factory=list)

    def step(self, names: tuple[str, ...]) -> float:
        return sum(r["seconds"] for r in self.profile if any(r["task"].endswith(n) for n in names))


def playbook(inventory: Path, facts: Path, playbook_args: list[str]) -> Run:
    """Run ansible-playbook with the profile callback; return its wall time, total changed and profile."""
    profile = facts.parent / "profile.json"
    env = ansible_env(
        ANSIBLE_CACHE_PLUGIN="jsonfile",
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(facts),
        ANSIBLE_CALLBACK_PLUGINS=str(REPO / "bench" / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="rayops_profile",
        RAYOPS_PROFILE_FILE=str(profile),
    )
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), *playbook_args],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-5000:] + proc.stderr[-2000:])
        raise SystemExit(f"bench: ansible-playbook {' '.join(playbook_args)} failed (rc {proc.returncode})")
    rows = json.loads(profile.read_text()) if profile.is_file() else []
    return Run(took, sum(int(m[1]) for m in RECAP.findall(proc.stdout)), rows)


class Cluster:
    """Fresh machines of the bench's own cloud, with a fact cache of their own; always torn down."""

    def __init__(self, root: Path, label: str, name: str) -> None:
        self.state = root / label
        self.state.mkdir(parents=True)
        self.facts = self.state / "facts"
        self.cloud = LocalCloud(
            CloudSpec(
                name=name, workers=2, subnet="10.213.191.0/24", s3_port=5795, state_dir=str(self.state)
            ),
            log=lambda _msg: None,
        )
        self.inventory = self.state / "bench.pulumi_stack.yml"

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cloud.down(quiet=True)

    def boot_and_site(self, *extra: str) -> Run:
        start = time.monotonic()
        self.cloud.up()
        self.inventory.write_text(
            f"plugin: pulumi_stack\noutputs_file: {self.cloud.outputs_path.resolve()}\n"
        )
        booted = time.monotonic() - start
        run = playbook(self.inventory, self.facts, ["site.yml", *extra])
        run.seconds += booted
        return run

    def site(self, *extra: str) -> Run:
        return playbook(self.inventory, self.facts, ["site.yml", *extra])

    def ping(self) -> Run:
        play = self.state / "ping.yml"
        play.write_text(
            "- hosts: ray_cluster\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
        )
        return playbook(self.inventory, self.facts, [str(play)])


def controller_floor(wheelhouse: Path, tmp: Path) -> float:
    """Seconds to install the default profile's locked pins into one fresh venv here, with uv, offline."""
    uv = shutil.which("uv", path=str(BIN)) or shutil.which("uv")
    if uv is None:
        raise SystemExit("bench: uv is not on PATH (make setup installs it into .venv)")
    venv = tmp / "floor-venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    pins = [line for line in (REPO / "requirements-cluster.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    start = time.monotonic()
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--offline", "--no-index",
         "--find-links", str(wheelhouse), "--constraint", str(REPO / "constraints-cluster.txt"), *pins],
        env={**os.environ, "UV_CACHE_DIR": str(tmp / "floor-cache")}, check=True,
    )  # fmt: skip
    return time.monotonic() - start


def stats(values: list[float]) -> str:
    return f"min {min(values):7.1f}  median {statistics.median(values):7.1f}"


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh clusters per variant (default 3)")
    parser.add_argument("--skip-index", action="store_true", help="skip the per-node index install runs")
    parser.add_argument("--top", type=int, default=12, help="slowest tasks to print (default 12)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: the local cloud needs root; run it as root")

    with tempfile.TemporaryDirectory(prefix="rayops-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "wheelhouse"
        wheel_args = ("-e", f"ray_node_wheelhouse_dir={cache}")
        say("filling the controller's wheel cache (untimed, once)")
        with Cluster(tmp, "prime", "rbench0") as prime:
            primed = prime.boot_and_site(*wheel_args)
        say(f"  {primed.seconds:.1f} s (boot + site.yml, empty wheel cache)")
        wheelhouses = [p for p in cache.iterdir() if p.is_dir() and (p / ".complete").is_file()]
        floor = controller_floor(wheelhouses[0], tmp)
        say(f"controller floor (one venv, uv, offline): {floor:.1f} s")

        cold: list[Run] = []
        again: list[Run] = []
        ping: list[Run] = []
        for i in range(args.repeat):
            with Cluster(tmp, f"wheelhouse-{i}", f"rbench{1 + i}") as cluster:
                say(f"cold {i + 1}/{args.repeat}: boot + site.yml")
                cold.append(cluster.boot_and_site(*wheel_args))
                say(f"  {cold[-1].seconds:.1f} s (changed={cold[-1].changed})")
                again.append(cluster.site(*wheel_args))
                if again[-1].changed != 0:
                    raise SystemExit(
                        f"bench: the re-run changed {again[-1].changed} things (idempotence broken)"
                    )
                ping.append(cluster.ping())
                say(f"  re-run {again[-1].seconds:.1f} s (changed=0), ping play {ping[-1].seconds:.1f} s")
        index: list[Run] = []
        if not args.skip_index:
            for i in range(args.repeat):
                with Cluster(tmp, f"index-{i}", f"rbenchx{i}") as cluster:
                    say(f"index {i + 1}/{args.repeat}: boot + site.yml, every node from its index")
                    index.append(cluster.boot_and_site("-e", "ray_node_install_method=index"))
                    say(f"  {index[-1].seconds:.1f} s")

    cold_s = [r.seconds for r in cold]
    again_s = [r.seconds for r in again]
    ping_s = [r.seconds for r in ping]
    wh_step = [r.step(WHEELHOUSE_STEP) for r in cold]
    print(f"\n{'run (seconds, ' + str(args.repeat) + ' fresh clusters each)':58} ")
    print(f"{'cold: boot + site.yml, empty wheel cache':42} {primed.seconds:7.1f}  (once)")
    print(f"{'cold: boot + site.yml, wheel cache warm':42} {stats(cold_s)}")
    print(f"{'idempotent re-run (changed=0)':42} {stats(again_s)}")
    print(f"{'ping play (Ansible floor)':42} {stats(ping_s)}")
    print(f"{'controller floor: one venv, uv offline':42} {floor:7.1f}")
    print(f"{'install step, wheelhouse (profile)':42} {stats(wh_step)}")
    if index:
        ix_step = [r.step(INDEX_STEP) for r in index]
        print(f"{'cold: boot + site.yml, index':42} {stats([r.seconds for r in index])}")
        print(f"{'install step, index (profile)':42} {stats(ix_step)}")
    med = statistics.median
    print("\nratios (medians)")
    print(f"  cold / controller floor:            {med(cold_s) / floor:6.2f}x")
    print(f"  idempotent re-run / ping play:      {med(again_s) / med(ping_s):6.2f}x")
    print(f"  cold / idempotent re-run:           {med(cold_s) / med(again_s):6.2f}x")
    if index:
        print(f"  install step wheelhouse / index:    {med(wh_step) / med(ix_step):6.2f}x")
    for label, runs in (("median cold run", cold), ("median re-run", again)):
        run = median_run(runs)
        print(f"\nslowest tasks of the {label} ({run.seconds:.1f} s, all hosts together)")
        for row in sorted(run.profile, key=lambda r: -r["seconds"])[: args.top]:
            print(f"  {row['seconds']:6.2f}  {row['task']}")


if __name__ == "__main__":
    main()
