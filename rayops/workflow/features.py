"""Stage 2, features with Ray Data: hourly table, calendar, season, lags, fixed one-hot categories.

Pipeline (each step a Ray Data operation, so it runs on the cluster's nodes):

1. ``map_batches(hour_keys)``: 10-minute rows -> integer hour key (float values untouched).
2. ``groupby("hour").aggregate``: weather means, each zone's sum, and the number of readings.
3. ``repartition(1).map_batches(add_lags, batch_size=None)``: the lags need the whole ordered
   series (8,760 hourly rows for a year, one small block). A lag of k hours at hour t is the value
   at hour t-k looked up by time, so a gap gives a missing lag instead of a wrong one; incomplete
   hours (fewer readings than usual) are blanked so they are used neither as target nor as lag.
4. ``map_batches(add_calendar)``: time of day, day of week/year, season, one-hot columns built
   from FIXED category lists, so any batch yields every column whatever values it holds.
5. Rows without a complete history are dropped.

Nothing is computed from the future: features at hour t use the weather observed during hour t
(as the seed did) and target values up to hour t-1. Nothing is fitted here (no scaler): the
baseline's scaler is fitted on its training rows only, in ``training.py``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rayops.workflow.ingest import WEATHER, ZONES

log = logging.getLogger(__name__)

LAGS = (1, 2, 3, 24, 48, 168)
SEASONS = ("winter", "spring", "summer", "autumn")  # meteorological seasons: DJF, MAM, JJA, SON
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS = tuple(range(24))
CALENDAR = (
    "hour_of_day",
    "day_of_week",
    "day_of_year",
    "month",
    "is_weekend",
    "hour_sin",
    "hour_cos",
    "doy_sin",
    "doy_cos",
)
TARGET = "target"
TIMESTAMP = "timestamp"
_SEASON_OF_MONTH = {12: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2, 9: 3, 10: 3, 11: 3}


def lag_columns() -> list[str]:
    return [f"{col}_lag{k}" for col in (TARGET, *WEATHER) for k in LAGS]


def onehot_columns() -> list[str]:
    return [f"season_{s}" for s in SEASONS] + [f"dow_{d}" for d in DAYS] + [f"hod_{h:02d}" for h in HOURS]


def feature_columns() -> list[str]:
    """The model's inputs, in a fixed order (recorded in the manifest and the model metadata)."""
    return [*WEATHER, *lag_columns(), *CALENDAR, *onehot_columns()]


# ------------------------------------------------------------------ batch functions (pure pandas)


def hour_keys(batch: pd.DataFrame) -> pd.DataFrame:
    """10-minute rows -> the same rows with an integer ``hour`` key (hours since the epoch)."""
    stamps = pd.to_datetime(batch["datetime"]).astype("datetime64[s]")
    out = batch.drop(columns=["datetime"]).astype("float64")
    out.insert(0, "hour", stamps.astype("int64").to_numpy() // 3600)
    return out


def add_lags(frame: pd.DataFrame, target_zone: int) -> pd.DataFrame:
    """Hourly aggregate (one block, any order) -> target and lag columns, looked up by time."""
    frame = frame.sort_values("hour", kind="stable").reset_index(drop=True)
    target_col = f"zone{target_zone}"
    values = frame[["hour", *WEATHER]].copy()
    values[TARGET] = frame[target_col].astype("float64")
    readings = frame["readings"].to_numpy()
    usual = int(pd.Series(readings).mode().max()) if len(readings) else 0
    incomplete = readings < usual
    values.loc[incomplete, [TARGET, *WEATHER]] = np.nan
    by_hour = values.set_index("hour")
    hours = by_hour.index.to_numpy()
    out = values.copy()
    for col in (TARGET, *WEATHER):
        series = by_hour[col]
        for k in LAGS:
            out[f"{col}_lag{k}"] = series.reindex(hours - k).to_numpy()
    return out


def add_calendar(batch: pd.DataFrame) -> pd.DataFrame:
    """Calendar, time-of-day and season features, one-hot over fixed categories (any batch)."""
    out = batch.copy()
    stamps = pd.to_datetime(out["hour"].to_numpy() * 3600, unit="s")
    hour = stamps.hour.to_numpy()
    dow = stamps.day_of_week.to_numpy()
    doy = stamps.day_of_year.to_numpy()
    month = stamps.month.to_numpy()
    out[TIMESTAMP] = stamps
    out["hour_of_day"] = hour.astype("float64")
    out["day_of_week"] = dow.astype("float64")
    out["day_of_year"] = doy.astype("float64")
    out["month"] = month.astype("float64")
    out["is_weekend"] = (dow >= 5).astype("float64")
    out["hour_sin"] = np.sin(2 * np.pi * hour / 24)
    out["hour_cos"] = np.cos(2 * np.pi * hour / 24)
    out["doy_sin"] = np.sin(2 * np.pi * (doy - 1) / 365.25)
    out["doy_cos"] = np.cos(2 * np.pi * (doy - 1) / 365.25)
    season = np.array([_SEASON_OF_MONTH[int(m)] for m in month], dtype="int64")
    for prefix, codes, labels in (("season", season, SEASONS), ("dow", dow, DAYS), ("hod", hour, HOURS)):
        names = [f"{prefix}_{x:02d}" if prefix == "hod" else f"{prefix}_{x}" for x in labels]
        onehot = pd.get_dummies(
            pd.Categorical(codes, categories=range(len(labels))), dtype="float64"
        ).to_numpy()
        for i, name in enumerate(names):
            out[name] = onehot[:, i] if len(out) else np.empty(0)
    return out


def complete_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """Keep rows whose target and every feature are known; order the columns."""
    columns = [TIMESTAMP, TARGET, *feature_columns()]
    return batch.loc[batch[columns[1:]].notna().all(axis=1), columns].reset_index(drop=True)


# -------------------------------------------------------------------------- the Ray Data pipeline


@dataclass(frozen=True)
class FeatureSet:
    """The materialized feature table and what the manifest records about it."""

    dataset: Any  # ray.data.Dataset (materialized)
    frame: pd.DataFrame  # the same rows on the driver, sorted by time
    hours: int
    incomplete_hours: int

    @property
    def rows(self) -> int:
        return len(self.frame)


def _hour_aligned_chunks(raw: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    """Split the raw rows into ``parts`` blocks at hour boundaries (each hour wholly in one block),
    so every group is summed within one block in file order: the same bits on every run."""
    hours = raw["datetime"].dt.floor("h").to_numpy()
    edges = np.linspace(0, len(raw), parts + 1).astype(int)[1:-1]
    cuts = sorted({int(np.searchsorted(hours, hours[e], side="left")) for e in edges if 0 < e < len(raw)})
    bounds = [0, *[c for c in cuts if c > 0], len(raw)]
    return [raw.iloc[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def build_features(raw: pd.DataFrame, target_zone: int, blocks: int = 4) -> FeatureSet:
    """Run the feature pipeline on the cluster; return the materialized dataset and a driver copy."""
    import ray.data
    from ray.data.aggregate import Count, Mean, Sum

    zones = [z for z in ZONES if z in raw.columns]
    raw = raw[["datetime", *WEATHER, *zones]]
    source = ray.data.from_pandas(_hour_aligned_chunks(raw, blocks))
    ds: Any = source.map_batches(hour_keys, batch_format="pandas", batch_size=None)
    aggregates: list[Any] = [
        Count(alias_name="readings"),
        *[Mean(on=c, alias_name=c) for c in WEATHER],
        *[Sum(on=z, alias_name=z) for z in zones],
    ]
    hourly = ds.groupby("hour", num_partitions=blocks).aggregate(*aggregates)
    lagged = hourly.repartition(1).map_batches(
        add_lags, fn_kwargs={"target_zone": target_zone}, batch_format="pandas", batch_size=None
    )
    features = (
        lagged.map_batches(add_calendar, batch_format="pandas", batch_size=2048)
        .map_batches(complete_rows, batch_format="pandas", batch_size=2048)
        .materialize()
    )
    frame = features.to_pandas().sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    # Plain numpy dtypes on the driver (Ray may hand back Arrow-backed columns).
    frame = frame.astype({TIMESTAMP: "datetime64[ns]", **dict.fromkeys(frame.columns[1:], "float64")})
    per_hour = raw["datetime"].dt.floor("h").value_counts()
    usual = int(per_hour.mode().max()) if len(per_hour) else 0
    return FeatureSet(
        dataset=features,
        frame=frame,
        hours=len(per_hour),
        incomplete_hours=int((per_hour < usual).sum()),
    )
