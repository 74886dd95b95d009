"""A converged rayops cluster on a local cloud of its own, for the fault tests; always torn down."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cluster_helpers import RayCluster

from rayops.localcloud.cloud import CloudSpec, LocalCloud


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """Three machines of its own (name, subnet and port apart from every other cloud), site.yml applied.

    One per session: the fault tests leave it healthy, and the training tests run on it after them.
    """
    state = tmp_path_factory.mktemp("fault") / "state"
    # RAYOPS_TEST_CLUSTER="name subnet port": a second engineer's run gets a cloud of its own on this host.
    name, subnet, port = os.environ.get("RAYOPS_TEST_CLUSTER", "rfault 10.213.171.0/24 5771").split()
    spec = CloudSpec(name=name, workers=2, subnet=subnet, s3_port=int(port), state_dir=str(state))
    cloud = LocalCloud(spec)
    cloud.up()  # cleans up after itself on failure; never touches a cloud of the same name it did not make
    try:
        inventory = state / "cluster.pulumi_stack.yml"
        inventory.write_text(f"plugin: pulumi_stack\noutputs_file: {cloud.outputs_path.resolve()}\n")
        cluster = RayCluster(cloud, inventory)
        site = cluster.playbook("site.yml")
        assert site.returncode == 0, f"site.yml failed:\n{site.stdout[-4000:]}\n{site.stderr[-2000:]}"
        yield cluster
    finally:
        cloud.down()
