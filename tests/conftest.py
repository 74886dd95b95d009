"""Shared fixtures: a real local cloud for the tests that need machines (marker `localcloud`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from types import ModuleType
from typing import NoReturn

import pytest

from rayops.ansible_env import REPO
from rayops.localcloud import image, machines, network
from rayops.localcloud.cloud import CloudSpec, LocalCloud

SHARED_DATA = REPO.parent / "shared" / "data" / "powerconsumption.csv"


NEEDS_ROOT = (
    "{count} selected tests boot local-cloud machines (marker localcloud), which needs root: "
    "run them as root (sudo make test-cluster), or run `make test-unit` for the tests that need no machines"
)


# The guard (issue 27): a test that is not marked `localcloud` boots nothing, so `make test-unit`
# (-m "not localcloud") never does. At collection, such a test that requests a cloud fixture stops the run;
# while it runs, the functions that create a cloud's image, bridge or machines refuse (see below).
CLOUD_FIXTURES = ("local_cloud", "ray_cluster")
UNMARKED_CLOUD_FIXTURE = (
    "{test}{more} is not marked localcloud but requests the fixture {fixture}, which boots a local cloud: "
    "add `pytestmark = [pytest.mark.localcloud, pytest.mark.slow]` to its module (or "
    "`@pytest.mark.localcloud` to the test) so that `make test-unit` leaves it out"
)
UNMARKED_CLOUD_CALL = (
    "{test} is not marked localcloud but called {function}, which {does}: add `pytest.mark.localcloud` "
    "to the test (it then runs in `make test`, not in `make test-unit`) or stand in for that call"
)
# The lowest functions that create a cloud's parts (LocalCloud.up and start_machine reach them; the tests
# without machines call up() for its refusals, which come before these, so up() itself is not guarded).
CLOUD_MAKERS: tuple[tuple[ModuleType, str, str], ...] = (
    (image, "build_image", "builds a machine image with debootstrap"),
    (network, "bridge_up", "creates a local cloud's bridge (`ip link add`) and its NAT rules"),
    (machines, "prepare", "mounts a machine's overlay disk"),
    (machines, "launch", "boots a machine with systemd-nspawn"),
)


def _is_localcloud(item: pytest.Item) -> bool:
    # The marker, not item.keywords: the keywords hold every parent's name too, so each test under
    # tests/localcloud/ "had" localcloud and a non-root `make test-unit` was refused as a machine run.
    return item.get_closest_marker("localcloud") is not None


def _cloud_fixture(item: pytest.Item) -> str | None:
    """The cloud fixture an unmarked test requests, itself or through another fixture (the closure)."""
    if _is_localcloud(item):
        return None
    names = getattr(item, "fixturenames", ())
    return next((fixture for fixture in CLOUD_FIXTURES if fixture in names), None)


@pytest.hookimpl(trylast=True)  # after -m/-k deselected what the run leaves out
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A selected test without the marker that requests a cloud fixture fails the run with one sentence.

    Machines need root: a non-root run that selected machine tests fails with one sentence too.
    Skipping them instead made `make test-cluster` as non-root exit 0 having run nothing.
    """
    both = [item.nodeid for item in items if _is_localcloud(item) and item.get_closest_marker("solo")]
    if both:
        raise pytest.UsageError(
            f"{both[0]} is marked both localcloud and solo: `make test` (tests/lanes.py) would run it in two "
            "lanes; keep one (solo: a fault row that needs no machines and must run alone)"
        )
    unmarked = [(item, fixture) for item in items if (fixture := _cloud_fixture(item))]
    if unmarked:
        (item, fixture), others = unmarked[0], len(unmarked) - 1
        modules = ", ".join(dict.fromkeys(i.nodeid.split("::", 1)[0] for i, _ in unmarked))
        more = f" (and {others} other test{'s' if others > 1 else ''}, in {modules})" if others else ""
        raise pytest.UsageError(UNMARKED_CLOUD_FIXTURE.format(test=item.nodeid, more=more, fixture=fixture))
    if os.geteuid() != 0:
        count = sum(_is_localcloud(item) for item in items)
        if count:
            raise pytest.UsageError(NEEDS_ROOT.format(count=count))


def _refusal(test: str, function: str, does: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        pytest.fail(UNMARKED_CLOUD_CALL.format(test=test, function=function, does=does), pytrace=False)

    return refuse


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """While a test without the marker runs (its fixtures' setup and teardown too), CLOUD_MAKERS refuse.

    Around the whole protocol, not an autouse fixture: pytest sets session fixtures up before any
    function-scoped one, so a session fixture booting a cloud would have run before the fixture's patches.
    pytest.fail is a BaseException: no `except Exception` on the way swallows it, and up() cleans up after it.
    A few setattr per test; a subprocess (`rayops-local up` run by a test) is not covered.
    """
    if _is_localcloud(item):
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        for module, name, does in CLOUD_MAKERS:
            function = f"{module.__name__}.{name}"
            patch.setattr(module, name, _refusal(item.nodeid, function, does))
        return (yield)


# The fault and chaos tests print what they measured (seconds to recover, the round a run resumed from, failed
# requests); pytest keeps a passing test's output to itself, so the figures are repeated in a section of the
# summary: every `make test` (and CI's log) shows them.
FIGURE_MODULES = (
    "tests/cluster/test_chaos_head.py",
    "tests/cluster/test_chaos_train.py",
    "tests/cluster/test_serve_heal.py",
    "tests/cluster/test_faults.py",
    "tests/workflow/test_training_faults.py",
    "tests/workflow/test_s3_outage.py",
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the fault and chaos tests printed, one line each, passed or failed."""
    lines = []
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call" or not report.nodeid.startswith(FIGURE_MODULES):
                continue
            test = report.nodeid.split("::", 1)[-1]
            lines += [
                f"{test} ({outcome}): {line.strip()}"
                for line in report.capstdout.splitlines()
                if line.strip()
            ]
    if lines:
        terminalreporter.write_sep("=", "fault and chaos figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A three-machine cloud of its own (name, subnet and port apart from the user's), always removed."""
    # RAYOPS_TEST_CLOUD="name subnet port": a second engineer's run on this host gets a cloud of its own.
    name, subnet, port = os.environ.get("RAYOPS_TEST_CLOUD", "rtest 10.213.50.0/24 5650").split()
    spec = CloudSpec(
        name=name,
        workers=2,
        subnet=subnet,
        s3_port=int(port),
        state_dir=str(tmp_path_factory.mktemp("cloud") / "state"),
    )
    cloud = LocalCloud(spec)
    # up() removes what it created when it fails, and refuses (touching nothing) a name that is
    # already in use: only a cloud this fixture brought up is taken down here.
    cloud.up()
    try:
        yield cloud
    finally:
        cloud.down()
