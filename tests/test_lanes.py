"""`make test`'s lanes (tests/lanes.py): every test runs in exactly one pytest lane, the order and the gate
hold, and the closing table reads the lanes' JUnit reports. No machines, <1 s."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import lanes  # tests/lanes.py, the script beside this file (tests/ is on sys.path)
import pytest
from _pytest.mark.expression import Expression

pytest_plugins = ["pytester"]

MARKERS = ("localcloud", "solo", "slow")


def _marker_expression(lane: lanes.Lane) -> str:
    argv = lane.commands[0]
    return argv[argv.index("-m") + 1]


def _pytest_lanes() -> list[lanes.Lane]:
    return [lane for lane in lanes.lanes([]) if lane.junit is not None]


@pytest.mark.parametrize(
    "marks",
    # Every combination but localcloud+solo, which the collection refuses (the next test).
    [
        set(c)
        for n in range(len(MARKERS) + 1)
        for c in itertools.combinations(MARKERS, n)
        if not {"localcloud", "solo"} <= set(c)
    ],
    ids=lambda marks: "+".join(sorted(marks)) or "unmarked",
)
def test_every_test_runs_in_exactly_one_pytest_lane(marks: set[str]) -> None:
    selecting = [
        lane.name
        for lane in _pytest_lanes()
        if Expression.compile(_marker_expression(lane)).evaluate(lambda name, **_: name in marks)
    ]
    assert len(selecting) == 1, (marks, selecting)


def test_a_test_marked_localcloud_and_solo_is_refused(pytester: pytest.Pytester) -> None:
    """The one combination no lane partition covers (it would run twice) stops the run in one sentence."""
    conftest = Path(__file__).with_name("conftest.py")
    pytester.makeconftest(conftest.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    localcloud: m\n    solo: m\n    slow: m\n")
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.localcloud\n@pytest.mark.solo\ndef test_both():\n    pass\n"
    )
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*test_both is marked both localcloud and solo*"])


def test_cluster_starts_after_unit_and_solo_runs_last_alone() -> None:
    by_name = {lane.name: lane for lane in lanes.lanes([])}
    assert set(by_name) == set(lanes.NAMES)
    assert by_name["cluster"].after == ("unit",)
    assert set(by_name["solo"].after) == {"unit", "molecule", "cluster"}
    assert lanes.GATE_ENV == "RAYOPS_QUIET_GATE"
    assert by_name["cluster"].env == {lanes.GATE_ENV: str(lanes.GATE)}
    # Molecule runs every scenario, one after another, but the whole-cluster one: the cluster lane's session
    # converges with that scenario's group_vars and runs its verify playbook (test_cluster_contract.py).
    assert [argv[-1] for argv in by_name["molecule"].commands] == [
        name for name in lanes.scenarios() if name != "cluster"
    ]
    assert lanes.IN_SESSION == ("cluster",)
    assert "cluster" in lanes.scenarios() and "shared" not in lanes.scenarios()
    conftest = (lanes.REPO / "tests" / "cluster" / "conftest.py").read_text(encoding="utf-8")
    helpers = (lanes.REPO / "tests" / "cluster" / "cluster_helpers.py").read_text(encoding="utf-8")
    contract = (lanes.REPO / "tests" / "cluster" / "test_cluster_contract.py").read_text(encoding="utf-8")
    assert 'SESSION_GROUP_VARS = REPO / "molecule" / "cluster" / "inventory" / "group_vars"' in helpers
    assert '(state / "group_vars").symlink_to(SESSION_GROUP_VARS' in conftest
    assert 'playbook("molecule/cluster/verify_nodes.yml")' in contract
    assert (lanes.REPO / "molecule" / "cluster" / "verify_nodes.yml").is_file()


def test_the_table_lists_the_slowest_tests_of_every_pytest_lane(tmp_path: Path) -> None:
    unit, cluster = (lanes.Lane(name, [], junit=tmp_path / f"{name}.xml") for name in ("unit", "cluster"))
    assert unit.junit and cluster.junit
    unit.junit.write_text(
        '<testsuites><testsuite><testcase classname="tests.a" name="fast" time="0.5"/>'
        '<testcase classname="tests.a" name="slow" time="42.0"/></testsuite></testsuites>'
    )
    cluster.junit.write_text(
        '<testsuite><testcase classname="tests.b" name="boot" time="300.25"/></testsuite>'
    )
    assert lanes.slowest([unit, cluster], count=2) == [
        (300.25, "cluster", "tests.b::boot"),
        (42.0, "unit", "tests.a::slow"),
    ]
    unit.began, unit.ended, unit.steps = 0.0, 60.0, [("pytest", 60.0, 0)]
    cluster.began, cluster.ended, cluster.steps, cluster.rc = 60.0, 420.0, [("pytest", 360.0, 1)], 1
    table = lanes.summary([unit, cluster], start=0.0, total=420.0)
    assert "unit         0.0m   1.0m       60  ok: pytest 60 s" in table
    assert "cluster      1.0m   7.0m      360  FAILED: pytest 360 s FAILED" in table
    assert "300.2 s  [cluster] tests.b::boot" in table


def test_the_progress_line_is_the_last_line_that_says_something(tmp_path: Path) -> None:
    log = tmp_path / "molecule.log"
    log.write_text(
        "TASK [ray_node : Ray node | Install the venv] ***********\n"
        "  \x1b[2m│\x1b[0m   ************************\n\n"
    )
    assert lanes._last_line(log) == "TASK [ray_node : Ray node | Install the venv]"
    assert lanes._last_line(tmp_path / "missing.log") == ""


def test_the_gate_waits_for_its_file_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    monkeypatch.delenv(lanes.GATE_ENV, raising=False)
    assert lanes.wait_for_gate(said.append) is None and said == []  # outside `make test`: no wait
    gate = tmp_path / "quiet.gate"
    monkeypatch.setenv(lanes.GATE_ENV, str(gate))
    opener = threading.Timer(0.3, gate.write_text, args=("molecule lane ended\n",))
    opener.start()
    try:
        waited = lanes.wait_for_gate(said.append, poll_s=0.05)
    finally:
        opener.cancel()
    assert waited is not None and waited >= 0.25
    assert said[0].startswith("cluster tests: waiting for the Molecule lane to end") and len(said) == 2
    assert lanes.wait_for_gate(said.append) == 0.0  # open already: no wait, nothing said
    assert len(said) == 2


def test_a_gate_that_never_opens_fails_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(lanes.GATE_ENV, str(tmp_path / "never.gate"))
    with pytest.raises(TimeoutError, match=r"the Molecule lane did not end within 0 s .*molecule\.log"):
        lanes.wait_for_gate(lambda _: None, timeout_s=0.1, poll_s=0.05)
