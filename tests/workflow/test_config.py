"""Options of a run: good values accepted, bad ones refused with one sentence naming the option."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rayops.workflow.config import Buckets, Thresholds, WorkflowConfig, XGBoostParams
from rayops.workflow.errors import ConfigError

GOOD = {
    "raw": "rayops-raw",
    "features": "rayops-features",
    "models": "rayops-models",
    "results": "rayops-results",
}


def test_buckets_from_stack_outputs_json() -> None:
    buckets = Buckets.from_json(json.dumps(GOOD))
    assert buckets.to_dict() == GOOD


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "--buckets is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "models"}), "lacks models"),
        (json.dumps({**GOOD, "logs": "x-logs"}), "unknown keys logs"),
        (json.dumps({**GOOD, "raw": "s3://rayops-raw"}), "raw is 's3://rayops-raw'"),
        (json.dumps({**GOOD, "results": "Upper_Case"}), "results is 'Upper_Case'"),
    ],
)
def test_bad_buckets_name_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"^--buckets") as info:
        Buckets.from_json(text)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"target_zone": 4}, "--target-zone is 4, but the Tetouan data has zones 1, 2 and 3"),
        ({"target_zone": 0}, "--target-zone is 0"),
        ({"run_id": "../etc"}, "--run-id '../etc' is not usable in S3 keys"),
        ({"s3_endpoint_url": "127.0.0.1:9000"}, "--s3-endpoint-url '127.0.0.1:9000' is not an endpoint URL"),
        ({"s3_endpoint_url": "http://user:pw@host:9000"}, "is not an endpoint URL"),
        ({"num_workers": -1}, "--num-workers is -1: pass a whole number from 0 to 1024"),
        ({"features_executor": "spark"}, "--features-executor is 'spark': pass auto, pandas or ray"),
        ({"holdout_weeks": 0}, "--holdout-weeks is 0"),
        ({"test_fraction": 1.5}, "--test-fraction is 1.5"),
        ({"git_sha": "not-a-sha"}, "--git-sha 'not-a-sha' is not a git commit id"),
        ({"dataset": "  "}, "--dataset is empty"),
    ],
)
def test_bad_options_name_the_option(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        WorkflowConfig(buckets=Buckets(**GOOD), **kwargs)  # type: ignore[arg-type]
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda: XGBoostParams(num_boost_round=0), "--num-boost-round is 0"),
        (lambda: XGBoostParams(eta=0.0), "--eta is 0.0: pass a finite number above 0"),
        (lambda: XGBoostParams(subsample=1.5), "--subsample is 1.5"),
        (lambda: Thresholds(min_r2=1.5), "--min-r2 is 1.5"),
        (lambda: Thresholds(max_rmse=-1.0), "--max-rmse is -1.0"),
        (lambda: Thresholds(max_mape=float("nan")), "--max-mape is nan"),
    ],
)
def test_bad_model_options(factory: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory()  # type: ignore[operator]
    assert expected in str(info.value)


def test_defaults_are_deterministic_booster_params() -> None:
    params = XGBoostParams().booster_params(nthread=1)
    assert params["seed"] == 42
    assert params["tree_method"] == "hist"
    assert params["nthread"] == 1
    config = WorkflowConfig(buckets=Buckets(**GOOD))
    assert config.target_zone == 1
    assert config.model_prefix == "zone1"
    assert config.holdout_hours == 4 * 168
    assert config.run_id != WorkflowConfig(buckets=Buckets(**GOOD)).run_id


def _parse(*extra: str) -> WorkflowConfig:
    from rayops.workflow.cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(["run", "--buckets", json.dumps(GOOD), *extra]))


def test_cli_options_reach_the_config() -> None:
    config = _parse(
        "--target-zone",
        "3",
        "--run-id",
        "r1",
        "--num-boost-round",
        "50",
        "--eta",
        "0.3",
        "--min-r2",
        "none",
        "--max-mape",
        "5",
        "--git-sha",
        "ABCDEF1",
        "--holdout-weeks",
        "2",
    )
    assert (config.target_zone, config.run_id, config.holdout_weeks) == (3, "r1", 2)
    assert (config.xgboost.num_boost_round, config.xgboost.eta) == (50, 0.3)
    assert config.thresholds == Thresholds(min_r2=None, max_mape=5.0)
    assert config.git_sha == "ABCDEF1"
    assert config.dataset.startswith("https://archive.ics.uci.edu/")  # the UCI archive by default
    assert config.num_workers is None  # auto: one process for a small table, else a worker group
    assert config.features_executor == "auto"


@pytest.mark.parametrize(("given", "expected"), [("auto", None), ("AUTO", None), ("0", 0), ("3", 3)])
def test_cli_num_workers_auto_or_a_count(given: str, expected: int | None) -> None:
    assert _parse("--num-workers", given).num_workers == expected


def test_cli_git_sha_unknown_means_none() -> None:
    assert _parse("--git-sha", "unknown").git_sha is None
    assert _parse().git_sha is None


def test_cli_defaults_are_the_dataclass_defaults() -> None:
    """The CLI restates no default: a run without options is the dataclasses' defaults."""
    assert _parse("--run-id", "r1") == WorkflowConfig(buckets=Buckets(**GOOD), run_id="r1")


def test_options_json_names_every_tunable_option_with_its_default() -> None:
    """What train.yml reads to check train_params: each name is a CLI option, with the config's default."""
    from rayops.workflow.config import OPTIONS

    proc = subprocess.run(
        [sys.executable, "-m", "rayops.workflow", "options", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    defaults = json.loads(proc.stdout)
    assert list(defaults) == [o.name for o in OPTIONS]
    assert defaults["num_boost_round"] == XGBoostParams().num_boost_round == 400
    assert defaults["min_r2"] == Thresholds().min_r2 == 0.9
    assert defaults["holdout_weeks"] == WorkflowConfig(buckets=Buckets(**GOOD)).holdout_weeks == 4
    assert defaults["num_workers"] is None and defaults["max_rmse"] is None
    # every name reaches the config through its CLI flag
    given = {name: {"test_fraction": "0.5", "placement_timeout_s": "60"}.get(name, "1") for name in defaults}
    config = _parse(*[x for name, value in given.items() for x in (f"--{name.replace('_', '-')}", value)])
    assert (config.xgboost.max_depth, config.thresholds.max_mape, config.report_every) == (1, 1.0, 1)
    assert (config.checkpoint_every, config.max_failures, config.placement_timeout_s) == (1, 1, 60.0)
    assert (defaults["checkpoint_every"], defaults["max_failures"], defaults["placement_timeout_s"]) == (
        50,
        3,
        180.0,
    )


def test_unknown_options_are_refused_in_one_sentence() -> None:
    from rayops.workflow.config import config_from_options

    with pytest.raises(ConfigError) as info:
        config_from_options({"num_boost_rounds": 5, "eta": 0.3}, buckets=Buckets(**GOOD))
    assert str(info.value).startswith("unknown option(s) num_boost_rounds: a run takes only num_workers, ")
    assert "\n" not in str(info.value)
    ok = config_from_options({"eta": 0.3, "min_r2": None}, buckets=Buckets(**GOOD))
    assert (ok.xgboost.eta, ok.thresholds.min_r2, ok.xgboost.max_depth) == (0.3, None, 6)
