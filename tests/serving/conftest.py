"""The serving app's fixtures: a real model trained on the real dataset, in a moto S3 server on loopback.

The model is trained here with xgboost on the workflow's own feature table (a few rounds: these tests
are about serving it, not about its quality); its objects sit where train.yml puts them, named by
version id. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto_helpers import moto_server
from serving_helpers import DATASET, ENV, MODELS, Trained, put_run

from rayops.workflow import drift
from rayops.workflow.evaluate import time_split
from rayops.workflow.features import TARGET, build_features, feature_columns
from rayops.workflow.ingest import Fetched, parse


@pytest.fixture(scope="session")
def aws() -> Iterator[Any]:
    """A moto S3 server on loopback, named in this process's environment as AWS_ENDPOINT_URL_S3 (the
    variable the nodes get): the app's own S3Store() and a local Ray's replicas find it as on a node."""
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as env:
        for key, value in (ENV | {"AWS_ENDPOINT_URL_S3": endpoint}).items():
            env.setenv(key, value)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=MODELS)
        s3.put_bucket_versioning(Bucket=MODELS, VersioningConfiguration={"Status": "Enabled"})
        yield s3


@pytest.fixture(scope="session")
def trained(aws: Any) -> Trained:
    import xgboost

    from rayops.workflow.training import predict_xgboost

    if not DATASET.exists():
        pytest.fail(f"{DATASET} is missing: the tests run with ../shared beside the repo")
    raw = parse(
        Fetched(name=DATASET.name, data=DATASET.read_bytes(), source=str(DATASET)), target_zone=1
    ).frame
    fset = build_features(raw, target_zone=1, executor="pandas")
    train, holdout = time_split(fset.frame, holdout_weeks=4)
    names = feature_columns()
    params = {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.3, "seed": 0, "nthread": 1}
    boosters = []
    for rounds in (20, 10):  # two runs: the first promoted, the second a new promotion
        dtrain = xgboost.DMatrix(train[names].to_numpy(), label=train[TARGET].to_numpy(), feature_names=names)
        boosters.append(xgboost.train(params, dtrain, num_boost_round=rounds))
    put_run(aws, "run-a", boosters[1])
    reference = drift.reference(train, predict_xgboost(boosters[0], train, names))
    put_run(aws, "run-b", boosters[0], drift=reference)  # current.json -> run-b (run-a: no drift reference)
    put_run(aws, "run-failed", boosters[1], promoted=False)
    put_run(aws, "run-broken", boosters[1], promoted=True, model_bytes=b"not a model")
    put_run(aws, "run-b", boosters[0], drift=reference)  # current.json -> run-b again (run-broken replaced)
    offline = predict_xgboost(boosters[0], holdout, names)
    return Trained(
        raw=raw,
        holdout=holdout,
        train=train,
        booster=boosters[0],
        offline=offline,
        run_ids=("run-a", "run-b"),
    )
