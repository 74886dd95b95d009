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
