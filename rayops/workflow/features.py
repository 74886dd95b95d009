"""Stage 2, features: hourly table, calendar, season, lags, fixed one-hot categories.

One code path for the logic, two executors: the batch functions below are run either by Ray Data
(large tables, on the cluster's nodes) or by pandas on the driver (small tables: the raw rows are
already in the driver's memory after ingest, and Ray Data's start-up costs tens of seconds on a
table of a few thousand hours). ``choose_executor`` picks one by the raw row count and says why.

Pipeline (with Ray Data each step is a Ray Data operation; pandas runs the same steps in order):

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

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

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
#: Raw (10-minute) rows up to which the driver featurizes in pandas: ~19 years of 10-minute data,
#: about 0.3 GB of float64 columns, already held by the driver after ingest.
PANDAS_MAX_ROWS = 1_000_000
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
    lags = {
        f"{col}_lag{k}": by_hour[col].reindex(hours - k).to_numpy()
        for col in (TARGET, *WEATHER)
        for k in LAGS
    }
    # One concat, not 36 inserts (the serving app runs this on every forecast request).
    return pd.concat([values, pd.DataFrame(lags, index=values.index)], axis=1)


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
    onehots: dict[str, np.ndarray] = {}
    for prefix, codes, labels in (("season", season, SEASONS), ("dow", dow, DAYS), ("hod", hour, HOURS)):
        names = [f"{prefix}_{x:02d}" if prefix == "hod" else f"{prefix}_{x}" for x in labels]
        onehot = pd.get_dummies(
            pd.Categorical(codes, categories=range(len(labels))), dtype="float64"
        ).to_numpy()
        for i, name in enumerate(names):
            onehots[name] = onehot[:, i] if len(out) else np.empty(0)
    return pd.concat([out, pd.DataFrame(onehots, index=out.index)], axis=1)


def complete_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """Keep rows whose target and every feature are known; order the columns."""
    columns = [TIMESTAMP, TARGET, *feature_columns()]
    return batch.loc[batch[columns[1:]].notna().all(axis=1), columns].reset_index(drop=True)


def hourly_aggregate(keyed: pd.DataFrame, zones: list[str]) -> pd.DataFrame:
    """What Ray Data's ``groupby("hour").aggregate(Count, Mean, Sum)`` yields, computed on the driver:
    one row per hour with the number of readings, the weather means and each zone's sum.

    Arrow's grouped sum and mean, single-threaded, as Ray Data uses them: the same bits as the Ray
    Data executor (pandas' own groupby sums with compensation and differs in the last bit)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(keyed[["hour", *WEATHER, *zones]], preserve_index=False)
    specs = [("hour", "count"), *[(c, "mean") for c in WEATHER], *[(z, "sum") for z in zones]]
    out = table.group_by("hour", use_threads=False).aggregate(specs).to_pandas()
    names = {"hour_count": "readings", **{f"{c}_mean": c for c in WEATHER}, **{f"{z}_sum": z for z in zones}}
    return out.rename(columns=names)[["hour", "readings", *WEATHER, *zones]]


# ------------------------------------------------------------------------------- the executors


@dataclass(frozen=True)
class FeatureSet:
    """The feature table and what the manifest records about it."""

    dataset: Any  # ray.data.Dataset (materialized) with Ray Data; None with pandas
    frame: pd.DataFrame  # the rows on the driver, sorted by time
    hours: int
    incomplete_hours: int
    executor: str  # "pandas" or "ray"
    reason: str  # why that executor (logged, recorded in metrics.json)

    @property
    def rows(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class ExecutorChoice:
    executor: Literal["pandas", "ray"]
    reason: str


def choose_executor(raw_rows: int, requested: str = "auto") -> ExecutorChoice:
    """pandas on the driver for tables up to ``PANDAS_MAX_ROWS`` raw rows, Ray Data above; a
    requested executor other than ``auto`` is used as asked."""
    if requested == "pandas":
        return ExecutorChoice("pandas", "pandas on the driver, as asked (--features-executor pandas)")
    if requested == "ray":
        return ExecutorChoice("ray", "Ray Data on the cluster, as asked (--features-executor ray)")
    if raw_rows <= PANDAS_MAX_ROWS:
        return ExecutorChoice(
            "pandas",
            f"{raw_rows:,} raw rows <= {PANDAS_MAX_ROWS:,}: pandas on the driver, which already holds "
            "them (Ray Data's start-up would cost more than the work)",
        )
    return ExecutorChoice(
        "ray", f"{raw_rows:,} raw rows > {PANDAS_MAX_ROWS:,}: Ray Data on the cluster's nodes"
    )


def _finish(frame: pd.DataFrame, raw: pd.DataFrame, dataset: Any, choice: ExecutorChoice) -> FeatureSet:
    frame = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    # Plain numpy dtypes on the driver (Ray may hand back Arrow-backed columns).
    frame = frame.astype({TIMESTAMP: "datetime64[ns]", **dict.fromkeys(frame.columns[1:], "float64")})
    per_hour = raw["datetime"].dt.floor("h").value_counts()
    usual = int(per_hour.mode().max()) if len(per_hour) else 0
    return FeatureSet(
        dataset=dataset,
        frame=frame,
        hours=len(per_hour),
        incomplete_hours=int((per_hour < usual).sum()),
        executor=choice.executor,
        reason=choice.reason,
    )


def build_features(
    raw: pd.DataFrame,
    target_zone: int,
    blocks: int = 4,
    executor: str = "auto",
    before_cluster: Callable[[], None] | None = None,
) -> FeatureSet:
    """Featurize ``raw`` with the executor ``choose_executor`` picks (logged); ``before_cluster``
    (e.g. connecting to Ray) is called only when Ray Data is used."""
    choice = choose_executor(len(raw), executor)
    log.info("features: %s", choice.reason)
    zones = [z for z in ZONES if z in raw.columns]
    raw = raw[["datetime", *WEATHER, *zones]]
    if choice.executor == "ray":
        if before_cluster is not None:
            before_cluster()
        frame, dataset = _ray_data_pipeline(raw, target_zone, zones, blocks)
        return _finish(frame, raw, dataset, choice)
    # The same steps in order, on the hour-aligned blocks Ray Data would get.
    keyed = pd.concat([hour_keys(chunk) for chunk in _hour_aligned_chunks(raw, blocks)], ignore_index=True)
    lagged = add_lags(hourly_aggregate(keyed, zones), target_zone=target_zone)
    frame = complete_rows(add_calendar(lagged))
    return _finish(frame, raw, None, choice)


def _hour_aligned_chunks(raw: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    """Split the raw rows into ``parts`` blocks at hour boundaries (each hour wholly in one block),
    so every group is summed within one block in file order: the same bits on every run."""
    hours = raw["datetime"].dt.floor("h").to_numpy()
    edges = np.linspace(0, len(raw), parts + 1).astype(int)[1:-1]
    cuts = sorted({int(np.searchsorted(hours, hours[e], side="left")) for e in edges if 0 < e < len(raw)})
    bounds = [0, *[c for c in cuts if c > 0], len(raw)]
    return [raw.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _ray_data_pipeline(
    raw: pd.DataFrame, target_zone: int, zones: list[str], blocks: int
) -> tuple[pd.DataFrame, Any]:
    """The pipeline as Ray Data operations; returns the driver copy and the materialized dataset."""
    import ray.data
    from ray.data.aggregate import Count, Mean, Sum

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
    return features.to_pandas(), features
