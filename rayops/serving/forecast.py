"""The forecast route's features: raw 10-minute readings -> the model's input row for the next hour.

No second implementation: the readings go through the training workflow's own functions
(``hour_keys``, ``hourly_aggregate``, ``add_lags``, ``add_calendar`` of ``rayops.workflow.features``),
so a forecast from raw readings and the offline evaluation of the same hour get the same row.

The request holds the history (readings with the zone's consumption, covering every lag: the hours
t-1, t-2, t-3, t-24, t-48 and t-168, each with its usual number of readings) and the weather readings
of the hour t to predict. Names are the dataset's own (Kaggle's or UCI's spelling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rayops.workflow.features import (
    LAGS,
    TARGET,
    TIMESTAMP,
    add_calendar,
    add_lags,
    feature_columns,
    hour_keys,
    hourly_aggregate,
)
from rayops.workflow.ingest import DATETIME_FORMATS, WEATHER, canonical_column, display_name, parse_datetimes


class ForecastError(ValueError):
    """Readings that cannot make a forecast; the message is one sentence naming what is wrong."""


@dataclass(frozen=True)
class ForecastRow:
    timestamp: pd.Timestamp
    row: np.ndarray  # the model's features, in feature_columns() order


def _parse_times(values: pd.Series, what: str) -> pd.Series:
    """Every reading's Datetime, in one of the dataset's formats or ISO 8601 (the whole column at once)."""
    parsed, position = parse_datetimes(values, (*DATETIME_FORMATS, "ISO8601"))
    if position is None:
        return parsed
    raise ForecastError(
        f"{what}[{position}] Datetime is {values.iloc[position]!r}, which is not a date and time: "
        "write it like "
        "2017-12-30 23:50:00 or 12/30/2017 23:50"
    )


def _frame(rows: Sequence[dict[str, Any]], what: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Dataset-named rows -> canonical float columns plus datetime, every problem one sentence."""
    allowed = ("datetime", *columns)
    spelled: dict[str, str] = {}  # a field name as sent -> its canonical column
    records = []
    for i, row in enumerate(rows):
        record: dict[str, Any] = {}
        for name, value in row.items():
            column = spelled.get(name)
            if column is None:
                column = canonical_column(str(name)) or ""
                if column not in allowed:
                    wanted = ", ".join(display_name(c) for c in allowed)
                    raise ForecastError(f"{what}[{i}] has the unknown field {name!r}: a reading has {wanted}")
                spelled[name] = column
            if column in record:
                raise ForecastError(f"{what}[{i}] has two fields for {display_name(column)}: send one")
            record[column] = value
        if len(record) != len(allowed):
            missing = [display_name(c) for c in allowed if c not in record]
            raise ForecastError(f"{what}[{i}] lacks {', '.join(missing)}")
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(allowed))
    for column in columns:
        values = frame[column]
        if values.dtype.kind in "fi" and np.isfinite(values.to_numpy()).all():
            frame[column] = values.astype("float64")
            continue  # every value a finite JSON number (bools and strings make other dtypes)
        good = values.map(
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
        )
        if not good.all():
            i = int(np.flatnonzero(~good.to_numpy(dtype=bool))[0])
            raise ForecastError(
                f"{what}[{i}] {display_name(column)} is {values.iloc[i]!r}: it must be a finite number"
            )
        frame[column] = values.astype("float64")
    frame["datetime"] = _parse_times(frame["datetime"], what)
    return frame


def _check_order(frame: pd.DataFrame, what: str) -> None:
    stamps = frame["datetime"]
    steps = stamps.diff().iloc[1:]
    if (steps == pd.Timedelta(0)).any():
        i = int(np.flatnonzero((steps == pd.Timedelta(0)).to_numpy())[0]) + 1
        raise ForecastError(f"{what}[{i}] repeats the time {stamps.iloc[i]}: send each reading once")
    if (steps < pd.Timedelta(0)).any():
        i = int(np.flatnonzero((steps < pd.Timedelta(0)).to_numpy())[0]) + 1
        raise ForecastError(
            f"{what}[{i}] ({stamps.iloc[i]}) comes before {what}[{i - 1}] ({stamps.iloc[i - 1]}): "
            "send the readings "
            "in time order"
        )


def build_row(
    readings: Sequence[dict[str, Any]], weather: Sequence[dict[str, Any]], zone: int
) -> ForecastRow:
    """The feature row of the hour that ``weather`` covers, from the history in ``readings``."""
    consumption = f"zone{zone}"
    if not readings:
        raise ForecastError("readings is empty: send the history the lags need (the last 168 hours at least)")
    if not weather:
        raise ForecastError("weather is empty: send the weather readings of the hour to predict")
    history = _frame(readings, "readings", (*WEATHER, consumption))
    future = _frame(weather, "weather", WEATHER)
    _check_order(history, "readings")
    _check_order(future, "weather")
    hours = future["datetime"].dt.floor("h")
    target_hour = hours.iloc[0]
    if (hours != target_hour).any():
        raise ForecastError(
            f"weather spans more than one hour ({target_hour} to {future['datetime'].iloc[-1]}): send the "
            "readings of the one hour to predict"
        )
    if history["datetime"].iloc[-1] >= target_hour:
        raise ForecastError(
            f"readings run until {history['datetime'].iloc[-1]}, into the hour to predict ({target_hour}): "
            "the history must end before it"
        )
    # The target hour's consumption is what the model predicts: unknown, and never a feature of its own
    # hour (lags start at t-1), so any placeholder gives the same row.
    future[consumption] = 0.0
    raw = pd.concat([history, future], ignore_index=True)
    keyed = hour_keys(raw)
    lagged = add_lags(hourly_aggregate(keyed, [consumption]), target_zone=zone)
    key = int(pd.Timestamp(target_hour).value // 3_600_000_000_000)
    table = lagged  # the lags need every hour; the calendar only the hour predicted
    at = add_calendar(lagged.loc[lagged["hour"] == key])
    names = feature_columns()
    values = at[names].to_numpy(dtype="float64")[0]
    if np.isnan(values).any():
        missing = _missing_history(table, key, zone)
        raise ForecastError(
            f"too little history for the lags: {missing}; send complete hours (the usual number of readings "
            f"each) for t-{', t-'.join(str(k) for k in LAGS)} before {target_hour}"
        )
    return ForecastRow(timestamp=pd.Timestamp(at[TIMESTAMP].iloc[0]), row=values)


def _missing_history(table: pd.DataFrame, key: int, zone: int) -> str:
    """Which lag hours are missing or incomplete (or the hour itself), for the error sentence."""
    present = table.set_index("hour")
    own = present.loc[key, list(WEATHER)]
    if own.isna().any():
        return "the hour to predict has fewer weather readings than the history's hours"
    gaps = []
    for k in LAGS:
        hour = key - k
        if hour not in present.index or np.isnan(present.loc[hour, TARGET]):
            gaps.append(str(pd.Timestamp(hour * 3600, unit="s")))
    return "no complete readings for " + ", ".join(gaps) if gaps else "a lag is missing"
