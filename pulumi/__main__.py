"""rayops on AWS: a Ray cluster's network, buckets, node identity and nodes; outputs contract v1."""

import pulumi

from rayops_aws.program import build
from rayops_aws.settings import load_settings

settings = load_settings(pulumi.Config("rayops"), pulumi.get_project(), pulumi.get_stack())

for key, value in build(settings).items():
    pulumi.export(key, value)
