"""The local cloud: Debian machines under systemd-nspawn on a bridge, plus an S3 endpoint.

It stands in for the EC2 nodes and S3 buckets of the Pulumi stack and writes the same stack-output
contract, so the inventory plugin and the playbooks cannot tell the difference.
"""

from rayops.localcloud.errors import LocalCloudError

__all__ = ["LocalCloudError"]
