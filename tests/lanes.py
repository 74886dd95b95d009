"""`make test` in lanes: what can share the two cores runs at once, the timing-sensitive rows run alone.

    stage 1  lint
    stage 2  pytest's unit tier (no machines)  ||  Molecule, one scenario after another (own clouds)
    stage 3  pytest's machine tier (marker localcloud) and the fault rows (marker solo), alone

Every lane writes its own log (.rayops/ci/<lane>.log); a lane's log is printed whole when it ends, and a line
every minute says what each running lane is doing. Every lane runs even when an earlier one failed, so one run
shows every failure. At the end: the time of each lane and stage, and the 30 slowest tests of all pytest lanes
(from their JUnit XML), so the CI budget is visible in every run. Exit status 1 when any lane failed.

    python tests/lanes.py                 # what `make test` runs
    python tests/lanes.py --only unit     # one lane (unit, molecule, cluster, lint), e.g. to rerun it
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
LOGS = REPO / ".rayops" / "ci"
HEARTBEAT_S = 60.0
SLOWEST = 30


def scenarios() -> list[str]:
    """Molecule's scenarios in `molecule test --all`'s order (by name), the shared folder left out."""
    return sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))


@dataclass
class Lane:
    name: str
    stage: int
    commands: list[list[str]]  # run one after another; the lane goes on past a failed one
    junit: Path | None = None
    log: Path = field(init=False)
    started: float = 0.0
    seconds: float = 0.0
    steps: list[tuple[str, float, int]] = field(default_factory=list)  # (what, seconds, rc)
    rc: int = 0

    def __post_init__(self) -> None:
        self.log = LOGS / f"{self.name}.log"


def lanes(pytest_args: list[str]) -> list[Lane]:
    pytest = [str(BIN / "pytest"), *pytest_args]
    molecule = [[str(BIN / "molecule"), "test", "-s", name] for name in scenarios()]
    return [
        Lane("lint", 1, [["make", "--no-print-directory", "lint"]]),
        Lane(
            "unit",
            2,
            [[*pytest, "-m", "not localcloud and not solo", f"--junitxml={LOGS / 'unit.xml'}"]],
            junit=LOGS / "unit.xml",
        ),
        Lane("molecule", 2, molecule),
        Lane(
            "cluster",
            3,
            [[*pytest, "-m", "localcloud or solo", f"--junitxml={LOGS / 'cluster.xml'}"]],
            junit=LOGS / "cluster.xml",
        ),
    ]


def _label(argv: list[str]) -> str:
    if "molecule" in Path(argv[0]).name:
        return f"molecule {argv[-1]}"
    return Path(argv[0]).name if "make" not in argv[0] else " ".join(argv)


class Runner:
    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def stop(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: pass it on to every lane's process group (its fixtures tear its clouds down)."""
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    def run_stage(self, stage: list[Lane]) -> None:
        """The stage's lanes at once; each lane's commands one after another."""
        env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        queues = {lane.name: list(lane.commands) for lane in stage}
        running: dict[str, tuple[subprocess.Popen[bytes], float, list[str]]] = {}
        handles = {lane.name: lane.log.open("wb") for lane in stage}
        start = time.monotonic()
        for lane in stage:
            lane.started = start
        next_beat = start + HEARTBEAT_S
        try:
            while True:
                for lane in stage:
                    if lane.name not in running and queues[lane.name]:
                        argv = queues[lane.name].pop(0)
                        out = handles[lane.name]
                        out.write(f"\n=== lanes: {' '.join(argv)}\n".encode())
                        out.flush()
                        child = subprocess.Popen(
                            argv,
                            cwd=REPO,
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                        self.children.append(child)
                        running[lane.name] = (child, time.monotonic(), argv)
                        print(f"lanes: [{lane.name}] started {_label(argv)}", flush=True)
                for lane in stage:
                    if lane.name not in running:
                        continue
                    child, began, argv = running[lane.name]
                    rc = child.poll()
                    if rc is None:
                        continue
                    took = time.monotonic() - began
                    lane.steps.append((_label(argv), took, rc))
                    lane.rc = lane.rc or rc
                    del running[lane.name]
                    print(
                        f"lanes: [{lane.name}] {_label(argv)} {'ok' if rc == 0 else f'FAILED (rc {rc})'} "
                        f"in {took:.0f} s",
                        flush=True,
                    )
                    if not queues[lane.name]:
                        lane.seconds = time.monotonic() - lane.started
                        handles[lane.name].close()
                        self.show(lane)
                if not running and not any(queues.values()):
                    return
                now = time.monotonic()
                if now >= next_beat and running:
                    next_beat = now + HEARTBEAT_S
                    for name, (_, began, argv) in running.items():
                        print(
                            f"lanes: [{name}] {_label(argv)} running for {now - began:.0f} s: "
                            f"{_last_line(LOGS / f'{name}.log')}",
                            flush=True,
                        )
                time.sleep(1)
        finally:
            for handle in handles.values():
                handle.close()

    @staticmethod
    def show(lane: Lane) -> None:
        text = lane.log.read_text(encoding="utf-8", errors="replace")
        print(f"\n{'=' * 30} lane {lane.name}: log {lane.log} {'=' * 30}\n{text}", flush=True)


def _last_line(log: Path) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
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


def summary(lanes_run: list[Lane], total: float) -> str:
    lines = ["", "=" * 30 + " lanes: time of each lane and stage " + "=" * 30]
    lines.append(f"{'stage':<6} {'lane':<10} {'seconds':>8}  result / steps")
    for stage in sorted({lane.stage for lane in lanes_run}):
        members = [lane for lane in lanes_run if lane.stage == stage]
        for lane in members:
            steps = ", ".join(
                f"{what} {secs:.0f} s{'' if rc == 0 else ' FAILED'}" for what, secs, rc in lane.steps
            )
            result = "ok" if lane.rc == 0 else "FAILED"
            lines.append(f"{stage:<6} {lane.name:<10} {lane.seconds:>8.0f}  {result}: {steps}")
        lines.append(f"{stage:<6} {'(stage)':<10} {max(lane.seconds for lane in members):>8.0f}")
    lines.append(f"{'all':<6} {'':<10} {total:>8.0f}  ({total / 60:.1f} min)")
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
    parser.add_argument(
        "--only",
        action="append",
        choices=["lint", "unit", "molecule", "cluster"],
        help="run only this lane (repeatable)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    chosen = [lane for lane in lanes(args.pytest_args) if not args.only or lane.name in args.only]
    runner = Runner()
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    start = time.monotonic()
    for stage in sorted({lane.stage for lane in chosen}):
        runner.run_stage([lane for lane in chosen if lane.stage == stage])
    print(summary(chosen, time.monotonic() - start), flush=True)
    failed = [lane.name for lane in chosen if lane.rc != 0]
    if failed:
        print(f"lanes: FAILED: {', '.join(failed)} (logs in {LOGS})", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
