"""Small synthetic Tetouan-like data for the workflow tests (10-minute rows, Kaggle or UCI names)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd

KAGGLE = [
    "Datetime",
    "Temperature",
    "Humidity",
    "WindSpeed",
    "GeneralDiffuseFlows",
    "DiffuseFlows",
    "PowerConsumption_Zone1",
    "PowerConsumption_Zone2",
    "PowerConsumption_Zone3",
]
UCI = [
    "DateTime",
    "Temperature",
    "Humidity",
    "Wind Speed",
    "general diffuse flows",
    "diffuse flows",
    "Zone 1 Power Consumption",
    "Zone 2  Power Consumption",
    "Zone 3  Power Consumption",
]


def frame(days: int = 35, seed: int = 0, start: str = "2017-01-02", rows: int | None = None) -> pd.DataFrame:
    """10-minute rows with weather and three zones; Zone 1 depends non-linearly on hour, weekday
    and temperature, so gradient boosting has something to beat the linear baseline on."""
    rng = np.random.default_rng(seed)
    n = rows if rows is not None else days * 144
    stamps = pd.date_range(start, periods=n, freq="10min")
    hour = stamps.hour.to_numpy() + stamps.minute.to_numpy() / 60
    weekend = (stamps.day_of_week.to_numpy() >= 5).astype(float)
    day = np.arange(n) / 144
    temp = 15 + 6 * np.sin(2 * np.pi * (hour - 9) / 24) + 3 * np.sin(2 * np.pi * day / 9)
    temp = temp + rng.normal(0, 0.4, n)
    humidity = 70 - 1.5 * (temp - 15) + rng.normal(0, 2, n)
    wind = np.abs(rng.normal(1.0, 0.8, n))
    general = np.clip(600 * np.sin(np.pi * (hour - 6) / 12), 0, None) + rng.uniform(0, 5, n)
    diffuse = 0.3 * general + rng.uniform(0, 3, n)
    evening = np.exp(-(((hour - 20) / 2.0) ** 2))
    morning = np.exp(-(((hour - 9) / 2.5) ** 2))
    zone1 = (
        22000
        + 14000 * evening * (1 - 0.8 * weekend)
        + 6000 * morning * (1 - weekend)
        + 350 * np.clip(temp - 18, 0, None) ** 2
        + 9000 * (temp > 19) * (1 - weekend)
        + rng.normal(0, 300, n)
    )
    zone2 = 0.6 * zone1 + rng.normal(0, 200, n)
    zone3 = 0.5 * zone1 + 50 * temp + rng.normal(0, 200, n)
    return pd.DataFrame(
        {
            "Datetime": [f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}" for t in stamps],
            "Temperature": temp.round(3),
            "Humidity": humidity.round(2),
            "WindSpeed": wind.round(3),
            "GeneralDiffuseFlows": general.round(3),
            "DiffuseFlows": diffuse.round(3),
            "PowerConsumption_Zone1": zone1.round(5),
            "PowerConsumption_Zone2": zone2.round(5),
            "PowerConsumption_Zone3": zone3.round(5),
        }
    )


def csv_bytes(table: pd.DataFrame, names: list[str] = KAGGLE) -> bytes:
    out = table.copy()
    out.columns = names
    return out.to_csv(index=False).encode()


def zip_bytes(csv: bytes, member: str = "Tetuan City power consumption.csv") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, csv)
    return buffer.getvalue()
