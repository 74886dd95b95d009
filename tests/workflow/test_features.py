"""Stage 2: hourly features. Pure batch functions first, then both executors (Ray Data, pandas) end to end."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import workflow_synth as synth

from rayops.workflow import features, ingest
from rayops.workflow.features import LAGS, TARGET, TIMESTAMP

HOUR0 = int(pd.Timestamp("2017-01-02").timestamp()) // 3600


def hourly_aggregate(hours: int, seed: int = 0) -> pd.DataFrame:
    """What the groupby produces: one row per hour key, shuffled like a hash shuffle would."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"hour": HOUR0 + np.arange(hours), "readings": 6})
    for col in (*ingest.WEATHER, *ingest.ZONES):
        frame[col] = rng.normal(100, 10, hours)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_hour_keys_keep_floats() -> None:
    raw = ingest.parse(ingest.Fetched("x.csv", synth.csv_bytes(synth.frame(days=1)), "x.csv"), 1).frame
    keyed = features.hour_keys(raw)
    assert keyed["hour"].iloc[0] == HOUR0
    assert keyed["hour"].iloc[6] == HOUR0 + 1
    assert keyed["temperature"].tolist() == raw["temperature"].tolist()


def test_lag_k_at_t_is_the_target_at_t_minus_k() -> None:
    agg = hourly_aggregate(400)
    out = features.add_lags(agg, target_zone=1)
    by_hour = agg.set_index("hour")
    assert out["hour"].is_monotonic_increasing
    assert (out[TARGET].to_numpy() == by_hour.loc[out["hour"], "zone1"].to_numpy()).all()
    for k in LAGS:
        later = out[out["hour"] >= HOUR0 + k]
        expected = by_hour.loc[later["hour"] - k, "zone1"].to_numpy()
        assert (later[f"target_lag{k}"].to_numpy() == expected).all(), k
        weather = by_hour.loc[later["hour"] - k, "humidity"].to_numpy()
        assert (later[f"humidity_lag{k}"].to_numpy() == weather).all(), k
        # nothing from before the data starts: the first k hours have no lag k
        assert out.loc[out["hour"] < HOUR0 + k, f"target_lag{k}"].isna().all()


def test_lags_are_looked_up_by_time_across_a_gap() -> None:
    agg = hourly_aggregate(300)
    missing = HOUR0 + 200
    out = features.add_lags(agg[agg["hour"] != missing], target_zone=2)
    row = out.set_index("hour")
    assert np.isnan(row.loc[missing + 1, "target_lag1"])  # not the value from 2 hours back
    assert np.isnan(row.loc[missing + 24, "target_lag24"])
    assert np.isnan(row.loc[missing + 2, "target_lag2"])
    assert row.loc[missing + 2, "target_lag1"] == agg.set_index("hour").loc[missing + 1, "zone2"]
    assert row.loc[missing + 1, "target_lag2"] == agg.set_index("hour").loc[missing - 1, "zone2"]


def test_incomplete_hours_are_neither_target_nor_lag() -> None:
    agg = hourly_aggregate(300)
    short = HOUR0 + 250
    agg.loc[agg["hour"] == short, "readings"] = 3
    out = features.add_lags(agg, target_zone=1).set_index("hour")
    assert np.isnan(out.loc[short, TARGET])
    assert np.isnan(out.loc[short + 1, "target_lag1"])
    assert np.isnan(out.loc[short + 24, "temperature_lag24"])
    assert not np.isnan(out.loc[short + 1, TARGET])


def test_one_hot_has_every_category_even_in_a_one_hour_batch() -> None:
    batch = pd.DataFrame({"hour": [int(pd.Timestamp("2017-07-15 13:00").timestamp()) // 3600]})
    out = features.add_calendar(batch)
    for name in features.onehot_columns():
        assert name in out.columns
    row = out.iloc[0]
    assert row["season_summer"] == 1.0
    assert row[["season_winter", "season_spring", "season_autumn"]].sum() == 0.0
    assert row["dow_sat"] == 1.0
    assert row["hod_13"] == 1.0
    assert row[[f"hod_{h:02d}" for h in range(24)]].sum() == 1.0
    assert row["is_weekend"] == 1.0
    assert row["hour_of_day"] == 13.0
    assert out[TIMESTAMP].iloc[0] == pd.Timestamp("2017-07-15 13:00")


def test_calendar_of_an_empty_batch_has_the_columns() -> None:
    out = features.add_calendar(pd.DataFrame({"hour": pd.Series([], dtype="int64")}))
    assert set(features.onehot_columns()) <= set(out.columns)
    assert len(out) == 0


@pytest.mark.parametrize(
    ("stamp", "season"),
    [("2017-01-10", "winter"), ("2017-03-01", "spring"), ("2017-08-31", "summer"), ("2017-11-30", "autumn")],
)
def test_seasons(stamp: str, season: str) -> None:
    out = features.add_calendar(pd.DataFrame({"hour": [int(pd.Timestamp(stamp).timestamp()) // 3600]}))
    assert out[f"season_{season}"].iloc[0] == 1.0


def test_feature_list_is_fixed() -> None:
    names = features.feature_columns()
    assert len(names) == len(set(names)) == 5 + 6 * 6 + 9 + 4 + 7 + 24
    assert "zone1" not in names and TARGET not in names  # no same-hour consumption as input


@pytest.mark.parametrize(
    ("rows", "requested", "executor", "reason"),
    [
        (52_416, "auto", "pandas", "52,416 raw rows <= 1,000,000: pandas on the driver"),
        (features.PANDAS_MAX_ROWS, "auto", "pandas", "<= 1,000,000"),
        (features.PANDAS_MAX_ROWS + 1, "auto", "ray", "1,000,001 raw rows > 1,000,000: Ray Data"),
        (52_416, "ray", "ray", "as asked (--features-executor ray)"),
        (10**8, "pandas", "pandas", "as asked (--features-executor pandas)"),
    ],
)
def test_executor_choice(rows: int, requested: str, executor: str, reason: str) -> None:
    choice = features.choose_executor(rows, requested)
    assert choice.executor == executor
    assert reason in choice.reason


def test_pandas_executor_gives_the_ray_data_bits(ray_local: Any) -> None:
    """One code path, two executors: the same table to the last bit (Arrow's grouped sums in both)."""
    raw = ingest.parse(ingest.Fetched("x.csv", synth.csv_bytes(synth.frame(days=12)), "x.csv"), 1).frame
    on_ray = features.build_features(raw, target_zone=1, executor="ray")
    on_pandas = features.build_features(raw, target_zone=1)  # auto: a small table
    assert (on_ray.executor, on_pandas.executor) == ("ray", "pandas")
    assert on_pandas.dataset is None
    pd.testing.assert_frame_equal(on_pandas.frame, on_ray.frame, check_exact=True)
    assert (on_pandas.hours, on_pandas.incomplete_hours) == (on_ray.hours, on_ray.incomplete_hours)


@pytest.mark.parametrize("executor", ["ray", "pandas"])
def test_feature_pipeline(ray_local: Any, executor: str) -> None:
    raw = ingest.parse(ingest.Fetched("x.csv", synth.csv_bytes(synth.frame(days=10)), "x.csv"), 1).frame
    fset = features.build_features(raw, target_zone=1, executor=executor)
    assert fset.executor == executor
    frame = fset.frame
    assert list(frame.columns) == [TIMESTAMP, TARGET, *features.feature_columns()]
    assert fset.hours == 240
    assert fset.incomplete_hours == 0
    assert len(frame) == 240 - 168  # rows with a full week of history only
    assert frame[TIMESTAMP].iloc[0] == pd.Timestamp("2017-01-02") + pd.Timedelta(hours=168)
    assert frame[TIMESTAMP].is_monotonic_increasing

    hourly = raw.set_index("datetime").resample("h")
    sums = hourly["zone1"].sum()
    means = hourly["temperature"].mean()
    at = frame.set_index(TIMESTAMP)
    np.testing.assert_allclose(at[TARGET], sums.loc[at.index], rtol=1e-12)
    np.testing.assert_allclose(at["temperature"], means.loc[at.index], rtol=1e-12)
    assert (at["temperature"] % 1 != 0).any()  # float means, not truncated to integers
    for k in LAGS:
        earlier = sums.loc[at.index - pd.Timedelta(hours=k)]
        np.testing.assert_allclose(at[f"target_lag{k}"], earlier, rtol=1e-12)
    if executor == "ray":
        assert fset.dataset.count() == len(frame)
