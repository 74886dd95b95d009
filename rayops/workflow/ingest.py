"""Stage 1, ingest: fetch the dataset, validate it, then (only then) upload it to the raw bucket.

The dataset is the Tetouan power-consumption table, one row every 10 minutes, with either the
Kaggle column names (``powerconsumption.csv``) or UCI's. It can be a local path, an ``s3://`` URI
or an ``http(s)://`` URL; a zip archive holding one CSV (UCI's download) is unpacked.

Validation runs before any upload, so a bad file never becomes a version in the raw bucket and
never reaches a manifest: the last good data's version id stays the latest one recorded.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError

from rayops.workflow.artifacts import raw_key
from rayops.workflow.config import UCI_URL, Buckets
from rayops.workflow.errors import DataError
from rayops.workflow.s3 import PreconditionFailed, S3Store, describe_s3_error, split_s3_uri

log = logging.getLogger(__name__)

EXPECTED_ROWS = 52_416
MAX_LAG_HOURS = 168
MIN_TRAIN_HOURS = 168
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
#: The most any dataset may hold, wherever it comes from (train.yml checks a controller file against it too).
MAX_DATASET_BYTES = MAX_DOWNLOAD_BYTES
CACHE_NAME = "tetouan-power-consumption.csv"

WEATHER = ("temperature", "humidity", "wind_speed", "general_diffuse_flows", "diffuse_flows")
ZONES = ("zone1", "zone2", "zone3")

#: Canonical column -> (Kaggle name, UCI name). Matching ignores case, spaces and punctuation.
COLUMNS: dict[str, tuple[str, str]] = {
    "datetime": ("Datetime", "DateTime"),
    "temperature": ("Temperature", "Temperature"),
    "humidity": ("Humidity", "Humidity"),
    "wind_speed": ("WindSpeed", "Wind Speed"),
    "general_diffuse_flows": ("GeneralDiffuseFlows", "general diffuse flows"),
    "diffuse_flows": ("DiffuseFlows", "diffuse flows"),
    "zone1": ("PowerConsumption_Zone1", "Zone 1 Power Consumption"),
    "zone2": ("PowerConsumption_Zone2", "Zone 2  Power Consumption"),
    "zone3": ("PowerConsumption_Zone3", "Zone 3  Power Consumption"),
}
DATETIME_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES = {_key(alias): canonical for canonical, names in COLUMNS.items() for alias in names}


def canonical_column(name: str) -> str | None:
    """The canonical name of a dataset column in any accepted spelling (Kaggle's or UCI's), else None.

    The serving app's forecast route reads raw readings with the same names as the dataset."""
    return _ALIASES.get(_key(name))


def display_name(canonical: str) -> str:
    """The Kaggle spelling of a canonical column, used in messages."""
    return COLUMNS[canonical][0]


def redact(source: str) -> str:
    """The dataset location without credentials or query strings (safe to log and record)."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https", "s3") and parts.netloc:
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    return source


@dataclass(frozen=True)
class Fetched:
    """The bytes of the dataset's CSV and where they came from."""

    name: str
    data: bytes
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class RawTable:
    """A validated table: canonical columns, float values, sorted by time."""

    frame: pd.DataFrame
    style: str  # "kaggle" or "uci"
    name: str

    @property
    def rows(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class IngestResult:
    """What the raw bucket now holds for this run (the lineage every later artifact records)."""

    uri: str
    version_id: str | None
    sha256: str
    rows: int
    source: str
    style: str

    @property
    def data_version(self) -> str:
        """The S3 version id, or ``sha256:<hex>`` when the raw bucket has no versioning."""
        return self.version_id or f"sha256:{self.sha256}"


# --------------------------------------------------------------------------------------- fetch


def _unreachable(source: str, reason: str) -> DataError:
    return DataError(
        f"cannot read the dataset {redact(source)} ({reason}): check --dataset, or pass a local copy such "
        "as --dataset /path/to/powerconsumption.csv"
    )


class _Unreachable(Exception):
    """A download failed; the message is the short reason."""


def _download(url: str, timeout: float) -> bytes:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise _Unreachable(f"unsupported URL scheme {scheme!r}")
    request = urllib.request.Request(url, headers={"User-Agent": "rayops-workflow"})  # noqa: S310 (scheme checked above)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            data: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as err:
        raise _Unreachable(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise _Unreachable(str(reason)) from err
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise _Unreachable(f"larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB")
    return data


def _extract_csv(data: bytes, source: str) -> tuple[str, bytes]:
    """The single CSV member of a zip archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise DataError(f"{redact(source)} looks like a zip archive but cannot be opened ({err})") from err
    with archive:
        members = [
            m
            for m in archive.infolist()
            if m.filename.lower().endswith(".csv")
            and not m.filename.startswith("__MACOSX/")
            and not m.is_dir()
        ]
        if len(members) != 1:
            found = ", ".join(m.filename for m in members) or "none"
            raise DataError(
                f"the archive {redact(source)} must hold exactly one CSV file, found {found}: "
                "pass the CSV itself with --dataset"
            )
        member = members[0]
        if member.file_size > MAX_DOWNLOAD_BYTES:
            raise DataError(f"the CSV in {redact(source)} is larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB")
        return Path(member.filename).name, archive.read(member)


def _too_large(source: str, size: int) -> DataError:
    return DataError(
        f"the dataset {redact(source)} is {size / 2**20:,.1f} MiB, more than the "
        f"{MAX_DATASET_BYTES // 2**20} MiB the workflow reads: pass the Tetouan CSV or its zip"
    )


def fetch(
    source: str, store: S3Store | None = None, timeout: float = 120.0, cluster_buckets: Buckets | None = None
) -> Fetched:
    """Read the dataset from a path, an s3:// URI or an http(s):// URL; unpack a zip archive.

    ``cluster_buckets``: the buckets the nodes' role may read; an s3:// dataset elsewhere that S3 refuses
    gets a sentence saying to copy it into the raw bucket."""
    scheme = urlsplit(source).scheme
    if scheme in ("http", "https"):
        try:
            data = _download(source, timeout)
        except _Unreachable as err:
            raise _unreachable(source, str(err)) from err
        name = Path(urlsplit(source).path).name or "dataset.csv"
    elif scheme == "s3":
        try:
            bucket, key = split_s3_uri(source)
        except Exception as err:
            raise _unreachable(source, "not of the form s3://bucket/key") from err
        store = store or S3Store()
        try:
            try:  # the size first: a file over the cap is refused without reading it
                size = int(store.client.head_object(Bucket=bucket, Key=key).get("ContentLength", 0))
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("AccessDenied", "403"):
                    raise
                size = 0  # missing and the like: get_object below says it in S3's own words
            if size > MAX_DATASET_BYTES:
                raise _too_large(source, size)
            data = store.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as err:
            code = err.response.get("Error", {}).get("Code") if isinstance(err, ClientError) else None
            mine = list(cluster_buckets.to_dict().values()) if cluster_buckets is not None else []
            if code in ("AccessDenied", "403") and cluster_buckets is not None and bucket not in mine:
                raise DataError(
                    f"cannot read the dataset {redact(source)} (AccessDenied): the nodes may read only the "
                    f"cluster's buckets ({', '.join(mine)}); copy the file into the raw bucket (aws s3 cp "
                    f"{redact(source)} s3://{cluster_buckets.raw}/inputs/{Path(key).name}) and pass that URI"
                ) from err
            raise _unreachable(source, describe_s3_error(err)) from err
        name = Path(key).name
    elif scheme in ("", "file") or re.fullmatch(r"[A-Za-z]", scheme):
        path = Path(urlsplit(source).path if scheme == "file" else source).expanduser()
        if not path.is_file():
            raise _unreachable(source, "no such file" if not path.exists() else "not a regular file")
        if path.stat().st_size > MAX_DATASET_BYTES:
            raise _too_large(source, path.stat().st_size)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise _unreachable(source, err.strerror or str(err)) from err
        name = path.name
    else:
        raise _unreachable(source, f"unsupported scheme {scheme!r}; use a path, s3:// or https://")
    if data[:4] == b"PK\x03\x04":
        name, data = _extract_csv(data, source)
    return Fetched(name=name, data=data, source=redact(source))


# ------------------------------------------------------------------------------------ validate


def _line(position: int) -> int:
    """File line of the data row at 0-based ``position`` (line 1 is the header)."""
    return position + 2


def parse(fetched: Fetched, target_zone: int | None = None) -> RawTable:
    """Parse and validate the CSV; raise DataError with one sentence on the first problem.

    ``target_zone=None`` requires all three zones (the full dataset check of ``resolve_dataset``).
    """
    name = fetched.name
    try:
        frame = pd.read_csv(
            io.BytesIO(fetched.data),
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            skipinitialspace=True,
        )
    except UnicodeDecodeError as err:
        raise DataError(f"{name} is not a UTF-8 text CSV file: pass the Tetouan CSV or its zip") from err
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{name} is empty: pass the Tetouan power-consumption CSV") from err
    except pd.errors.ParserError as err:
        detail = str(err).strip().splitlines()[-1]
        raise DataError(
            f"{name} is not a well-formed CSV file ({detail}): fix the file or pass another"
        ) from err

    rename: dict[str, str] = {}
    for column in frame.columns:
        canonical = _ALIASES.get(_key(str(column)))
        if canonical is None:
            continue
        if canonical in rename.values():
            raise DataError(
                f"{name} has two columns for {display_name(canonical)} ({column!r} and another spelling): "
                "keep only one"
            )
        rename[str(column)] = canonical
    style = "uci" if any(_key(c).startswith("zone") for c in rename) else "kaggle"
    required = ["datetime", *WEATHER, *(ZONES if target_zone is None else (f"zone{target_zone}",))]
    missing = [c for c in required if c not in rename.values()]
    if missing:
        wanted = ", ".join(COLUMNS[c][0] for c in missing)
        raise DataError(
            f"{name} lacks the column(s) {wanted}: expected the Kaggle names (Datetime, Temperature, "
            "Humidity, WindSpeed, GeneralDiffuseFlows, DiffuseFlows, PowerConsumption_Zone1..3) or UCI's "
            "(DateTime, ..., Zone 1 Power Consumption, ...)"
        )
    frame = frame.rename(columns=rename)
    keep = ["datetime", *WEATHER, *(z for z in ZONES if z in rename.values())]
    frame = frame[keep]
    if frame.empty:
        raise DataError(f"{name} has a header but no data rows: pass the full dataset")

    source_names = {v: k for k, v in rename.items()}
    out = pd.DataFrame(index=frame.index)
    out["datetime"] = _parse_datetimes(frame["datetime"], name, source_names["datetime"])
    for column in keep[1:]:
        out[column] = _parse_numbers(frame[column], name, source_names[column])

    duplicated = out["datetime"].duplicated()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(
            f"{name} has more than one row for {frame['datetime'].iloc[position]} (line {_line(position)}): "
            "remove the duplicate rows"
        )
    out = out.sort_values("datetime", kind="stable").reset_index(drop=True)
    return RawTable(frame=out, style=style, name=name)


def parse_datetimes(
    values: pd.Series, formats: tuple[str, ...] = DATETIME_FORMATS
) -> tuple[pd.Series, int | None]:
    """Text date-times in the first of ``formats`` that reads them all -> (datetime64[ns], None), else the
    best attempt and the position of its first unreadable value. The serving app's forecast uses it too."""
    best: pd.Series | None = None
    text = values.where(values.map(lambda v: isinstance(v, str))).str.strip()
    for fmt in formats:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if not parsed.isna().any():
            return parsed.astype("datetime64[ns]"), None
        if best is None or parsed.isna().sum() < best.isna().sum():
            best = parsed
    assert best is not None
    return best, int(np.flatnonzero(best.isna().to_numpy())[0])


def _parse_datetimes(values: pd.Series, name: str, column: str) -> pd.Series:
    parsed, position = parse_datetimes(values)
    if position is None:
        return parsed
    raise DataError(
        f"column {column} of {name} has {values.iloc[position]!r} on line {_line(position)}, which is not a "
        "date and time: write them like 1/1/2017 0:10 (M/D/YYYY H:MM) or 2017-01-01 00:10:00"
    )


def _parse_numbers(values: pd.Series, name: str, column: str) -> pd.Series:
    numbers = pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")
    bad = numbers.isna().to_numpy() | ~np.isfinite(numbers.to_numpy())
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raw = values.iloc[position]
        what = "an empty value" if not str(raw).strip() else f"the non-numeric value {raw!r}"
        raise DataError(
            f"column {column} of {name} has {what} on line {_line(position)}: every weather and consumption "
            "value must be a number, fix or remove that line"
        )
    return numbers


def required_hours(holdout_hours: int) -> int:
    """Distinct hours a dataset must cover: lag history + holdout + a week to train on."""
    return MAX_LAG_HOURS + holdout_hours + MIN_TRAIN_HOURS


def check_history(table: RawTable, holdout_hours: int) -> int:
    """Raise DataError when the table is too short for the lags and the holdout; return its hours."""
    hours = int(table.frame["datetime"].dt.floor("h").nunique())
    needed = required_hours(holdout_hours)
    if hours < needed:
        raise DataError(
            f"{table.name} covers only {hours} hours, but the workflow needs at least {needed}: "
            f"{MAX_LAG_HOURS} hours of history for the lags, the {holdout_hours // 168}-week holdout and "
            f"{MIN_TRAIN_HOURS} hours to train on; pass a longer file or lower --holdout-weeks"
        )
    return hours


# -------------------------------------------------------------------------------------- upload


def upload_raw(store: S3Store, bucket: str, fetched: Fetched, table: RawTable) -> IngestResult:
    """Upload the validated CSV under its content hash (``IfNoneMatch``: an existing object of that key
    holds these very bytes and is reused, never overwritten)."""
    sha = fetched.sha256
    key = raw_key(sha)
    version: str | None
    head: dict[str, Any] | None = store.head(bucket, key)
    if head is None:
        try:
            put = store.put_bytes(
                bucket,
                key,
                fetched.data,
                content_type="text/csv",
                metadata={"sha256": sha, "source": fetched.source[:1024], "rows": str(table.rows)},
                if_none_match=True,
            )
            version = put.version_id
            log.info("ingest: uploaded s3://%s/%s (version %s)", bucket, key, version)
        except PreconditionFailed:  # another run uploaded the same bytes meanwhile
            head = store.head(bucket, key)
    if head is not None:
        version = head.get("VersionId")
        version = version if version and version != "null" else None
        log.info("ingest: s3://%s/%s already holds these bytes (version %s)", bucket, key, version)
    if version is None:
        log.info(
            "ingest: bucket %s has no versioning, recording the content hash as the data version; "
            "enable versioning on the raw bucket to keep every upload",
            bucket,
        )
    return IngestResult(
        uri=f"s3://{bucket}/{key}",
        version_id=version,
        sha256=sha,
        rows=table.rows,
        source=fetched.source,
        style=table.style,
    )


# ----------------------------------------------------------------------------- make local helper


def verify_full_dataset(table: RawTable, expected_rows: int = EXPECTED_ROWS) -> None:
    """The check for a freshly downloaded (or cached) copy: every column and the exact row count."""
    if table.rows != expected_rows:
        raise DataError(
            f"{table.name} has {table.rows:,} rows, but the Tetouan dataset has {expected_rows:,}: "
            "the download is incomplete or another file; delete it and retry, or pass DATASET=/path/to/file"
        )


def resolve_dataset(
    dataset: str | None,
    cache_dir: Path,
    url: str = UCI_URL,
    timeout: float = 120.0,
    expected_rows: int = EXPECTED_ROWS,
) -> str:
    """Where ``make local`` gets its data: DATASET if given, else the cache, else a verified download."""
    if dataset:
        scheme = urlsplit(dataset).scheme
        if scheme in ("s3", "http", "https"):
            return dataset
        path = Path(dataset).expanduser()
        if not path.is_file():
            raise DataError(
                f"DATASET={dataset} is not a file: point it at the CSV, e.g. "
                "make local DATASET=/path/to/powerconsumption.csv"
            )
        return str(path.resolve())
    cached = cache_dir / CACHE_NAME
    if cached.is_file():
        table = parse(Fetched(name=cached.name, data=cached.read_bytes(), source=str(cached)))
        verify_full_dataset(table, expected_rows)
        log.info("dataset: using the cached copy %s", cached)
        return str(cached.resolve())
    log.info("dataset: downloading %s into %s", redact(url), cache_dir)
    try:
        data = _download(url, timeout)
    except _Unreachable as err:
        raise DataError(
            f"cannot download the dataset from {redact(url)} ({err}) and no copy is cached in {cache_dir}: "
            "point at a local file with make local DATASET=/path/to/powerconsumption.csv"
        ) from err
    name = Path(urlsplit(url).path).name or CACHE_NAME
    if data[:4] == b"PK\x03\x04":
        name, data = _extract_csv(data, url)
    fetched = Fetched(name=name, data=data, source=redact(url))
    table = parse(fetched)
    verify_full_dataset(table, expected_rows)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".partial-{os.getpid()}")
    partial.write_bytes(fetched.data)
    partial.replace(cached)
    log.info("dataset: verified %s rows, cached as %s", f"{table.rows:,}", cached)
    return str(cached.resolve())
