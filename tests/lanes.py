"""`make test` in lanes: what can share the two cores runs at once, the timing-sensitive tests run alone.

    lint       first, alone
    unit       pytest's unit tier (no machines)                     } at once
    molecule   every scenario, one after another (each its own cloud), but }
               the whole-cluster one, which the cluster lane's session runs (IN_SESSION)
    cluster    pytest's machine tier (marker localcloud), once `unit` ended: the local-cloud tests and the
               session cluster's boot, site.yml and quiet modules overlap Molecule's last scenarios; the
               modules from test_faults on wait until Molecule ended (the gate file RAYOPS_QUIET_GATE,
               tests/cluster/conftest.py GATED_FROM)
    solo       the timing-sensitive fault rows (marker solo), last and alone

Every lane writes its own log (.rayops/ci/<lane>.log); a lane's log is printed whole when it ends, and a line
every minute says what each running lane is doing. Every lane runs even when an earlier one failed, so one run
shows every failure. At the end: when each lane started and how long it took, and the 30 slowest tests of all
pytest lanes (from their JUnit XML), so the CI budget is visible in every run. Exit status 1 when any failed.

    python tests/lanes.py                 # what `make test` runs
    python tests/lanes.py --only unit     # one lane (lint, unit, molecule, cluster, solo), e.g. to rerun it
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
LOGS = REPO / ".rayops" / "ci"
#: Created when the Molecule lane has ended: the cluster lane's tests wait for it (tests/cluster/conftest.py).
GATE = LOGS / "quiet.gate"
GATE_ENV = "RAYOPS_QUIET_GATE"
GATE_TIMEOUT_S = 3600.0
HEARTBEAT_S = 60.0
STOP_GRACE_S = 300.0  # a stopped run's clouds: pytest's and Molecule's teardown take up to minutes
SLOWEST = 30
NAMES = ("lint", "unit", "molecule", "cluster", "solo")
# Molecule's scenarios that the cluster lane's pytest session runs instead: its session cluster converges
# with the whole-cluster scenario's group_vars, its no-change site.yml is the scenario's idempotence and
# tests/cluster/test_cluster_contract.py runs its verify, so `make test` boots one 3-node cluster, not two.
# `make molecule` (molecule test --all) still runs every scenario on its own cloud.
IN_SESSION = ("cluster",)


def scenarios() -> list[str]:
    """Molecule's scenarios in `molecule test --all`'s order (by name), the shared folder left out."""
    return sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))


@dataclass
class Lane:
    name: str
    commands: list[list[str]]  # run one after another; the lane goes on past a failed one
    after: tuple[str, ...] = ()  # starts once these lanes ended (those that run at all)
    junit: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    log: Path = field(init=False)
    began: float | None = None
    ended: float | None = None
    steps: list[tuple[str, float, int]] = field(default_factory=list)  # (what, seconds, rc)
    rc: int = 0

    def __post_init__(self) -> None:
        self.log = LOGS / f"{self.name}.log"


def lanes(pytest_args: list[str]) -> list[Lane]:
    pytest = [str(BIN / "pytest"), *pytest_args]

    def junit(name: str) -> Path:
        return LOGS / f"{name}.xml"

    return [
        Lane("lint", [["make", "--no-print-directory", "lint"]]),
        Lane(
            "unit",
            [[*pytest, "-m", "not localcloud and not solo", f"--junitxml={junit('unit')}"]],
            after=("lint",),
            junit=junit("unit"),
        ),
        Lane(
            "molecule",
            [[str(BIN / "molecule"), "test", "-s", name] for name in scenarios() if name not in IN_SESSION],
            after=("lint",),
        ),
        Lane(
            "cluster",
            [[*pytest, "-m", "localcloud", f"--junitxml={junit('cluster')}"]],
            after=("unit",),
            junit=junit("cluster"),
            env={GATE_ENV: str(GATE)},
        ),
        Lane(
            "solo",
            [[*pytest, "-m", "solo", f"--junitxml={junit('solo')}"]],
            after=("unit", "molecule", "cluster"),
            junit=junit("solo"),
        ),
    ]


def wait_for_gate(
    say: Callable[[str], None], timeout_s: float = GATE_TIMEOUT_S, poll_s: float = 5.0
) -> float | None:
    """Until the file RAYOPS_QUIET_GATE names exists: the seconds waited, None when no gate is set (a run
    outside `make test`). TimeoutError after ``timeout_s`` (the lane runner always creates the file)."""
    gate = os.environ.get(GATE_ENV)
    if not gate:
        return None
    start = time.monotonic()
    if Path(gate).exists():
        return 0.0
    say(f"cluster tests: waiting for the Molecule lane to end ({gate}) before the first test")
    while not Path(gate).exists():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(
                f"the Molecule lane did not end within {timeout_s:.0f} s ({gate} was never created): "
                f"see .rayops/ci/molecule.log, or unset {GATE_ENV} to run without waiting"
            )
        time.sleep(poll_s)
    waited = time.monotonic() - start
    say(f"cluster tests: the Molecule lane ended; waited {waited:.0f} s")
    return waited


def _label(argv: list[str]) -> str:
    if "molecule" in Path(argv[0]).name:
        return f"molecule {argv[-1]}"
    return Path(argv[0]).name if "make" not in argv[0] else " ".join(argv)


class Runner:
    def __init__(self, chosen: list[Lane]) -> None:
        self.lanes = chosen
        self.children: list[subprocess.Popen[bytes]] = []
        self.start = time.monotonic()

    def stop(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: interrupt every lane's process group as Ctrl-C would (pytest and Molecule then tear
        their clouds down), wait for them up to STOP_GRACE_S, then terminate what is left."""
        live = [child for child in self.children if child.poll() is None]
        for child in live:
            os.killpg(child.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in live:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    def _ready(self, lane: Lane) -> bool:
        names = {other.name: other for other in self.lanes}
        return all(names[dep].ended is not None for dep in lane.after if dep in names)

    def _gate(self) -> None:
        """The Molecule lane ended (or does not run): the cluster lane's tests may start."""
        molecule = next((lane for lane in self.lanes if lane.name == "molecule"), None)
        if (molecule is None or molecule.ended is not None) and not GATE.exists():
            GATE.write_text("molecule lane ended\n", encoding="utf-8")

    def run(self) -> None:
        env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        GATE.unlink(missing_ok=True)
        queues = {lane.name: list(lane.commands) for lane in self.lanes}
        running: dict[str, tuple[subprocess.Popen[bytes], float, list[str]]] = {}
        handles = {}
        next_beat = time.monotonic() + HEARTBEAT_S
        try:
            while True:
                self._gate()
                for lane in self.lanes:
                    if lane.ended is not None or lane.name in running or not self._ready(lane):
                        continue
                    if lane.began is None:
                        lane.began = time.monotonic()
                        handles[lane.name] = lane.log.open("wb")
                    if not queues[lane.name]:  # a lane with nothing to run
                        lane.ended = time.monotonic()
                        continue
                    argv = queues[lane.name].pop(0)
                    out = handles[lane.name]
                    out.write(f"\n=== lanes: {' '.join(argv)}\n".encode())
                    out.flush()
                    child = subprocess.Popen(
                        argv,
                        cwd=REPO,
                        env={**env, **lane.env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    self.children.append(child)
                    running[lane.name] = (child, time.monotonic(), argv)
                    print(f"lanes: {self._clock()} [{lane.name}] started {_label(argv)}", flush=True)
                for name, (child, began, argv) in list(running.items()):
                    rc = child.poll()
                    if rc is None:
                        continue
                    lane = next(lane for lane in self.lanes if lane.name == name)
                    took = time.monotonic() - began
                    lane.steps.append((_label(argv), took, rc))
                    lane.rc = lane.rc or rc
                    del running[name]
                    result = "ok" if rc == 0 else f"FAILED (rc {rc})"
                    print(
                        f"lanes: {self._clock()} [{name}] {_label(argv)} {result} in {took:.0f} s", flush=True
                    )
                    if not queues[name]:
                        lane.ended = time.monotonic()
                        handles[name].close()
                        self.show(lane)
                if all(lane.ended is not None for lane in self.lanes):
                    return
                now = time.monotonic()
                if now >= next_beat and running:
                    next_beat = now + HEARTBEAT_S
                    for name, (_, began, argv) in running.items():
                        print(
                            f"lanes: {self._clock()} [{name}] {_label(argv)} running for "
                            f"{now - began:.0f} s: {_last_line(LOGS / f'{name}.log')}",
                            flush=True,
                        )
                time.sleep(1)
        finally:
            for handle in handles.values():
                handle.close()
            GATE.unlink(missing_ok=True)

    def _clock(self) -> str:
        minutes, seconds = divmod(int(time.monotonic() - self.start), 60)
        return f"{minutes:02d}:{seconds:02d}"

    @staticmethod
    def show(lane: Lane) -> None:
        text = lane.log.read_text(encoding="utf-8", errors="replace")
        print(f"\n{'=' * 30} lane {lane.name}: log {lane.log} {'=' * 30}\n{text}", flush=True)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _last_line(log: Path) -> str:
    """The log's last line that says something: no colours, Molecule's frame or Ansible's rulers of `*`."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 16384))
            text = ANSI.sub("", handle.read().decode(errors="replace"))
    except OSError:
        return ""
    lines = [line.strip(" │*\t") for line in text.splitlines()]
    lines = [line for line in lines if any(ch.isalnum() for ch in line)]
    return lines[-1][:150] if lines else ""


def slowest(lanes_run: list[Lane], count: int = SLOWEST) -> list[tuple[float, str, str]]:
    """The slowest test cases across the lanes' JUnit XML files: (seconds, lane, test id)."""
    cases: list[tuple[float, str, str]] = []
    for lane in lanes_run:
        if not lane.junit or not lane.junit.exists():
            continue
        try:
            root = ET.parse(lane.junit).getroot()  # noqa: S314 - pytest's own report on this machine
        except ET.ParseError:
            continue
        for case in root.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            cases.append((float(case.get("time", 0) or 0), lane.name, name))
    return sorted(cases, reverse=True)[:count]


def summary(lanes_run: list[Lane], start: float, total: float) -> str:
    lines = ["", "=" * 30 + " lanes: when each lane ran and how long " + "=" * 30]
    lines.append(f"{'lane':<10} {'from':>6} {'to':>6} {'seconds':>8}  result: steps")
    for lane in lanes_run:
        began = (lane.began or start) - start
        ended = (lane.ended or start) - start
        steps = ", ".join(
            f"{what} {secs:.0f} s{'' if rc == 0 else ' FAILED'}" for what, secs, rc in lane.steps
        )
        result = "ok" if lane.rc == 0 else "FAILED"
        span = f"{began / 60:>5.1f}m {ended / 60:>5.1f}m {ended - began:>8.0f}"
        lines.append(f"{lane.name:<10} {span}  {result}: {steps}")
    lines.append(f"{'all':<10} {'':>6} {total / 60:>5.1f}m {total:>8.0f}")
    cases = slowest(lanes_run)
    if cases:
        lines.append("")
        lines.append("=" * 30 + f" lanes: the {len(cases)} slowest tests " + "=" * 30)
        lines += [f"{secs:8.1f} s  [{lane}] {name}" for secs, lane, name in cases]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=NAMES, help="run only this lane (repeatable)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    chosen = [lane for lane in lanes(args.pytest_args) if not args.only or lane.name in args.only]
    runner = Runner(chosen)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    runner.run()
    print(summary(chosen, runner.start, time.monotonic() - runner.start), flush=True)
    failed = [lane.name for lane in chosen if lane.rc != 0]
    if failed:
        print(f"lanes: FAILED: {', '.join(failed)} (logs in {LOGS})", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
