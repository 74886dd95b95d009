"""Shared fixtures: a real local cloud for the tests that need machines (marker `localcloud`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rayops.ansible_env import REPO
from rayops.localcloud.cloud import CloudSpec, LocalCloud

SHARED_DATA = REPO.parent / "shared" / "data" / "powerconsumption.csv"


NEEDS_ROOT = (
    "{count} selected tests boot local-cloud machines (marker localcloud), which needs root: "
    "run them as root (sudo make test-cluster), or run `make test-unit` for the tests that need no machines"
)


@pytest.hookimpl(trylast=True)  # after -m/-k deselected what the run leaves out
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Machines need root: a non-root run that selected machine tests fails with one sentence.

    Skipping them instead made `make test-cluster` as non-root exit 0 having run nothing.
    """
    if os.geteuid() != 0:
        count = sum("localcloud" in item.keywords for item in items)
        if count:
            raise pytest.UsageError(NEEDS_ROOT.format(count=count))


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
