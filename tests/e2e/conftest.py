"""A whole rayops cluster on a local cloud of its own: machines up, site.yml applied, torn down after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster_helpers import Cluster

from rayops.localcloud.cloud import CloudSpec, LocalCloud


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("e2e") / "state"
    cloud = LocalCloud(
        CloudSpec(name="re2e", workers=2, subnet="10.213.60.0/24", s3_port=5660, state_dir=str(state))
    )
    try:
        cloud.up()
        inventory = state / "cluster.pulumi_stack.yml"
        inventory.write_text(f"plugin: pulumi_stack\noutputs_file: {cloud.outputs_path.resolve()}\n")
        cluster = Cluster(cloud, inventory)
        site = cluster.playbook("site.yml")
        assert site.returncode == 0, f"site.yml failed:\n{site.stdout[-4000:]}\n{site.stderr[-2000:]}"
        yield cluster
    finally:
        cloud.down()
