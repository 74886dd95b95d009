"""Promotion against the live model (issue 15, item 3), on a real S3 API (moto server on loopback).

Two runs that read the same pointer at their start and promote one after the other: the second's
conditional write (``IfMatch`` on the ETag it read; ``IfNoneMatch`` for a zone's first model) is
refused, it says which run won, and the pointer names the winner. moto 5.2.5 honours both conditions
on PutObject (PreconditionFailed), as S3 does. moto checks them before it stores the object, in two
steps without a lock (moto/s3/responses.py), so requests that arrive within microseconds could both
pass there, which S3 itself rules out; the runs below therefore interleave as runs do (both read the
pointer at their start, then promote one after the other), the case the condition decides. Under a
second.
"""

from __future__ import annotations

from typing import Any

import pytest

from rayops.workflow import artifacts, evaluate, promotion
from rayops.workflow.config import Buckets, Thresholds
from rayops.workflow.s3 import S3Store


def pointer(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "model_uri": f"s3://m/zone1/runs/{run_id}/model.ubj"}


def layout(buckets: Buckets, run_id: str) -> artifacts.Layout:
    return artifacts.Layout(buckets, "zone1", run_id)


@pytest.mark.parametrize("first_model", [True, False], ids=["no-pointer-yet", "a-live-model"])
def test_two_concurrent_promotions_exactly_one_wins(
    store: S3Store, buckets: Buckets, s3: Any, first_model: bool
) -> None:
    if not first_model:
        s3.put_object(Bucket=buckets.models, Key="zone1/current.json", Body=b'{"run_id": "old"}')
    # Both runs start and read the pointer before either promotes.
    live_a = promotion.read_live(store, layout(buckets, "a"))
    live_b = promotion.read_live(store, layout(buckets, "b"))
    assert live_a.etag == live_b.etag
    assert promotion.promote(store, layout(buckets, "a"), live_a, pointer("a"), []) is None
    lost = promotion.promote(store, layout(buckets, "b"), live_b, pointer("b"), [])
    before = "no model" if first_model else "run old"
    assert lost == (
        f"run a promoted its model to s3://{buckets.models}/zone1/current.json while this run was "
        f"training (this run had read {before} there), so this run's model was compared with a model "
        "that is no longer live: train again to compare it with the live one"
    )
    versions = s3.list_object_versions(Bucket=buckets.models, Prefix="zone1/current.json")["Versions"]
    assert len(versions) == (1 if first_model else 2)  # b wrote nothing
    assert store.get_json(buckets.models, "zone1/current.json")["run_id"] == "a"


M = {"rmse": 100.0, "mae": 80.0, "mape": 2.0, "r2": 0.95}
BASE = {"rmse": 200.0, "mae": 150.0, "mape": 4.0, "r2": 0.8}


def test_the_first_model_has_nothing_to_beat() -> None:
    assert evaluate.decide_promotion(M, BASE, Thresholds(), live=None).promoted


@pytest.mark.parametrize(
    ("live_rmse", "tolerance", "promoted"),
    [(100.0, 0.0, True), (99.9, 0.0, False), (95.0, 0.06, True), (95.0, 0.05, False)],
)
def test_no_worse_than_the_live_model_within_the_tolerance(
    live_rmse: float, tolerance: float, promoted: bool
) -> None:
    live = {**M, "rmse": live_rmse}
    decision = evaluate.decide_promotion(
        M, BASE, Thresholds(live_tolerance=tolerance), live=live, live_run="x"
    )
    assert decision.promoted is promoted
    if not promoted:
        assert decision.reasons == [
            f"xgboost's holdout RMSE 100.0 is worse than the live model's (run x) {live_rmse:.1f} on the "
            f"same holdout by more than --live-tolerance {tolerance:g}"
        ]
