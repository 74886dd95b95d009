"""Bad input of a run (issue 15, item 6): each is refused with one sentence naming the value and what to
do, before any stage runs. In-process through the CLI's own entrypoint (``main``), plus one local Ray for
the worker size (its start is most of the time: 52 s for the module on this 2-core host at load 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import workflow_synth as synth

from rayops.workflow import cli, ingest, pipeline
from rayops.workflow.config import Buckets, WorkflowConfig
from rayops.workflow.errors import ConfigError, DataError
from rayops.workflow.s3 import S3Store

BUCKETS = json.dumps({"raw": "b-raw", "features": "b-features", "models": "b-models", "results": "b-results"})


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one ``[rayops] error:`` line and nothing else on stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's errors leave through SystemExit
        code = int(stop.code or 0)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("[rayops] error: "), err
    return err[0].removeprefix("[rayops] error: ")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_depth": "deep"}, "train_params.max_depth is 'deep', which is not a whole number: pass e.g. 6"),
        ({"eta": "fast"}, "train_params.eta is 'fast', which is not a number: pass e.g. 0.1"),
        (
            {"num_boost_round": 1.5},
            "train_params.num_boost_round is 1.5, which is not a whole number: pass e.g. 400",
        ),
        (
            {"max_rmse": "lots"},
            "train_params.max_rmse is 'lots', which is not a number or none: pass e.g. None",
        ),
        ({"seed": True}, "train_params.seed is True, which is not a whole number: pass e.g. 42"),
        ({"live_tolerance": 2}, "--live-tolerance is 2.0: pass a finite number at least 0 and at most 1"),
    ],
)
def test_train_params_values_are_checked_before_the_run(
    capsys: pytest.CaptureFixture[str], params: dict[str, Any], expected: str
) -> None:
    """What train.yml runs on the controller before it copies or submits anything."""
    assert one_error(capsys, ["check", "--params", json.dumps(params)]) == expected


def test_good_train_params_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    good = {"max_depth": "5", "eta": 0.2, "num_workers": "auto", "max_rmse": "none", "num_boost_round": 60.0}
    assert cli.main(["check", "--params", json.dumps(good)]) == 0
    assert capsys.readouterr().err == ""


def test_a_non_numeric_option_is_one_sentence_not_the_usage_text(capsys: pytest.CaptureFixture[str]) -> None:
    message = one_error(capsys, ["run", "--buckets", BUCKETS, "--max-depth", "deep"])
    assert message == (
        "--max-depth is 'deep', which is not a whole number: pass e.g. 6: "
        "see python -m rayops.workflow run --help"
    )


@pytest.mark.parametrize("url", ["http://example.com/power.csv", "HTTP://10.0.0.5:8080/power.zip?sig=secret"])
def test_plain_http_datasets_are_refused(capsys: pytest.CaptureFixture[str], url: str) -> None:
    message = one_error(capsys, ["check", "--dataset", url])
    assert message.endswith(
        "is plain HTTP, which anyone on the way can alter: use its https:// URL, or copy the file to the raw "
        "bucket and pass its s3:// URI"
    )
    assert "secret" not in message  # the query string (a signed URL's signature) is never shown


def test_http_on_loopback_stays_allowed() -> None:
    WorkflowConfig(buckets=Buckets.from_json(BUCKETS), dataset="http://127.0.0.1:8000/power.csv")


def test_a_dataset_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "huge.csv"
    with big.open("wb") as out:  # sparse: the size without the bytes
        out.truncate(ingest.MAX_DATASET_BYTES + 1)
    with pytest.raises(DataError) as err:
        ingest.fetch(str(big))
    assert str(err.value) == (
        f"the dataset {big} is 512.0 MiB, more than the 512 MiB the workflow reads: "
        "pass the Tetouan CSV or its zip"
    )


def test_an_s3_dataset_over_the_size_cap_is_refused_unread(
    store: S3Store, buckets: Buckets, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=buckets.raw, Key="inputs/big.csv", Body=b"x" * 4096)
    monkeypatch.setattr(ingest, "MAX_DATASET_BYTES", 1024)
    read: list[str] = []
    real_get = store.client.get_object
    monkeypatch.setattr(store.client, "get_object", lambda **kw: read.append(kw["Key"]) or real_get(**kw))
    with pytest.raises(DataError, match=r"is 0.0 MiB, more than the 0 MiB the workflow reads"):
        ingest.fetch(f"s3://{buckets.raw}/inputs/big.csv", store)
    assert read == []  # refused on its size, before the download


def test_cpus_per_worker_larger_than_any_node_is_refused_before_any_stage(
    ray_local: None, store: S3Store, buckets: Buckets, s3: Any, tmp_path: Path
) -> None:
    """The local Ray of this module has 2 CPUs on its one node: 3 per worker would wait for ever."""
    dataset = tmp_path / "powerconsumption.csv"
    dataset.write_bytes(synth.csv_bytes(synth.frame(days=35)))
    config = WorkflowConfig(buckets=buckets, dataset=str(dataset), cpus_per_worker=3, run_id="too-wide")
    with pytest.raises(ConfigError) as err:
        pipeline.run(config, store, connect=lambda: None)
    assert str(err.value) == (
        "--cpus-per-worker 3 (train_params.cpus_per_worker) is more than any node of the cluster has: the "
        "largest offers 2 CPU(s) to Ray, so pass at most 2"
    )
    for bucket in buckets.to_dict().values():
        assert s3.list_object_versions(Bucket=bucket).get("Versions", []) == []  # nothing written
