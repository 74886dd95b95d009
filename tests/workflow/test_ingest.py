"""Stage 1: reading the dataset (path, zip, s3://, http:// on loopback), validation, raw upload,
and the dataset resolver of `make local` (DATASET, cache, verified download, offline message)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import workflow_synth as synth
from moto_helpers import free_port
from workflow_helpers import make_buckets

from rayops.workflow import ingest
from rayops.workflow.config import Buckets
from rayops.workflow.errors import DataError
from rayops.workflow.s3 import S3Store


@contextlib.contextmanager
def serve(routes: dict[str, bytes]) -> Iterator[str]:
    """A throwaway HTTP server on 127.0.0.1 serving ``routes`` (404 elsewhere); yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url(path: str = "/data.zip") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


def fetched(csv: bytes, name: str = "powerconsumption.csv") -> ingest.Fetched:
    return ingest.Fetched(name=name, data=csv, source=name)


# ------------------------------------------------------------------------------------ parsing


def test_kaggle_and_uci_names_give_the_same_table() -> None:
    table = synth.frame(days=2)
    kaggle = ingest.parse(fetched(synth.csv_bytes(table, synth.KAGGLE)), 1)
    uci = ingest.parse(fetched(synth.csv_bytes(table, synth.UCI)), 1)
    assert kaggle.style == "kaggle"
    assert uci.style == "uci"
    assert list(kaggle.frame.columns) == ["datetime", *ingest.WEATHER, *ingest.ZONES]
    pd.testing.assert_frame_equal(kaggle.frame, uci.frame)
    assert kaggle.rows == 2 * 144


def test_values_are_parsed_as_floats_not_truncated() -> None:
    csv = (
        b"Datetime,Temperature,Humidity,WindSpeed,GeneralDiffuseFlows,DiffuseFlows,"
        b"PowerConsumption_Zone1,PowerConsumption_Zone2,PowerConsumption_Zone3\n"
        b"1/1/2017 0:10,6.414,74.5,0.083,0.07,0.085,29814.68354,19375.07599,20131.08434\n"
        b"1/1/2017 0:00,6.559,73.8,0.083,0.051,0.119,34055.6962,16128.87538,20240.96386\n"
    )
    frame = ingest.parse(fetched(csv), 1).frame
    assert frame["datetime"].tolist() == [pd.Timestamp("2017-01-01 00:00"), pd.Timestamp("2017-01-01 00:10")]
    assert frame["temperature"].tolist() == [6.559, 6.414]  # sorted by time, decimals kept
    assert frame["zone1"].tolist() == [34055.6962, 29814.68354]
    assert all(dtype == np.float64 for dtype in frame.dtypes.iloc[1:])


def test_iso_timestamps_are_accepted() -> None:
    table = synth.frame(days=1)
    stamps = pd.date_range("2017-01-02", periods=len(table), freq="10min")
    table["Datetime"] = stamps.strftime("%Y-%m-%d %H:%M:%S")
    frame = ingest.parse(fetched(synth.csv_bytes(table)), 1).frame
    assert frame["datetime"].iloc[1] == pd.Timestamp("2017-01-02 00:10")


def _bad(table: pd.DataFrame, names: list[str] = synth.KAGGLE, target_zone: int | None = 1) -> str:
    with pytest.raises(DataError) as info:
        ingest.parse(fetched(synth.csv_bytes(table, names)), target_zone)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_columns_are_named() -> None:
    table = synth.frame(days=1).drop(columns=["Humidity"])
    message = _bad(table, [n for n in synth.KAGGLE if n != "Humidity"])
    assert message.startswith("powerconsumption.csv lacks the column(s) Humidity: expected the Kaggle names")


def test_missing_target_zone_column_is_named() -> None:
    table = synth.frame(days=1).drop(columns=["PowerConsumption_Zone2"])
    names = [n for n in synth.KAGGLE if n != "PowerConsumption_Zone2"]
    assert "lacks the column(s) PowerConsumption_Zone2" in _bad(table, names, target_zone=2)
    # zone 1 does not need it
    assert ingest.parse(fetched(synth.csv_bytes(table, names)), 1).rows == 144


def test_non_numeric_value_is_named_with_its_line() -> None:
    table = synth.frame(days=1).astype({"Temperature": object})
    table.loc[5, "Temperature"] = "warm"
    message = _bad(table)
    assert message == (
        "column Temperature of powerconsumption.csv has the non-numeric value 'warm' on line 7: "
        "every weather and consumption value must be a number, fix or remove that line"
    )


def test_empty_value_is_named() -> None:
    table = synth.frame(days=1).astype({"PowerConsumption_Zone1": object})
    table.loc[0, "PowerConsumption_Zone1"] = ""
    assert "column PowerConsumption_Zone1 of powerconsumption.csv has an empty value on line 2" in _bad(table)


def test_bad_timestamp_is_named() -> None:
    table = synth.frame(days=1)
    table.loc[3, "Datetime"] = "13/45/2017 0:30"
    message = _bad(table)
    assert "column Datetime of powerconsumption.csv has '13/45/2017 0:30' on line 5" in message
    assert "M/D/YYYY H:MM" in message


def test_duplicate_timestamps_are_refused() -> None:
    table = synth.frame(days=1)
    table.loc[10, "Datetime"] = table.loc[9, "Datetime"]
    assert "more than one row for 1/2/2017 1:30 (line 12)" in _bad(table)


def test_not_a_csv() -> None:
    with pytest.raises(DataError, match="is not a UTF-8 text CSV file"):
        ingest.parse(fetched(bytes(range(256)) * 4, "x.bin"), 1)
    with pytest.raises(DataError, match="is empty"):
        ingest.parse(fetched(b"", "empty.csv"), 1)


def test_too_short_for_the_lags_and_holdout() -> None:
    table = ingest.parse(fetched(synth.csv_bytes(synth.frame(days=22))), 1)
    with pytest.raises(DataError) as info:
        ingest.check_history(table, holdout_hours=4 * 168)
    assert str(info.value) == (
        "powerconsumption.csv covers only 528 hours, but the workflow needs at least 1008: 168 hours of "
        "history for the lags, the 4-week holdout and 168 hours to train on; pass a longer file or lower "
        "--holdout-weeks"
    )
    assert ingest.check_history(table, holdout_hours=168) == 528


# ------------------------------------------------------------------------------------ fetching


def test_fetch_local_csv_and_zip(tmp_path: Path) -> None:
    csv = synth.csv_bytes(synth.frame(days=1), synth.UCI)
    (tmp_path / "data.csv").write_bytes(csv)
    (tmp_path / "data.zip").write_bytes(synth.zip_bytes(csv))
    plain = ingest.fetch(str(tmp_path / "data.csv"))
    unzipped = ingest.fetch(str(tmp_path / "data.zip"))
    assert plain.data == csv
    assert unzipped.data == csv
    assert unzipped.name == "Tetuan City power consumption.csv"
    assert plain.sha256 == unzipped.sha256


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        ingest.fetch(str(tmp_path / "nope.csv"))
    assert str(info.value) == (
        f"cannot read the dataset {tmp_path / 'nope.csv'} (no such file): check --dataset, or pass a local "
        "copy such as --dataset /path/to/powerconsumption.csv"
    )


def test_zip_must_hold_one_csv(tmp_path: Path) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", "x")
        archive.writestr("b.csv", "y")
    (tmp_path / "two.zip").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"must hold exactly one CSV file, found a.csv, b.csv"):
        ingest.fetch(str(tmp_path / "two.zip"))


def test_fetch_https_style_url_from_loopback_server() -> None:
    csv = synth.csv_bytes(synth.frame(days=1), synth.UCI)
    with serve({"/static/tetouan.zip": synth.zip_bytes(csv)}) as base:
        got = ingest.fetch(f"{base}/static/tetouan.zip")
        assert got.data == csv
        with pytest.raises(DataError, match=r"\(HTTP 404 Not Found\): check --dataset"):
            ingest.fetch(f"{base}/missing.zip")


def test_unreachable_url_hides_credentials() -> None:
    url = closed_port_url("/data.csv").replace("http://", "http://alice:s3cret@") + "?token=abc"
    with pytest.raises(DataError) as info:
        ingest.fetch(url, timeout=5)
    message = str(info.value)
    assert message.startswith("cannot read the dataset http://127.0.0.1:")
    assert "s3cret" not in message
    assert "token" not in message


def test_fetch_s3_uri(store: S3Store, s3: Any) -> None:
    s3.create_bucket(Bucket="incoming-data")
    csv = synth.csv_bytes(synth.frame(days=1))
    s3.put_object(Bucket="incoming-data", Key="2017/powerconsumption.csv", Body=csv)
    got = ingest.fetch("s3://incoming-data/2017/powerconsumption.csv", store)
    assert got.data == csv
    assert got.name == "powerconsumption.csv"
    with pytest.raises(DataError, match=r"cannot read the dataset s3://incoming-data/nope.csv \(NoSuchKey"):
        ingest.fetch("s3://incoming-data/nope.csv", store)


# ------------------------------------------------------------------------------------ raw upload


def test_upload_records_version_and_reuses_identical_bytes(store: S3Store, buckets: Buckets, s3: Any) -> None:
    csv = synth.csv_bytes(synth.frame(days=1))
    first = fetched(csv)
    table = ingest.parse(first, 1)
    one = ingest.upload_raw(store, buckets.raw, first, table)
    again = ingest.upload_raw(store, buckets.raw, first, table)
    assert one.version_id
    assert one.data_version == one.version_id
    assert again.version_id == one.version_id  # same bytes: no new version
    key = f"datasets/sha256/{first.sha256}.csv"
    assert one.uri == f"s3://{buckets.raw}/{key}"
    head = s3.head_object(Bucket=buckets.raw, Key=key)
    assert head["VersionId"] == one.version_id
    assert head["Metadata"]["sha256"] == first.sha256

    # Other bytes under the same file name: their own key, and the first object stays the only,
    # current version of its key (nothing of it becomes noncurrent, so nothing of it can expire).
    changed = fetched(synth.csv_bytes(synth.frame(days=1, seed=1)))
    two = ingest.upload_raw(store, buckets.raw, changed, ingest.parse(changed, 1))
    assert two.version_id not in (None, one.version_id)
    assert two.uri == f"s3://{buckets.raw}/datasets/sha256/{changed.sha256}.csv"
    versions = s3.list_object_versions(Bucket=buckets.raw, Prefix="datasets/")["Versions"]
    assert len(versions) == 2
    assert {(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions} == {
        (key, one.version_id, True),
        (f"datasets/sha256/{changed.sha256}.csv", two.version_id, True),
    }


def test_unversioned_bucket_falls_back_to_content_hash(store: S3Store, s3: Any) -> None:
    plain = make_buckets(s3, versioned=False)
    data = fetched(synth.csv_bytes(synth.frame(days=1)))
    result = ingest.upload_raw(store, plain.raw, data, ingest.parse(data, 1))
    assert result.version_id is None
    assert result.data_version == f"sha256:{data.sha256}"


# --------------------------------------------------------------------------- make local resolver


def test_resolve_prefers_dataset(tmp_path: Path) -> None:
    target = tmp_path / "mine.csv"
    target.write_text("x")
    assert ingest.resolve_dataset(str(target), tmp_path / "cache") == str(target.resolve())
    assert ingest.resolve_dataset("s3://b/k.csv", tmp_path / "cache") == "s3://b/k.csv"
    with pytest.raises(DataError) as info:
        ingest.resolve_dataset(str(tmp_path / "typo.csv"), tmp_path / "cache")
    assert "make local DATASET=/path/to/powerconsumption.csv" in str(info.value)


def test_resolve_downloads_verifies_and_caches(tmp_path: Path) -> None:
    csv = synth.csv_bytes(synth.frame(rows=ingest.EXPECTED_ROWS), synth.UCI)
    cache = tmp_path / "data"
    with serve({"/849/tetouan.zip": synth.zip_bytes(csv)}) as base:
        path = ingest.resolve_dataset(None, cache, url=f"{base}/849/tetouan.zip")
    assert Path(path) == (cache / ingest.CACHE_NAME).resolve()
    assert Path(path).read_bytes() == csv
    assert [p.name for p in cache.iterdir()] == [ingest.CACHE_NAME]
    # server gone: the verified cache is used, no download
    assert ingest.resolve_dataset(None, cache, url=closed_port_url()) == path


def test_resolve_refuses_an_incomplete_download(tmp_path: Path) -> None:
    csv = synth.csv_bytes(synth.frame(days=3))
    cache = tmp_path / "data"
    with serve({"/data.csv": csv}) as base, pytest.raises(DataError) as info:
        ingest.resolve_dataset(None, cache, url=f"{base}/data.csv")
    assert "has 432 rows, but the Tetouan dataset has 52,416" in str(info.value)
    assert not (cache / ingest.CACHE_NAME).exists()


def test_resolve_offline_without_cache_says_how_to_point_at_a_file(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(DataError) as info:
        ingest.resolve_dataset(None, tmp_path / "data", url=url, timeout=5)
    message = str(info.value)
    assert message.startswith(f"cannot download the dataset from {url} (")
    assert message.endswith(
        f"and no copy is cached in {tmp_path / 'data'}: point at a local file with "
        "make local DATASET=/path/to/powerconsumption.csv"
    )


def test_resolve_dataset_command(
    tmp_path: Path, moto_endpoint: str, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from rayops.workflow.cli import main

    data = tmp_path / "powerconsumption.csv"
    data.write_bytes(synth.csv_bytes(synth.frame(days=1)))
    assert main(["resolve-dataset", "--dataset", str(data)]) == 0
    assert capsys.readouterr().out == f"{data.resolve()}\n"  # stdout is only the answer

    s3.create_bucket(Bucket="staging-data")
    target = "s3://staging-data/incoming/powerconsumption.csv"
    args = [
        "resolve-dataset",
        "--dataset",
        str(data),
        "--upload-to",
        target,
        "--s3-endpoint-url",
        moto_endpoint,
    ]
    assert main(args) == 0
    assert capsys.readouterr().out == f"{target}\n"
    body = s3.get_object(Bucket="staging-data", Key="incoming/powerconsumption.csv")["Body"].read()
    assert body == data.read_bytes()

    offline = ["resolve-dataset", "--cache-dir", str(tmp_path / "empty"), "--url", closed_port_url()]
    assert main(offline) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    last = captured.err.strip().splitlines()[-1]  # after the "downloading ..." progress line
    assert last.startswith("[rayops] error: cannot download the dataset from http://127.0.0.1:")
    assert last.endswith("make local DATASET=/path/to/powerconsumption.csv")
